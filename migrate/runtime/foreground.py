"""Staying in the foreground: forward signals, copy a terminal, reap.

Used by `run` and `exec` without -d. The runtime is the child subreaper, so
the container's process (a grandchild, after the PID-namespace fork) is
reparented to us and we can collect its exit status. Signal handlers are
installed *before* the child starts, so a fast child's SIGCHLD is never lost.
"""

from __future__ import annotations

import errno
import os
import select
import _signal as signal  # not signal.py: its enums cost start-up time (migrate/_light.py)
from migrate._light import suppress

from migrate.runtime.syscalls import PR, Syscalls

__all__ = ["Foreground"]

_NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}
# Signals that end the runtime itself once there is nobody left to forward
# them to (the process died without us reaping it: its container was deleted
# under us, or it was never reparented to us).
_TERMINATING = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}


class Foreground:
    """Prepare before launching (``install``), then ``wait(pid, console_fd)``."""

    def __init__(self, sys: Syscalls):
        self.sys = sys
        self.pending: list[int] = []
        self._wake_r = self._wake_w = -1
        self._old: dict[int, object] = {}
        self._old_wakeup = -1

    def install(self) -> None:
        self.sys.prctl(PR.SET_CHILD_SUBREAPER, 1)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in signal.valid_signals():
            if sig in _NOT_FORWARDED and sig != signal.SIGCHLD:
                continue
            with suppress(OSError, ValueError, RuntimeError):
                self._old[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        self.pending.append(signum)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            with suppress(OSError, ValueError, RuntimeError, TypeError):
                signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _reap(self, pid: int) -> int | None:
        """Reap every dead child; return pid's wait status if it was among them."""
        result = None
        while True:
            try:
                wpid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return result if result is not None else (0 if not _exists(pid) else None)
            if wpid == 0:
                return result
            if wpid == pid:
                result = status

    def wait(self, pid: int, console_fd: int | None = None, notify=None) -> int:
        """Block until ``pid`` exits; return its exit code (128+N for signal N)."""
        if pid <= 0:
            # kill(0 or -1, sig) would reach our own process group or everyone.
            raise ValueError(f"Foreground.wait needs a process id, got {pid}")
        proxy = None
        if console_fd is not None:
            import selectors

            from migrate.runtime.console_proxy import ConsoleProxy

            sel = selectors.DefaultSelector()
        else:
            sel = _PollSelector()
        sel.register(self._wake_r, 1, "signal")         # 1: selectors.EVENT_READ
        if notify is not None:
            sel.register(notify.fileno(), 1, "notify")
        if console_fd is not None:
            proxy = ConsoleProxy(console_fd, sel)
        status = None
        try:
            while status is None:
                status = self._handle(pid, proxy)
                if status is not None:
                    break
                for key, _ in sel.select(timeout=1.0):
                    if key.data == "signal":
                        with suppress(BlockingIOError):
                            while os.read(self._wake_r, 512):
                                pass
                    elif key.data == "notify":
                        if notify.forward_one(timeout=0):
                            sel.unregister(notify.fileno())
                    elif proxy is not None:
                        proxy.on_ready(key)
            if proxy is not None:
                proxy.drain()
        finally:
            if proxy is not None:
                proxy.close()
            sel.close()
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code   # killed by signal N: 128+N, as shells do

    def _handle(self, pid: int, proxy) -> int | None:
        signals, self.pending[:] = list(self.pending), []
        status = self._reap(pid)
        for sig in signals:
            if sig == signal.SIGCHLD:
                continue
            if sig == signal.SIGWINCH and proxy is not None:
                proxy.resize()
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                if sig in _TERMINATING and status is None:
                    status = sig      # a wait status: killed by sig
        if status is None:
            status = self._reap(pid)
        if status is None and not _exists(pid):
            # Gone, and not our child to reap: nothing left to wait for.
            status = signal.SIGKILL
        if status is not None and status < 0:
            return 0
        return status


class _Key:
    __slots__ = ("fd", "data")

    def __init__(self, fd: int, data):
        self.fd, self.data = fd, data


class _PollSelector:
    """What ``wait`` uses of selectors.DefaultSelector, for reading only:
    ``selectors`` imports ``collections`` and more (start-up cost,
    migrate/_light.py), and a foreground `run` without a terminal needs
    nothing else."""

    def __init__(self):
        self._poll = select.poll()
        self._keys: dict[int, _Key] = {}

    def register(self, fd: int, events: int, data=None) -> None:
        self._poll.register(fd, select.POLLIN)
        self._keys[fd] = _Key(fd, data)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)
        del self._keys[fd]

    def select(self, timeout: float | None = None) -> list:
        try:
            ready = self._poll.poll(None if timeout is None else timeout * 1000)
        except InterruptedError:
            return []
        return [(self._keys[fd], 1) for fd, _ in ready if fd in self._keys]

    def close(self) -> None:
        self._keys.clear()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True
