"""What CRIU must be told about a container: resources that live outside it.

A container is not a closed process tree. Bind mounts bring in host paths,
masked files are host /dev/null, cgroups are host directories, joined
namespaces belong to another container, and stdio may be the runtime's
pipes or files. CRIU cannot dump or recreate any of those: they are
declared *external* on dump and handed back (remapped) on restore.

Pure functions over /proc text, so they are unit-tested without CRIU.
"""

from __future__ import annotations

import os

from migrate.runtime.mountinfo import MountInfo, parse_mountinfo
from migrate._record import record
from migrate.errors import UnsupportedError

__all__ = ["ExternalMount", "classify_mounts", "masked_tmpfs_mounts", "masked_tmpfs_key",
           "MASKED_TMPFS", "RO_TMPFS", "ro_tmpfs_mounts", "ro_tmpfs_key", "may_remount",
           "TMPFS_COPY", "copied_tmpfs_mounts",
           "Descriptor", "describe_fd", "describe_file", "stdio_descriptors",
           "external_namespaces"]

# ExternalMount.kind of an empty read-only tmpfs over a masked directory.
MASKED_TMPFS = "masked-tmpfs"
# ExternalMount.kind of a read-only tmpfs holding only the mount points of
# the mounts on it and symlinks (/sys/fs/cgroup on a cgroup v1 host).
RO_TMPFS = "ro-tmpfs"
# ExternalMount.kind of a writable tmpfs whose content the migration copies
# itself while the tasks are frozen (/dev, /dev/shm).
TMPFS_COPY = "tmpfs-copy"
CAP_SYS_ADMIN = 21


@record
class ExternalMount:
    """One mount CRIU must treat as external.

    ``kind`` says how restore finds its new source: "bind" (the bundle's
    config), "cgroup" (the new container's cgroup for ``detail``, the
    hierarchy name), "mask" (/dev/null), "device" (the host node
    ``detail``), "notify" (the new state directory's notify/),
    "masked-tmpfs" (a fresh empty read-only tmpfs; ``detail`` is its
    per-mount and super options from mountinfo, space-separated),
    "ro-tmpfs" (a fresh tmpfs with the same directories and symlinks, made
    read-only; ``detail`` is JSON: options, super options, entries)."""

    mountpoint: str
    kind: str
    detail: str = ""


def _is_internal(entry: MountInfo, root: MountInfo, entries: list[MountInfo]) -> bool:
    """Can CRIU recreate this mount from inside the container? Yes for a
    whole filesystem (proc, tmpfs, devpts ...), and for a bind whose source
    lies in the rootfs or in a whole filesystem the container mounts itself
    (readonlyPaths binds of /proc/sys, /dev/console from /dev/pts)."""
    if entry.root == "/":
        return True
    if entry.dev == root.dev and (entry.root == root.root
                                  or entry.root.startswith(root.root.rstrip("/") + "/")):
        return True
    return any(o is not entry and o.dev == entry.dev and o.root == "/" for o in entries[1:])


def classify_mounts(entries: list[MountInfo], *, bind_destinations: set[str],
                    masked_paths: set[str], notify_dir: str | None) -> list[ExternalMount]:
    """The container's mounts that CRIU must treat as external, from the
    init's own mountinfo (the container's root is the first entry).

    Raises UnsupportedError for a mount that comes from outside the
    container and that restore could not find a source for.
    """
    if not entries:
        return []
    root = entries[0]
    out: list[ExternalMount] = []
    for e in entries[1:]:
        mp = e.mount_point
        if e.fstype in ("cgroup", "cgroup2"):
            # Container cgroups are binds of the container's host directory.
            name = "" if mp.rstrip("/") == "/sys/fs/cgroup" else os.path.basename(mp)
            out.append(ExternalMount(mountpoint=mp, kind="cgroup", detail=name))
        elif mp in bind_destinations:
            out.append(ExternalMount(mountpoint=mp, kind="bind"))
        elif _is_internal(e, root, entries):
            continue
        elif mp in masked_paths:
            out.append(ExternalMount(mountpoint=mp, kind="mask"))
        elif notify_dir and mp == notify_dir:
            out.append(ExternalMount(mountpoint=mp, kind="notify"))
        elif e.fstype == "devtmpfs" and mp.startswith("/dev/"):
            out.append(ExternalMount(mountpoint=mp, kind="device", detail="/dev" + e.root))
        else:
            raise UnsupportedError(
                f"mount {mp} ({e.fstype} {e.source}, root {e.root}) comes from outside "
                f"the container and is not in config.json: it cannot be checkpointed")
    return out


def _lone_tmpfs(entries: list[MountInfo], can_remount: bool):
    """(entry, the mount points below it, relative to it) for each tmpfs
    mount but the root's that is a whole filesystem alone at its mount
    point: what the three kinds below choose from. Nothing when a task of
    the container could remount (``can_remount``: CAP_SYS_ADMIN in a
    bounding set), since what is read now could change before the freeze."""
    if can_remount or not entries:
        return
    points = [e.mount_point for e in entries]
    for e in entries[1:]:
        mp = e.mount_point
        if e.fstype != "tmpfs" or e.root != "/" or points.count(mp) != 1:
            continue
        prefix = mp.rstrip("/") + "/"
        yield e, [p[len(prefix):] for p in points if p.startswith(prefix)]


