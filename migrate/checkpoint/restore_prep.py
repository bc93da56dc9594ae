"""What restore makes on this host before CRIU runs: the --root CRIU
pivots into (a private bind of the rootfs, with the mount points a fresh
rootfs lacks) and the fds CRIU inherits (copies of our stdio, the
namespaces to join). Each maker takes ``push(step)`` for its undo step
(runtime.lifecycle.bringup.Bringup.always: undone in every case).
"""

from __future__ import annotations

import contextlib
import os

from migrate.checkpoint.metadata import CheckpointMeta
from migrate.checkpoint.restore_plan import bind_source, is_bind_mount
from migrate.errors import NotFoundError

__all__ = ["CRIU_ROOT", "prepare_root", "prepare_masked_tmpfs", "stdio_copies", "open_namespaces"]

CRIU_ROOT = "criu-root"


def stdio_copies(push, stdio=None) -> tuple[int, int, int]:
    """Our fds 0-2 (or ``stdio``) under higher numbers: ``criu swrk``
    inherits fds by number and its own 0-2 are taken (its output goes to a log)."""
    fds = []
    for fd in (stdio or range(3)):
        try:
            copy = os.dup(fd)
        except OSError:
            copy = os.open(os.devnull, os.O_RDWR)
        fds.append(copy)
        push(lambda copy=copy: os.close(copy))
    return tuple(fds)


def open_namespaces(spec, push) -> dict[str, int]:
    fds = {}
    for ns in spec.linux.namespaces:
        if ns.path and ns.type in ("network", "pid"):
            try:
                fd = os.open(ns.path, os.O_RDONLY)   # inherited by criu swrk
            except OSError as err:
                raise NotFoundError(f"namespace {ns.type} {ns.path}: {err.strerror}") from None
            fds[ns.type] = fd
            push(lambda fd=fd: os.close(fd))
    return fds


def prepare_root(ctx, spec, meta: CheckpointMeta, cdir: str, bundle: str,
                 push, claim) -> tuple[str, dict[str, str]]:
    """CRIU needs --root to be a mount point it can pivot into; bind the
    rootfs there, after making the mount points a fresh rootfs may lack.
    Returns the directory and where each config.json destination is in the
    container (symlinks resolved), for the external mount keys."""
    from migrate.runtime.syscalls import MNT, MS

    resolved = _make_mountpoints(ctx.syscalls, spec, meta, bundle)
    target = os.path.join(cdir, CRIU_ROOT)
    os.mkdir(target, 0o700)
    sys = ctx.syscalls
    claim.add("mounts", target)
    sys.mount(spec.root.path, target, None, MS.BIND | MS.REC, None)
    push(lambda: sys.umount(target, MNT.DETACH))
    # Private, so nothing CRIU mounts below it propagates back to the host.
    sys.mount(None, target, None, MS.PRIVATE | MS.REC, None)
    return target, resolved


