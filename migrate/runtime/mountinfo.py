"""The one decoder for /proc/PID/mountinfo fields (proc(5))."""

from __future__ import annotations

__all__ = ["unescape"]


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
