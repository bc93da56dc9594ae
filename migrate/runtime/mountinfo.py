"""The one decoder for /proc/PID/mountinfo fields (proc(5))."""

from __future__ import annotations

__all__ = ["unescape", "mounts_at_or_below", "CRIU_CGYARD_PREFIX"]


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
    found = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = unescape(line.split(" ", 5)[4])
            if point == top or point.startswith(top + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)
