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

A lazy-pages stream needs more (``LazyPagesRelay``): CRIU's page server
takes an end of its requests (EOF) as success, and the dump then kills the
source tree, although the destination's lazy-pages daemon asks for every
page and ends with PS_IOV_CLOSE only when it has them all (or fails). So
the relay forwards requests whole, and if the stream from the destination
ends, or fails, before that CLOSE, it hands CRIU a request CRIU refuses:
the page server fails, the dump fails, and the source tree is left as it
was (frozen, with all its memory) instead of killed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
from collections.abc import Callable

__all__ = ["Relay", "LazyPagesRelay", "UP", "DOWN"]

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

    def join_up(self, timeout: float | None = None) -> bool:
        """Wait for the near side's stream to end (CRIU closed it); True when it did."""
        self._threads[0].join(timeout)
        return not self._threads[0].is_alive()

    def abort(self) -> None:
        """Cut both sides (the threads then end on their own)."""
        for s in (self.near, self.far):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            try:
                self._move(src, dst, direction)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOSYS) or self.bytes[direction]:
                    raise
                self._copy(src, dst, direction)
            self._ended(direction)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError as err:
            if self.error is None:
                self.error = err
            self._broke(direction)
            self.abort()
        finally:
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                for s in (self.near, self.far):
                    with contextlib.suppress(OSError):
                        s.close()

    def _move(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        self._splice(src, dst, direction)

    def _ended(self, direction: str) -> None:
        """``direction``'s source said EOF; its destination is told next."""

    def _broke(self, direction: str) -> None:
        """``direction`` failed; both sockets are shut down next."""

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


# criu/page-xfer.c: struct page_server_iov {u32 cmd; u64 nr_pages, vaddr,
# dst_id} (32 bytes with the padding after cmd, in host byte order); the
# command is the low 16 bits of cmd.
PS_IOV_SIZE = 32
PS_CMD_MASK = 0xFFFF
PS_IOV_CLOSE = 0x1023
PS_IOV_FORCE_CLOSE = 0x1024
# A command CRIU does not know ("Unknown command"): its page server fails.
PS_IOV_REFUSED = 0xFFFF


class LazyPagesRelay(Relay):
    """A ``Relay`` between CRIU's lazy page server (``near``) and the
    destination's lazy-pages daemon (``far``) that makes CRIU's page server
    fail unless the daemon closed the stream with PS_IOV_CLOSE (see the
    module's docstring). ``closed``: whether it did."""

    def __init__(self, near: socket.socket, far: socket.socket,
                 on_bytes: Callable[[str, int], None], *, name: str = "lazy-pages") -> None:
        super().__init__(near, far, on_bytes, name=name)
        self.closed = False
        self._refused = False

    def _move(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        if direction == UP:
            self._splice(src, dst, direction)
            return
        # Requests: small, each answered before the next; forwarded whole,
        # so a refusal can never land inside one.
        import sys

        pending = bytearray()
        buf = bytearray(64 << 10)
        while True:
            n = src.recv_into(buf)
            if n == 0:
                return
            pending += buf[:n]
            whole = len(pending) - len(pending) % PS_IOV_SIZE
            if not whole:
                continue
            for at in range(0, whole, PS_IOV_SIZE):
                cmd = int.from_bytes(pending[at:at + 4], sys.byteorder) & PS_CMD_MASK
                self.closed = cmd in (PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE)
            dst.sendall(pending[:whole])
            del pending[:whole]
            self._moved(direction, whole)

    def _ended(self, direction: str) -> None:
        if direction == DOWN and not self.closed:
            self._refuse()

    def _broke(self, direction: str) -> None:
        if not self.closed:
            self._refuse()

    def _refuse(self) -> None:
        import sys

        if self._refused:
            return
        self._refused = True
        if self.error is None:
            self.error = OSError(errno.ECONNABORTED, "the destination's lazy-pages daemon "
                                 "stopped before it had every page")
        with contextlib.suppress(OSError):
            self.near.sendall(PS_IOV_REFUSED.to_bytes(4, sys.byteorder) + bytes(PS_IOV_SIZE - 4))
