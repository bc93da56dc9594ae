"""--log / --log-format / --debug: where messages for programs go.

Engines (Podman, containerd) pass ``--log FILE --log-format json`` and read
the last error from that file, so every error is written there as a JSON
line as well as printed once on stderr.
"""

from __future__ import annotations

import sys

__all__ = ["setup_logging", "report_error", "one_line"]


def setup_logging(path: str | None, fmt: str, debug: bool) -> None:
    from migrate.cli.logformat import setup_logging as setup

    setup(path, fmt, debug)


# Characters that end a line or move the cursor for str.splitlines() and
# terminals: C0/C1 controls, DEL, and the Unicode line/paragraph separators.
_ESCAPES = {c: repr(chr(c))[1:-1]
            for c in (*range(0x20), *range(0x7f, 0xa0), 0x2028, 0x2029)}


def one_line(message: str) -> str:
    """``message`` with every control character written as an escape.

    Errors quote user input (annotation keys, paths, IDs) that may carry a
    CR or NL; printed raw, one error would span lines, or rewrite the line
    on a terminal, and engines that read the last line would get half of it.
    """
    return message.translate(_ESCAPES)


def report_error(message: str, log_path: str | None) -> None:
    """The one line on stderr, plus the log file's error record."""
    message = one_line(message)
    sys.stderr.write(f"migrate: {message}\n")
    sys.stderr.flush()
    if log_path:
        from migrate._log import getLogger   # set up already (or logging is)

        getLogger("migrate").error("%s", message)
