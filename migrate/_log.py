"""Log records of the hot commands without the ``logging`` package (issue 16).

Engines (containerd's shim, Podman's conmon) call every command with
``--log FILE --log-format json``. Setting that up with ``logging`` costs
~10 ms per command (``logging`` loads ``re``, ``enum``, ``threading``,
``traceback`` ...; the formatter ``json`` and ``datetime``), a third of
what `runc exec` takes in all. The hot commands (create, start, run, exec,
state, kill, delete) write the same lines through ``setup`` below: one
``os.write`` per record to the file (or stderr), in logrus' shapes that
cli/logformat.py also writes and runc's callers parse:

- json: ``{"level":"debug","msg":"...","time":"2026-01-02T03:04:05.123456Z"}``
- text: ``time="..." level=debug msg="..."``

The runtime's modules log through ``getLogger`` here, never ``logging``
directly. Until ``setup`` runs, a record goes to ``logging`` when something
loaded it (the click commands and checkpoint/restore set ``logging`` up, so
everything reaches one handler), else it behaves as an unconfigured
``logging`` would: warnings and errors alone, as bare lines on stderr.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["getLogger", "setup", "reset", "Logger"]

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
# logrus' level names, which engines and runc's tests match on.
_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error", CRITICAL: "fatal"}

try:
    from _json import encode_basestring as _text_str, encode_basestring_ascii as _json_str
except ImportError:     # an interpreter without the accelerator
    def _text_str(s: str) -> str:
        import json

        return json.dumps(s, ensure_ascii=False)

    def _json_str(s: str) -> str:
        import json

        return json.dumps(s)


class _Sink:
    """Where records go after ``setup``: an fd of our own, or sys.stderr."""

    __slots__ = ("fd", "json", "level")

    def __init__(self, fd: int | None, json_format: bool, level: int):
        self.fd, self.json, self.level = fd, json_format, level

    def write(self, levelno: int, message: str) -> None:
        t = time.time()
        secs = int(t)
        stamp = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
                 + f".{min(int((t - secs) * 1e6 + 0.5), 999999):06d}Z")
        level = _NAMES.get(levelno, "info")
        if self.json:
            line = (f'{{"level":{_json_str(level)},"msg":{_json_str(message)},'
                    f'"time":{_json_str(stamp)}}}')
        else:
            line = f'time="{stamp}" level={level} msg={_text_str(message)}'
        if self.fd is None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        else:
            os.write(self.fd, (line + "\n").encode("utf-8", "backslashreplace"))


_sink: _Sink | None = None


def setup(path: str | None, fmt: str, debug: bool) -> None:
    """Send records to ``path`` (appended to, made if missing; OSError as
    ``open`` raises it) or, without one, to stderr; debug records only
    with ``debug``."""
    global _sink
    fd = None
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    _sink = _Sink(fd, fmt == "json", DEBUG if debug else WARNING)


def reset() -> None:
    """Undo ``setup`` (for callers of ``main()`` that live on: tests)."""
    global _sink
    if _sink is not None and _sink.fd is not None:
        os.close(_sink.fd)
    _sink = None


class Logger:
    """The part of ``logging.Logger`` the runtime uses."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def _log(self, levelno: int, msg: str, args: tuple) -> None:
        sink = _sink
        if sink is None:
            logging = sys.modules.get("logging")
            if logging is not None:
                logging.getLogger(self.name).log(levelno, msg, *args)
            elif levelno >= WARNING:        # logging's last resort: the bare message
                sys.stderr.write((msg % args if args else str(msg)) + "\n")
            return
        if levelno >= sink.level:
            sink.write(levelno, msg % args if args else str(msg))

    def debug(self, msg: str, *args) -> None:
        self._log(DEBUG, msg, args)

    def info(self, msg: str, *args) -> None:
        self._log(INFO, msg, args)

    def warning(self, msg: str, *args) -> None:
        self._log(WARNING, msg, args)

    def error(self, msg: str, *args) -> None:
        self._log(ERROR, msg, args)

    def critical(self, msg: str, *args) -> None:
        self._log(CRITICAL, msg, args)


def getLogger(name: str) -> Logger:  # noqa: N802 - logging's name, on purpose
    return Logger(name)
