"""A page server of our own for the final dump: CRIU streams the frozen
memory to migrate, which hashes it as it arrives and keeps only the pages
the destination does not hold.

CRIU's dump talks its page-server protocol (criu/page-xfer.c) on a socket
it is given (``PageServer(fd=...)``); this is the receiving side, so the
memory is never written to a file on the source: each command is a
``page_server_iov`` (u32 cmd with PE_* flags in its top 16 bits, u64
nr_pages, u64 vaddr, u64 dst_id: the image type in its low 8 bits, the id
above), ``PS_IOV_ADD_F`` with PE_PRESENT followed by the pages.

- ``PS_IOV_OPEN2`` opens the pagemap of process ``id`` (as CRIU names it,
  the same pid the rounds used) or of shared memory ``id``; answered with
  one byte, "has parent" (never: the final dump has none).
- ``PS_IOV_PARENT`` asks the same, answered with an int.
- ``PS_IOV_CLOSE``/``PS_IOV_FORCE_CLOSE`` end the dump, answered with an
  int status 0 once every image is written.

What it writes into ``images_dir``: every ``pagemap-N.img`` /
``pagemap-shmem-N.img`` as CRIU's own page server would (head with a
``pages_id`` from 1 up), the ``pages-<id>.img`` of shared memory (sent
whole), and no ``pages-<id>.img`` for processes: their changed pages are
kept as page records (``records``) for the destination, which rebuilds
those images from its store (store.py). Any error shuts the socket, so
CRIU's next write fails and the dump resumes the container.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading

from migrate.migration.content.mirror import Mirror
from migrate.migration.content.records import PAGE_SIZE
from migrate.migration.content.rounds import RoundStats, changed_records, zero_hash

__all__ = ["DedupPageServer"]

IOV = struct.Struct("=I4xQQQ")      # struct page_server_iov (u32, pad, u64 x3)
PS_IOV_ADD, PS_IOV_HOLE, PS_IOV_OPEN, PS_IOV_OPEN2 = 1, 2, 3, 4
PS_IOV_PARENT, PS_IOV_ADD_F, PS_IOV_GET = 5, 6, 7
PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE = 0x1023, 0x1024
PS_CMD_BITS = 16
PS_TYPE_BITS = 8
PS_TYPE_PID, PS_TYPE_SHMEM = 1, 2
# criu/include/pagemap.h
PE_PARENT, PE_LAZY, PE_PRESENT = 1, 2, 4
CHUNK_PAGES = 256


class _Open:
    """One pagemap being received."""

    __slots__ = ("kind", "id", "pages_id", "entries", "pages_fd")

    def __init__(self, kind: int, id_: int, pages_id: int) -> None:
        self.kind, self.id, self.pages_id = kind, id_, pages_id
        self.entries: list[tuple[int, int, int]] = []
        self.pages_fd: int | None = None


class DedupPageServer:
    """Serve one dump on ``sock`` in a thread (``start``/``join``); then
    ``records`` holds the page records to ship and ``error`` what failed."""

    def __init__(self, sock: socket.socket, images_dir: str, mirror: Mirror,
                 stats: RoundStats) -> None:
        sock.settimeout(None)
        self.sock = sock
        self.images_dir = images_dir
        self.mirror = mirror
        self.stats = stats
        self.records: list[bytes] = []
        self.error: BaseException | None = None
        self.closed = False             # CRIU said PS_IOV_CLOSE: all images written
        self.bytes_received = 0
        self._pages_id = 0
        self._buf = bytearray(CHUNK_PAGES * PAGE_SIZE)
        self._zero_hash = zero_hash()
        self._thread = threading.Thread(target=self._serve, name="content-page-server",
                                        daemon=True)

    def start(self) -> "DedupPageServer":
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    # -- the protocol ------------------------------------------------------------------

    def _serve(self) -> None:
        current: _Open | None = None
        head = bytearray(IOV.size)
        try:
            while True:
                if not self._read_into(memoryview(head), eof_ok=True):
                    raise ConnectionError("CRIU closed the page-server socket before "
                                          "PS_IOV_CLOSE")
                cmd_flags, nr, vaddr, dst_id = IOV.unpack(head)
                cmd, flags = cmd_flags & ((1 << PS_CMD_BITS) - 1), cmd_flags >> PS_CMD_BITS
                if cmd in (PS_IOV_OPEN, PS_IOV_OPEN2):
                    self._finish(current)
                    current = self._open(dst_id)
                    if cmd == PS_IOV_OPEN2:
                        self.sock.sendall(b"\0")            # no parent
                elif cmd == PS_IOV_PARENT:
                    self.sock.sendall(struct.pack("=i", 0))
                elif cmd in (PS_IOV_ADD_F, PS_IOV_ADD, PS_IOV_HOLE):
                    if cmd == PS_IOV_ADD:
                        flags = PE_PRESENT
                    elif cmd == PS_IOV_HOLE:
                        flags = PE_PARENT
                    if current is None or dst_id != (current.id << PS_TYPE_BITS | current.kind):
                        self._finish(current)
                        current = self._open(dst_id)
                    current.entries.append((vaddr, nr, flags))
                    if flags & PE_PRESENT:
                        self._pages(current, vaddr, nr)
                elif cmd in (PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE):
                    self._finish(current)
                    current = None
                    self.closed = True
                    self.sock.sendall(struct.pack("=i", 0))
                    return
                else:
                    raise ValueError(f"page-server command {cmd:#x} is not supported here")
        except BaseException as err:  # noqa: BLE001 - handed to the pipeline
            self.error = err
            self.abort()
        finally:
            if current is not None and current.pages_fd is not None:
                os.close(current.pages_fd)

    def _read_into(self, view: memoryview, *, eof_ok: bool = False) -> bool:
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                if eof_ok and got == 0:
                    return False
                raise ConnectionError("the page-server stream ended inside a command")
            got += n
        self.bytes_received += got
        return True

    def _open(self, dst_id: int) -> _Open:
        kind, id_ = dst_id & ((1 << PS_TYPE_BITS) - 1), dst_id >> PS_TYPE_BITS
        if kind not in (PS_TYPE_PID, PS_TYPE_SHMEM):
            raise ValueError(f"page-server image type {kind} is not supported here")
        self._pages_id += 1
        current = _Open(kind, id_, self._pages_id)
        if kind == PS_TYPE_SHMEM:
            current.pages_fd = os.open(os.path.join(self.images_dir,
                                                    f"pages-{current.pages_id}.img"),
                                       os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                       0o600)
        else:
            self.stats.processes += 1
        return current

    def _pages(self, current: _Open, vaddr: int, nr: int) -> None:
        view = memoryview(self._buf)
        for at in range(0, nr, CHUNK_PAGES):
            n = min(CHUNK_PAGES, nr - at) * PAGE_SIZE
            piece = view[:n]
            self._read_into(piece)
            if current.kind == PS_TYPE_PID:
                self.records.extend(changed_records(current.id, vaddr + at * PAGE_SIZE, piece,
                                                    self.mirror, self.stats, self._zero_hash))
            else:
                while piece:
                    piece = piece[os.write(current.pages_fd, piece):]

    def _finish(self, current: _Open | None) -> None:
        """Write the pagemap image of ``current`` (as CRIU's page server would)."""
        if current is None:
            return
        from migrate.migration.content.store import write_pagemap

        name = (f"pagemap-{current.id}.img" if current.kind == PS_TYPE_PID
                else f"pagemap-shmem-{current.id}.img")
        write_pagemap(os.path.join(self.images_dir, name), current.pages_id, current.entries)
        if current.pages_fd is not None:
            os.close(current.pages_fd)
            current.pages_fd = None
