"""Reading CRIU logs for ``CriuError``: the tail, and the first real error."""

from __future__ import annotations

import os
import re

# CRIU marks failures with "Error (file:line): ..." (pr_err, pr_perror).
_ERROR_MARK = "Error ("
_ERROR_RE = re.compile(r"^(?:\([\d.]+\)\s+)?(?:\d+:\s+)?Error \([^)]*\):\s*(?P<text>.*)$")
_READ_BYTES = 256 * 1024

# Errors CRIU logs and then carries on from. RLIMIT_NOFILE: CRIU tries to
# raise its own fd limit, which needs CAP_SYS_RESOURCE (missing here); it
# is often the first error in the log, so CRIU's own cr_errmsg (the first
# error logged, log_first_err()) names it instead of the real cause.
HARMLESS = ("Can't setup RLIMIT_NOFILE for self",)


def _lines(path: str | None) -> list[str]:
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _READ_BYTES))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    if size > _READ_BYTES and text:
        text = text[1:]  # the first line is probably cut
    return [line.rstrip() for line in text if line.strip()]


def _is_error(line: str) -> bool:
    return _ERROR_MARK in line and not any(h in line for h in HARMLESS)


def read_tail(path: str | None, *, lines: int = 15, errors: int = 5) -> tuple[str, ...]:
    """The last ``lines`` lines of ``path``, preceded by up to ``errors``
    earlier error lines that would otherwise scroll out of the tail (CRIU
    keeps logging while it cleans up, so the cause is often far above the end).

    Returns ``()`` when the file is missing or empty; never raises for I/O.
    """
    text = _lines(path)
    tail = text[-lines:]
    head = text[:-lines] if len(text) > lines else []
    early = [line for line in head if _is_error(line)][:errors]
    if early:
        return (*early, "...", *tail)
    return tuple(tail)


def quote_errors(path: str | None, *, before: int = 5, limit: int = 40) -> tuple[str, ...]:
    """The lines that explain a failure, as runc quotes them: each error
    CRIU logged (not the known harmless ones) with the ``before`` lines
    leading to it, numbered "N:text", "..." marking gaps; at most ``limit``
    lines (the first ones: the cause comes before the clean-up errors).
    Returns ``()`` when there is nothing to quote; never raises for I/O."""
    text = _lines(path)
    out: list[str] = []
    shown = -1
    for i, line in enumerate(text):
        if not _is_error(line):
            continue
        first = max(i - before, shown + 1)
        if out and first > shown + 1:
            out.append("...")
        out.extend(f"{n + 1}:{text[n]}" for n in range(first, i + 1))
        shown = i
        if len(out) >= limit:
            break
    return tuple(out[:limit])


def first_error(path: str | None) -> str | None:
    """The text of the first error CRIU logged that is not known to be
    harmless, without timestamp and source location; ``None`` if none."""
    for line in _lines(path):
        if _is_error(line):
            match = _ERROR_RE.match(line)
            return match.group("text").strip() if match else line.strip()
    return None


def is_harmless(message: str) -> bool:
    return any(h in message for h in HARMLESS)


def find_line(path: str | None, text: str) -> str | None:
    """The first line of ``path``'s last 256 KiB holding ``text``, or None."""
    return next((line for line in _lines(path) if text in line), None)
