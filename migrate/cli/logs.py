"""--log / --log-format / --debug: where messages for programs go.

Engines (Podman, containerd) pass ``--log FILE --log-format json`` and read
the last error from that file, so every error is written there as a JSON
line as well as printed once on stderr.
"""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["setup_logging", "report_error", "one_line"]


def _time(record: logging.LogRecord) -> str:
    import datetime   # here: report_error runs on every failed hot command

    return (datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="microseconds").replace("+00:00", "Z"))


def _level(record: logging.LogRecord) -> str:
    # logrus' level names, which engines and runc's tests match on.
    return {"WARNING": "warning", "CRITICAL": "fatal"}.get(record.levelname,
                                                          record.levelname.lower())


class _JsonFormatter(logging.Formatter):
    """``{"level":"debug","msg":"...","time":"..."}``: logrus' JSONFormatter, compact."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"level": _level(record), "msg": record.getMessage(),
                           "time": _time(record)}, separators=(",", ":"))


class _TextFormatter(logging.Formatter):
    """``time="..." level=debug msg="..."``: logrus' TextFormatter without a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return (f'time="{_time(record)}" level={_level(record)} '
                f"msg={json.dumps(record.getMessage(), ensure_ascii=False)}")


def setup_logging(path: str | None, fmt: str, debug: bool) -> None:
    root = logging.getLogger("migrate")
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    root.propagate = False
    if path:
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root.addHandler(handler)


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
        logging.getLogger("migrate").error("%s", message)
