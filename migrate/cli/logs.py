"""--log / --log-format / --debug: where messages for programs go.

Engines (Podman, containerd) pass ``--log FILE --log-format json`` and read
the last error from that file, so every error is written there as a JSON
line as well as printed once on stderr.
"""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["setup_logging", "report_error"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import datetime   # here: report_error runs on every failed hot command

        return json.dumps({
            "level": record.levelname.lower().replace("warning", "warning"),
            "msg": record.getMessage(),
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat().replace("+00:00", "Z"),
        })


def setup_logging(path: str | None, fmt: str, debug: bool) -> None:
    root = logging.getLogger("migrate")
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    root.propagate = False
    if path:
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"
                                               if path else "migrate: %(levelname)s: %(message)s"))
    root.addHandler(handler)


def report_error(message: str, log_path: str | None) -> None:
    """The one line on stderr, plus the log file's error record."""
    sys.stderr.write(f"migrate: {message}\n")
    sys.stderr.flush()
    if log_path:
        logging.getLogger("migrate").error("%s", message)
