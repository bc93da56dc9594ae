"""The page stream of content pre-copy: self-delimiting records.

A stream (one ``Connection.send_stream``; zstd may cut it anywhere) is a
sequence of records::

    <pid u32> <flags u32> <vaddr u64> <npages u32>  [npages * 4096 bytes]

little-endian; ``pid`` is the pid as CRIU names the process (see scan.py).
``FLAG_ZERO``: the pages are all zero and no data follows (a page the
process zeroed is still dumped by CRIU, so the destination must hold it).
``RecordReader`` parses such a stream piece by piece and hands whole pages
to a sink.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from migrate.errors import ProtocolError

__all__ = ["HEADER", "FLAG_ZERO", "PAGE_SIZE", "header", "RecordReader"]

PAGE_SIZE = 4096
HEADER = struct.Struct("<IIQI")
FLAG_ZERO = 1
# A record is at most this many pages: a corrupt header cannot make the
# reader wait for terabytes.
MAX_PAGES = 1 << 20

Sink = Callable[[int, int, "memoryview | None", int], None]


def header(pid: int, vaddr: int, npages: int, *, zero: bool = False) -> bytes:
    return HEADER.pack(pid, FLAG_ZERO if zero else 0, vaddr, npages)


class RecordReader:
    """Feed it the stream's pieces; it calls ``sink(pid, vaddr, data, npages)``
    with whole pages (``data`` None for zero pages; a record may arrive in
    several calls, each with the vaddr of its first page). ``finish()``
    raises ``ProtocolError`` if the stream stopped inside a record."""

    def __init__(self, sink: Sink, *, phase: str = "memory") -> None:
        self.sink = sink
        self.phase = phase
        self._buf = bytearray()
        self._pid = self._vaddr = self._left = 0   # _left: data bytes still due
        self.pages = 0
        self.zero_pages = 0
        self.records = 0

    def feed(self, data: bytes | memoryview) -> None:
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        view = memoryview(buf)
        try:
            while True:
                if self._left:
                    whole = min(self._left, size - pos)
                    whole -= whole % PAGE_SIZE
                    if not whole:
                        break
                    self.sink(self._pid, self._vaddr, view[pos:pos + whole], whole // PAGE_SIZE)
                    self.pages += whole // PAGE_SIZE
                    pos += whole
                    self._vaddr += whole
                    self._left -= whole
                    continue
                if size - pos < HEADER.size:
                    break
                pid, flags, vaddr, npages = HEADER.unpack_from(buf, pos)
                pos += HEADER.size
                if vaddr % PAGE_SIZE or not 0 < npages <= MAX_PAGES or flags & ~FLAG_ZERO:
                    raise ProtocolError(self.phase, f"bad page record (pid {pid}, vaddr "
                                        f"{vaddr:#x}, {npages} pages, flags {flags:#x})")
                self.records += 1
                if flags & FLAG_ZERO:
                    self.sink(pid, vaddr, None, npages)
                    self.zero_pages += npages
                    continue
                self._pid, self._vaddr, self._left = pid, vaddr, npages * PAGE_SIZE
        finally:
            view.release()
        del buf[:pos]

    def finish(self) -> None:
        if self._left or self._buf:
            raise ProtocolError(self.phase, "the page stream ended inside a record")
