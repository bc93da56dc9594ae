"""Migrate in the middle of CRIU's page-server stream, so its bytes count.

CRIU's page-server protocol runs between CRIU on the source and CRIU on the
destination. Left to itself that stream bypasses migrate: the report cannot
count it, the progress bar cannot move with it. A ``Relay`` sits between a
local socket that CRIU talks to and the TCP connection to the other host,
and copies both ways, counting every byte it moves.

The copy is ``splice(2)`` through a pipe (no copy into Python); a pair of
sockets the kernel cannot splice between falls back to recv/send. A failure
on either side (a cut link fails the TCP side within TCP_USER_TIMEOUT)
shuts both sockets down, so CRIU's next read or write fails at once and a
dump that is still running resumes the container.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
from collections.abc import Callable

__all__ = ["Relay", "UP", "DOWN"]

UP = "up"        # from the near socket (local CRIU) to the far one
DOWN = "down"    # back
CHUNK = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Relay:
    """Copy between ``near`` and ``far`` in two threads until both ends
    closed; ``on_bytes(direction, n)`` is called (from those threads) for
    every chunk moved. The relay owns both sockets and closes them."""

    def __init__(self, near: socket.socket, far: socket.socket,
                 on_bytes: Callable[[str, int], None], *, name: str = "relay") -> None:
        near.settimeout(None)
        far.settimeout(None)
        self.near, self.far = near, far
        self.on_bytes = on_bytes
        self.error: OSError | None = None
        self.bytes = {UP: 0, DOWN: 0}
        self._threads = [threading.Thread(target=self._pump, args=(near, far, UP),
                                          name=f"{name}-up", daemon=True),
                         threading.Thread(target=self._pump, args=(far, near, DOWN),
                                          name=f"{name}-down", daemon=True)]
        self._left = 2
        self._lock = threading.Lock()

    def start(self) -> "Relay":
        for t in self._threads:
            t.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for both directions to end; True when they did."""
        for t in self._threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def abort(self) -> None:
        """Cut both sides (the threads then end on their own)."""
        for s in (self.near, self.far):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            try:
                self._splice(src, dst, direction)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOSYS) or self.bytes[direction]:
                    raise
                self._copy(src, dst, direction)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError as err:
            if self.error is None:
                self.error = err
            self.abort()
        finally:
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                for s in (self.near, self.far):
                    with contextlib.suppress(OSError):
                        s.close()

    def _moved(self, direction: str, n: int) -> None:
        self.bytes[direction] += n
        self.on_bytes(direction, n)

    def _splice(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
            s, d = src.fileno(), dst.fileno()
            while True:
                n = os.splice(s, w, CHUNK, flags=os.SPLICE_F_MOVE)
                if n == 0:
                    return
                left = n
                while left:
                    left -= os.splice(r, d, left, flags=os.SPLICE_F_MOVE)
                self._moved(direction, n)
        finally:
            os.close(r)
            os.close(w)

    def _copy(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = src.recv_into(buf)
            if n == 0:
                return
            dst.sendall(view[:n])
            self._moved(direction, n)