def masked_tmpfs_key(mountpoint: str) -> str:
    """CRIU's external key of the masked tmpfs at ``mountpoint``."""
    return "migrate-masked:" + mountpoint


def masked_tmpfs_mounts(entries: list[MountInfo], *, masked_paths: set[str], can_remount: bool,
                        is_empty) -> list[ExternalMount]:
    """The tmpfs mounts the init put over masked directories that are still
    what it made: read-only (mount and superblock), alone at their mount
    point, nothing below them, and empty (``is_empty(mountpoint)``). CRIU
    would tar each of them (a fork and exec of tar and gzip, ~10 ms each,
    again at restore); declared external they are recreated empty instead.
    None when a task of the container could remount them (``can_remount``:
    CAP_SYS_ADMIN in a bounding set), since one could be written between
    this check and the freeze."""
    out = []
    for e, below in _lone_tmpfs(entries, can_remount):
        mp = e.mount_point
        if (mp not in masked_paths or "ro" not in e.options.split(",")
                or "ro" not in e.super_options.split(",") or below):
            continue
        if is_empty(mp):
            out.append(ExternalMount(mountpoint=mp, kind=MASKED_TMPFS,
                                     detail=f"{e.options} {e.super_options}"))
    return out


def ro_tmpfs_key(mountpoint: str) -> str:
    """CRIU's external key of the read-only tmpfs at ``mountpoint``."""
    return "migrate-tmpfs:" + mountpoint


def ro_tmpfs_mounts(entries: list[MountInfo], *, masked_paths: set[str], can_remount: bool,
                    list_dir) -> list[ExternalMount]:
    """The read-only tmpfs mounts with other mounts on them that hold
    nothing but those mounts' mount points (directories) and symlinks: the
    tmpfs the runtime puts at /sys/fs/cgroup on a cgroup v1 host, with one
    bind per hierarchy and a symlink per co-mounted controller. CRIU would
    tar each (a fork and exec of tar and gzip, ~5-7 ms on dump and 4-10 ms
    on restore, both while the container is frozen); declared external,
    the destination makes the same tree ahead of time.

    ``list_dir(mountpoint)`` -> [(name, "dir" | "symlink" | "other",
    symlink target or "")], or None when it cannot be read. A mount point
    hides what is below it: with no CAP_SYS_ADMIN in any bounding set
    (``can_remount`` False) no task of the container can have mounted,
    unmounted or remounted anything since the runtime made it, so nothing
    is hidden there and the tree cannot change before the freeze."""
    import json

    out = []
    for e, below in _lone_tmpfs(entries, can_remount):
        mp = e.mount_point
        if mp in masked_paths or "ro" not in e.options.split(","):
            continue
        children = {p for p in below if "/" not in p}
        if not children or any(p.split("/")[0] not in children for p in below):
            continue
        listing = list_dir(mp)
        if listing is None:
            continue
        content = []
        for name, kind, target in sorted(listing):
            if kind == "dir" and name in children:
                content.append([name, "dir", ""])
            elif kind == "symlink":
                content.append([name, "symlink", target])
            else:
                content = None
                break
        if content is None or {n for n, k, _ in content if k == "dir"} != children:
            continue
        out.append(ExternalMount(mountpoint=mp, kind=RO_TMPFS, detail=json.dumps(
            {"options": e.options, "super": e.super_options, "entries": content},
            sort_keys=True)))
    return out


def copied_tmpfs_mounts(entries: list[MountInfo], *, masked_paths: set[str], can_remount: bool,
                        taken: set[str]) -> list[ExternalMount]:
    """The writable tmpfs mounts (/dev, /dev/shm) a migration copies itself:
    CRIU would tar each with a fork and exec of tar and gzip (~5-6 ms of
    the dump and ~4-5 ms of the restore each, frozen), where an in-process
    copy of their few entries takes well under a millisecond. ``taken``:
    mount points already external. With CAP_SYS_ADMIN in no bounding set
    (``can_remount`` False) nothing can have been mounted, unmounted or
    hidden under the mount points on them since the runtime made them, so
    their content is what a walk that stops at those mount points sees.
    ``detail`` is JSON: options, super options, the names of the mount
    points on it, and the index of its copy (tmpfs_copy.py)."""
    import json

    out = []
    for e, below in _lone_tmpfs(entries, can_remount):
        mp = e.mount_point
        if mp in masked_paths or mp in taken or "ro" in e.options.split(","):
            continue
        children = sorted({p.split("/")[0] for p in below})
        if any(below.count(c) != 1 for c in children):
            continue        # something below it is not directly on a mount point of it
        out.append(ExternalMount(mountpoint=mp, kind=TMPFS_COPY, detail=json.dumps(
            {"options": e.options, "super": e.super_options, "mountpoints": children,
             "copy": len(out)}, sort_keys=True)))
    return out


