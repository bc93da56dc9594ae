"""Idmapped bind mounts (runtime-spec ``idmap``/``ridmap``, mount_setattr(2)
MOUNT_ATTR_IDMAP), made by the runtime before the container's init starts.

Why here and not in the init: MOUNT_ATTR_IDMAP needs CAP_SYS_ADMIN in the
user namespace that owns the source's file system (``can_idmap_mount()`` in
fs/namespace.c); a container's init inside its own user namespace never has
that over a host file system. So the runtime, still in the host's
namespaces, clones the source (open_tree(OPEN_TREE_CLONE)), idmaps the
detached tree with a user namespace holding the mount's mappings, and the
init, which inherits the fd across fork, attaches it with move_mount(2).
The same path serves containers with and without a user namespace.

The user namespace only carries the mappings: a short-lived child unshares
CLONE_NEWUSER, we write its maps and open /proc/CHILD/ns/user; the fd keeps
the namespace alive after the child exits.
"""

from __future__ import annotations

import errno
import os

from migrate.errors import KernelError, MountError, UsageError
from migrate.runtime.idmap import format_map
from migrate.runtime.mounts import MOUNT_ATTR, idmap_ranges, parse_options
from migrate.runtime.nsexec import NsFlag

__all__ = ["wants_idmap", "open_idmapped_trees", "close_trees", "userns_fd"]


def wants_idmap(m) -> bool:
    """Does this OCI mount ask for an idmapped mount?"""
    return bool(m.uid_mappings or m.gid_mappings or "idmap" in m.options
                or "ridmap" in m.options)


def userns_fd(sys, uid_map, gid_map, proc_root: str = "/proc") -> int:
    """An fd of a new user namespace with these maps. Raises KernelError."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child only unshares and waits
        code = 0
        try:
            os.close(ready_r)
            os.close(done_w)
            try:
                sys.unshare(NsFlag.USER)
                os.write(ready_w, b"0")
            except OSError as err:
                os.write(ready_w, str(err.errno or errno.EIO).encode())
            os.read(done_r, 1)        # stay until the parent has the namespace open
        except BaseException:  # noqa: BLE001 - never return into the runtime
            code = 1
        os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        answer = os.read(ready_r, 16).decode() or str(errno.ECHILD)
        if answer != "0":
            raise KernelError("unshare(CLONE_NEWUSER) for an idmapped mount", None, int(answer))
        base = f"{proc_root}/{pid}"
        try:
            # gid_map first, as idmap.write_idmaps does; as root no
            # setgroups "deny" is needed.
            sys.write_file(f"{base}/gid_map", format_map(gid_map))
            sys.write_file(f"{base}/uid_map", format_map(uid_map))
            return os.open(f"{base}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise KernelError.from_oserror("idmapped mount user namespace", err) from None
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def _why_not(err: int, src: str) -> str:
    if err == errno.ENOSYS:
        return "idmapped mounts need Linux 5.12 (mount_setattr)"
    if err == errno.EINVAL:
        return f"the file system of {src} ({_fstype(src)}) does not support idmapped mounts here"
    if err == errno.EPERM:
        return "an idmapped mount needs CAP_SYS_ADMIN over the source's file system"
    return ""


def _fstype(path: str) -> str:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                mnt_id = next(line.split()[1] for line in f if line.startswith("mnt_id:"))
        finally:
            os.close(fd)
        from migrate.runtime.mountinfo import read_mountinfo

        return next(e.fstype for e in read_mountinfo() if e.mount_id == int(mnt_id))
    except (OSError, StopIteration):
        pass
    return "unknown type"


def open_idmapped_trees(sys, mounts, linux, bundle: str, *, container_userns: bool,
                        proc_root: str = "/proc", make_userns=userns_fd) -> tuple[tuple[int, int], ...]:
    """Detached idmapped trees for the mounts that ask for one, as (index in
    ``mounts``, fd) pairs for ``RootfsPlan.idmapped``. The caller closes them
    (``close_trees``) once the init has attached them.

    Raises UsageError (mappings missing or not a bind mount), MountError.
    """
    trees: list[tuple[int, int]] = []
    namespaces: dict = {}
    try:
        for i, m in enumerate(mounts):
            if not wants_idmap(m):
                continue
            opts = parse_options(m.options, m.type)
            ranges = idmap_ranges(m, linux, container_userns=container_userns)
            if not opts.bind:
                raise UsageError(f"mount {m.destination}: idmap and ridmap need a bind mount")
            source = m.source or ""
            src = source if os.path.isabs(source) else os.path.join(bundle, source)
            if ranges not in namespaces:
                namespaces[ranges] = make_userns(sys, *ranges, proc_root)
            word = "ridmap" if opts.ridmap else "idmap"
            try:
                fd = sys.open_tree(src, recursive=opts.recursive)
            except OSError as err:
                raise MountError("open_tree", src, m.destination, word,
                                 err.errno or errno.EIO) from None
            trees.append((i, fd))
            try:
                # ridmap: every mount of an rbind tree; idmap: the top one
                # (runtime-spec "ridmap", AT_RECURSIVE).
                sys.mount_setattr(fd, attr_set=MOUNT_ATTR.IDMAP, attr_clr=0,
                                  recursive=opts.ridmap, userns_fd=namespaces[ranges])
            except OSError as err:
                raise MountError("mount_setattr", src, m.destination, word,
                                 err.errno or errno.EIO, _why_not(err.errno, src)) from None
    except BaseException:
        close_trees(tuple(trees))
        raise
    finally:
        for fd in namespaces.values():
            os.close(fd)
    return tuple(trees)


def close_trees(trees) -> None:
    """Close the fds ``open_idmapped_trees`` returned (a detached tree that
    was never attached is unmounted with its last fd)."""
    for _, fd in trees:
        try:
            os.close(fd)
        except OSError:
            pass