def prepare_masked_tmpfs(ctx, meta: CheckpointMeta, cdir: str, push, claim) -> dict[str, str]:
    """One fresh empty read-only tmpfs per distinct set of options among the
    checkpoint's masked tmpfs mounts (externals.MASKED_TMPFS), in the
    container's directory, for CRIU to bind where they were. Returns
    options -> path. Each is detached by ``push``'s step once CRIU is done
    (its binds keep the file system) and by `delete --force` (``claim``)."""
    from migrate.checkpoint.externals import MASKED_TMPFS, RO_TMPFS, TMPFS_COPY
    from migrate.runtime.mounts import parse_options
    from migrate.runtime.syscalls import MNT, MS

    sys = ctx.syscalls
    out: dict[str, str] = {}
    for em in meta.mounts:
        if em.kind not in (MASKED_TMPFS, RO_TMPFS, TMPFS_COPY) or em.detail in out:
            continue
        tree = None
        if em.kind in (RO_TMPFS, TMPFS_COPY):
            import json

            desc = json.loads(em.detail)
            per_mount, super_opts = desc["options"], desc["super"]
            tree = desc.get("entries", [])
        else:
            per_mount, _, super_opts = em.detail.partition(" ")
        flags = parse_options(per_mount.split(","), "tmpfs").flags
        if em.kind != TMPFS_COPY:
            flags |= MS.RDONLY
        data = ",".join(w for w in super_opts.split(",") if w not in ("ro", "rw", "seclabel"))
        target = os.path.join(cdir, f"masked-tmpfs-{len(out)}")
        os.mkdir(target, 0o700)
        claim.add("mounts", target)
        try:
            if tree is None:
                sys.mount("tmpfs", target, "tmpfs", flags, data or None)
            else:
                # Writable until the tree is in, then read-only at the
                # mount, as the runtime leaves it (rootfs.py).
                sys.mount("tmpfs", target, "tmpfs", flags & ~MS.RDONLY, data or None)
                _make_tree(target, tree)
                sys.mount(None, target, None, MS.BIND | MS.REMOUNT | flags, None)
            sys.mount(None, target, None, MS.PRIVATE, None)
        except OSError as err:
            from migrate.errors import KernelError

            with contextlib.suppress(OSError):
                sys.umount(target, MNT.DETACH)
            raise KernelError.from_oserror("mount tmpfs", err, target) from None

        def undo(target=target):
            with contextlib.suppress(OSError):
                sys.umount(target, MNT.DETACH)
            with contextlib.suppress(OSError):
                os.rmdir(target)
        push(undo)
        out[em.detail] = target
    return out


def _make_tree(top: str, entries) -> None:
    """The directories and symlinks of a read-only tmpfs (externals.RO_TMPFS)
    in ``top``; names are single path components (checked)."""
    for name, kind, target in entries:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise OSError(22, f"bad entry name {name!r}")
        path = os.path.join(top, name)
        if kind == "dir":
            os.mkdir(path, 0o755)
        elif kind == "symlink":
            os.symlink(target, path)
        else:
            raise OSError(22, f"bad entry kind {kind!r}")


def _make_mountpoints(sys, spec, meta: CheckpointMeta, bundle: str) -> dict[str, str]:
    """Create the mount points CRIU will mount on; CRIU makes none ("mnt-v2:
    Can't stat mountpoint"), and a fresh copy of the rootfs (containerd's new
    snapshot, a re-extracted image) lacks those the runtime made at create
    time. As runc does (prepareCriuRestoreMounts): every mount of config.json
    in order, except below a tmpfs (CRIU restores a tmpfs with its content);
    bind mounts are mounted for the time being so that the mount points of
    mounts nested in them are made in their sources, then unmounted again.
    Paths resolve inside the rootfs, never through its symlinks.
    Returns destination -> path in the container."""
    from migrate.runtime.paths import ensure_mountpoint
    from migrate.runtime.syscalls import MNT, MS

    rootfs = spec.root.path
    tmpfs = [m.destination.rstrip("/") for m in spec.mounts if m.type == "tmpfs"]
    resolved: dict[str, str] = {}
    temporary: list[str] = []
    try:
        for m in spec.mounts:
            if m.type in ("cgroup", "cgroup2") or any(m.destination.startswith(t + "/")
                                                      for t in tmpfs):
                continue                  # CRIU restores what is below a tmpfs or /sys/fs/cgroup
            bind = is_bind_mount(m)
            source = bind_source(m, bundle) if bind else None
            try:
                target = ensure_mountpoint(rootfs, m.destination, is_file=bool(
                    source and os.path.exists(source) and not os.path.isdir(source)))
            except OSError:
                continue                  # CRIU says which mount point it missed
            resolved[m.destination] = target[len(rootfs):] or "/"
            if bind and os.path.exists(source):
                sys.mount(source, target, None, MS.BIND | MS.REC, None)
                temporary.append(target)
    finally:
        for target in reversed(temporary):
            with contextlib.suppress(OSError):
                sys.umount(target, MNT.DETACH)
    for em in meta.mounts:
        if em.kind in ("mask", "device"):
            with contextlib.suppress(OSError):
                ensure_mountpoint(rootfs, em.mountpoint, is_file=True)
    return resolved
