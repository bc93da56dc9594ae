"""Copying between our terminal (or stdio) and a container's pty master."""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
import termios
import tty

from migrate.runtime.console import get_winsize, set_winsize

__all__ = ["ConsoleProxy"]


class ConsoleProxy:
    def __init__(self, master: int, sel: selectors.BaseSelector):
        self.master = master
        self.sel = sel
        self.stdin = sys.stdin.fileno() if sys.stdin else -1
        self.stdout = sys.stdout.fileno() if sys.stdout else 1
        self._saved = None
        if self.stdin >= 0 and os.isatty(self.stdin):
            with contextlib.suppress(termios.error):
                self._saved = termios.tcgetattr(self.stdin)
                tty.setraw(self.stdin)
            self.resize()
        os.set_blocking(master, False)
        sel.register(master, selectors.EVENT_READ, "master")
        if self.stdin >= 0:
            with contextlib.suppress(ValueError, OSError, PermissionError):
                sel.register(self.stdin, selectors.EVENT_READ, "stdin")

    def resize(self) -> None:
        if self.stdin >= 0 and os.isatty(self.stdin):
            size = get_winsize(self.stdin)
            if size:
                with contextlib.suppress(OSError):
                    set_winsize(self.master, *size)

    def on_ready(self, key) -> None:
        if key.data == "master":
            self._copy_out()
        elif key.data == "stdin":
            try:
                data = os.read(self.stdin, 65536)
            except OSError:
                data = b""
            if not data:
                self.sel.unregister(self.stdin)
                # Our stdin ended: send EOF (^D) to the container's terminal.
                with contextlib.suppress(OSError):
                    os.write(self.master, b"\x04")
                return
            _write_all(self.master, data)

    def _copy_out(self) -> bool:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return True
        except OSError:   # EIO: every slave fd is closed
            data = b""
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.master)
            return False
        _write_all(self.stdout, data)
        return True

    def drain(self) -> None:
        """Everything the container wrote before exiting reaches our stdout:
        read until the pty reports EIO (no slave left) or stays quiet."""
        waiter = selectors.DefaultSelector()
        try:
            waiter.register(self.master, selectors.EVENT_READ)
        except (ValueError, KeyError, OSError):
            return
        try:
            while waiter.select(timeout=0.2) and self._copy_out():
                pass
        finally:
            waiter.close()

    def close(self) -> None:
        if self._saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.stdin, termios.TCSADRAIN, self._saved)
        with contextlib.suppress(OSError):
            os.close(self.master)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            selectors.DefaultSelector().select(0.01)
            continue
        except OSError:
            return
        view = view[n:]
