"""The formatters behind --log-format (logrus' text and JSON shapes); loaded
only when logging is set up, so that a failed hot command's one line on
stderr does not import ``logging`` and ``json`` (issue 16)."""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["setup_logging"]


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