def may_remount(cap_bnd_lines) -> bool:
    """True if any of the ``CapBnd:`` hex values (from /proc/PID/status)
    has CAP_SYS_ADMIN, or one cannot be read."""
    for text in cap_bnd_lines:
        try:
            if int(text, 16) >> CAP_SYS_ADMIN & 1:
                return True
        except (TypeError, ValueError):
            return True
    return False


@record
class Descriptor:
    """A file the init was handed as fd ``fd`` (0-2), or, after those, one
    it holds on fd ``fd`` at checkpoint time (runc keeps the list of the
    first kind in descriptors.json). ``external`` is CRIU's key for it when
    CRIU must not dump it (a pipe or file of the runtime): restore maps
    that key onto its own fd ``fd``, wherever the file is in the dump."""

    fd: int
    path: str
    external: str | None
    mode: int = 0          # st_mode: restore elsewhere must offer a file of the same kind


def describe_fd(fd: int, link: str, fdinfo: str, inode: int, mode: int = 0, *,
                inside: frozenset[int] = frozenset()) -> Descriptor:
    """Classify fd ``fd`` of the init: ``link`` is readlink(/proc/PID/fd/N),
    ``fdinfo`` the text of /proc/PID/fdinfo/N, ``inode`` and ``mode`` from its stat.
    ``inside``: the IDs of the container's own mounts."""
    from migrate.runtime.stdio import fdinfo_mnt_id

    return describe_file(fd, link, fdinfo_mnt_id(fdinfo), inode, mode, inside=inside)


def describe_file(fd: int, link: str, mnt_id: int | None, inode: int, mode: int = 0, *,
                  inside: frozenset[int] = frozenset()) -> Descriptor:
    """``describe_fd`` with the mount ID read already (a recorded file).

    A character device (/dev/null above all) is not external: CRIU dumps it
    by path and reopens that path on restore, whatever the restoring
    process's own stdio is, as runc relies on (its descriptors.json only
    ever maps pipes). Nor is a file on one of the container's own mounts
    (``inside``): CRIU dumps it by its path in the container, and it is the
    container's, not the runtime's (``exec >/tmp/log`` in the init)."""
    import stat

    if link.startswith("pipe:"):
        return Descriptor(fd=fd, path=link, external=link, mode=mode)
    if link.startswith("/dev/pts/") or link.startswith("anon_inode:") or link.startswith("socket:") \
            or stat.S_ISCHR(mode) or mnt_id is None or mnt_id in inside:
        return Descriptor(fd=fd, path=link, external=None, mode=mode)
    return Descriptor(fd=fd, path=link, external=f"file[{mnt_id:x}:{inode:x}]", mode=mode)


def stdio_descriptors(recorded: list[dict], current: list[Descriptor], *,
                      inside: frozenset[int] = frozenset()) -> tuple[Descriptor, ...]:
    """The init's stdio for a checkpoint: ``recorded`` (state.json's
    ``stdio``, runtime/stdio.py) are the files it was handed, ``current``
    its fds 0-2 now, classified (describe_fd with the same ``inside``),
    the fds that are closed left out.

    The record comes first, one per fd 0-2, whatever the init did with
    them since: a file it moved to another fd is found there by CRIU, which
    matches externals by key, not by fd, on dump and restore; one it closed
    is a key CRIU never looks up, which neither dump nor restore minds.
    Then any host file on fds 0-2 now that is not in the record (CRIU cannot
    dump it by path), under its fd. A pipe there that is not in the record
    is the container's own (made inside, or passed in): CRIU dumps it.
    Without a record (a state.json from before it, or an init whose fds
    create could not read) fds 0-2 as they are now, a closed one as
    /dev/null (descriptors.json needs a path at each index)."""
    if not any(e["path"] for e in recorded):
        have = {d.fd: d for d in current}
        return tuple(have.get(fd) or Descriptor(fd=fd, path="/dev/null", external=None)
                     for fd in range(3))
    out, keys = [], set()
    for e in sorted(recorded, key=lambda e: e["fd"]):
        d = describe_file(e["fd"], e["path"] or "/dev/null", e["mnt_id"], e["inode"], e["mode"],
                          inside=inside)
        out.append(d)
        keys.add(d.external)
    for d in current:
        if d.external and d.external.startswith("file[") and d.external not in keys:
            out.append(d)
            keys.add(d.external)
    return tuple(out)


def external_namespaces(namespaces: dict[str, str], joined: set[str], inode_of) -> tuple[list[str], dict[str, str]]:
    """CRIU ``external`` keys for joined network and PID namespaces, and the
    inherit-fd keys restore must map. ``inode_of(path)`` gives a ns inode."""
    external, keys = [], {}
    for oci_type, crit_name, key in (("network", "net", "extRootNetNS"), ("pid", "pid", "extRootPidNS")):
        if oci_type in joined:
            external.append(f"{crit_name}[{inode_of(namespaces[oci_type])}]:{key}")
            keys[oci_type] = key
    return external, keys
