"""The content of the writable tmpfs mounts a migration copies itself
(externals.TMPFS_COPY: /dev and /dev/shm), instead of CRIU's tar and gzip.

``save`` runs from CRIU's post-dump notification, the tasks frozen: one
uncompressed tar per mount in the images directory, walked in-process and
stopped at the mount points on the tmpfs (each is kept as an empty
directory, or an empty file for a file bind). ``load`` puts it into the
tmpfs the destination mounted ahead (restore_prep.prepare_masked_tmpfs),
before CRIU binds that in. Owners are numeric, modes, device numbers and
times kept, as CRIU's tar keeps them; sockets are left out, as tar does.
"""

from __future__ import annotations

import json
import os

from migrate.errors import UsageError

__all__ = ["save", "load", "copy_name"]


def copy_name(index: int) -> str:
    """The file in the images directory holding copy ``index``."""
    return f"migrate-tmpfs-{index}.tar"


def save(mounts, root: str, images_dir: str) -> int:
    """Copy every TMPFS_COPY mount of ``mounts`` (ExternalMounts) from
    ``root`` (the container's root, /proc/PID/root) into ``images_dir``;
    returns how many. Raises OSError."""
    import stat
    import tarfile

    from migrate.checkpoint.externals import TMPFS_COPY

    done = 0
    for em in mounts:
        if em.kind != TMPFS_COPY:
            continue
        desc = json.loads(em.detail)
        top = root + em.mountpoint
        skip = set(desc["mountpoints"])
        with tarfile.open(os.path.join(images_dir, copy_name(desc["copy"])), "w",
                          format=tarfile.PAX_FORMAT) as tar:
            tar.add(top, arcname=".", recursive=False)
            for parent, dirs, files in os.walk(top):
                rel = os.path.relpath(parent, top)
                for name in sorted(dirs + files):
                    path = os.path.join(parent, name)
                    arc = name if rel == "." else os.path.join(rel, name)
                    if rel == "." and name in skip:
                        info = tarfile.TarInfo(arc)
                        st = os.stat(path)      # the mount on it: keep only its kind
                        info.type = tarfile.DIRTYPE if stat.S_ISDIR(st.st_mode) else tarfile.REGTYPE
                        info.mode = 0o755 if info.type == tarfile.DIRTYPE else 0o644
                        info.mtime = int(st.st_mtime)
                        tar.addfile(info)
                        continue
                    info = tar.gettarinfo(path, arcname=arc)
                    if info is None:        # a socket: tar leaves it out too
                        continue
                    info.uname = info.gname = ""
                    if info.isreg():
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
                if rel == ".":
                    dirs[:] = [d for d in dirs if d not in skip]
        done += 1
    return done


def load(mounts, images_dir: str, targets: dict[str, str]) -> None:
    """Put each TMPFS_COPY mount's copy from ``images_dir`` into its tmpfs
    (``targets``: detail -> path). Raises UsageError for a missing or
    malformed copy, OSError."""
    import tarfile

    from migrate.checkpoint.externals import TMPFS_COPY

    for em in mounts:
        if em.kind != TMPFS_COPY:
            continue
        desc = json.loads(em.detail)
        path = os.path.join(images_dir, copy_name(desc["copy"]))
        if not os.path.exists(path):
            raise UsageError(f"the checkpoint has no copy of the tmpfs at {em.mountpoint} "
                             f"({copy_name(desc['copy'])})")
        with tarfile.open(path, "r:") as tar:
            members = tar.getmembers()
            _check_members(members, em.mountpoint)
            tar.extractall(targets[em.detail], members=members, numeric_owner=True)


def _check_members(members, mountpoint: str) -> None:
    """Only plain relative names, never below a symlink of the archive,
    hard links only to regular files before them: nothing lands outside
    the tmpfs."""
    links, regular = set(), set()
    for m in members:
        name = os.path.normpath(m.name)
        parts = name.split("/")
        if name.startswith("/") or ".." in parts:
            raise UsageError(f"the copy of {mountpoint} has a bad name {m.name!r}")
        if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            raise UsageError(f"the copy of {mountpoint} has {m.name!r} below a symlink")
        if m.islnk() and os.path.normpath(m.linkname) not in regular:
            raise UsageError(f"the copy of {mountpoint} links {m.name!r} to {m.linkname!r}")
        if m.issym():
            links.add(name)
        elif m.isreg():
            regular.add(name)
        elif not (m.isdir() or m.ischr() or m.isblk() or m.isfifo() or m.islnk()):
            raise UsageError(f"the copy of {mountpoint} has {m.name!r} of an unknown type")
