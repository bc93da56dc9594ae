"""The one decoder for /proc/PID/mountinfo fields (proc(5))."""

from __future__ import annotations

from migrate._record import record

__all__ = ["MountInfo", "parse_mountinfo", "read_mountinfo", "descendants", "unescape",
           "mounts_at_or_below", "CRIU_CGYARD_PREFIX"]

MOUNTINFO = "/proc/self/mountinfo"


def unescape(field: str) -> str:
    """show_mountinfo() escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@record
class MountInfo:
    mount_id: int
    parent_id: int
    mount_point: str
    options: str          # per-mount options
    fstype: str
    source: str
    super_options: str
    dev: str = ""         # "major:minor" of the file system
    root: str = "/"       # the mount's root within its file system

    @property
    def sb_flags(self) -> int:
        """The superblock flags named in ``super_options``."""
        from migrate.runtime.mounts import sb_flags_of

        return sb_flags_of(self.super_options)


def parse_mountinfo(text: str) -> list[MountInfo]:
    """proc(5) /proc/PID/mountinfo lines, in order."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f = left.split()
        r = right.split()
        out.append(MountInfo(mount_id=int(f[0]), parent_id=int(f[1]),
                             mount_point=unescape(f[4]), options=f[5], fstype=r[0],
                             source=unescape(r[1]) if len(r) > 1 else "",
                             super_options=r[2] if len(r) > 2 else "",
                             dev=f[2], root=unescape(f[3])))
    return out


def descendants(entries: list[MountInfo], mount_id: int) -> list[MountInfo]:
    """The mounts below ``mount_id`` (not itself), parents before children."""
    children: dict[int, list[MountInfo]] = {}
    for e in entries:
        if e.mount_id != e.parent_id:
            children.setdefault(e.parent_id, []).append(e)
    out, todo = [], list(children.get(mount_id, ()))
    while todo:
        e = todo.pop(0)
        out.append(e)
        todo.extend(children.get(e.mount_id, ()))
    return out


def read_mountinfo(path: str = MOUNTINFO) -> list[MountInfo]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


# CRIU mounts every cgroup hierarchy under "<its cwd>/.criu.cgyard.XXXXXX"
# (criu/cgroup.c) in the mount namespace it runs in (ours) and unmounts them
# when it ends; a CRIU killed mid-restore leaves them all mounted.
CRIU_CGYARD_PREFIX = ".criu.cgyard."


def mounts_at_or_below(path: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at ``path`` or below it, deepest first. Read from
    mountinfo: ``os.path.ismount`` misses a bind mount from the same
    filesystem (same st_dev as the parent directory)."""
    import os

    top = os.path.realpath(path).rstrip("/") or "/"
    found = [e.mount_point for e in read_mountinfo(mountinfo)
             if e.mount_point == top or e.mount_point.startswith(top + "/")]
    return sorted(found, key=len, reverse=True)
