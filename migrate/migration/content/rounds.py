"""The source's side of content pre-copy: what each round ships.

``live_round`` scans the running processes (scan.py) and yields the page
records (records.py) of every page whose hash the mirror does not have.
``image_round`` does the same for the final round from CRIU's own dump
(``pagemap-N.img`` + ``pages-<id>.img``, written while frozen): those pages
are the authority, whatever the live rounds read.

Both update the mirror as they yield: the mirror describes the destination
only while the migration goes on (any failure ends the migration).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator, Mapping

from migrate.migration.content.mirror import Mirror
from migrate.migration.content.records import PAGE_SIZE, header
from migrate.migration.content.scan import ProcessMemory, hash_pages

__all__ = ["RoundStats", "live_round", "image_round", "shipped_files"]

_ZERO_PAGE = bytes(PAGE_SIZE)


def _zero_hash() -> int:
    from xxhash import xxh3_64_intdigest

    return xxh3_64_intdigest(_ZERO_PAGE)


class RoundStats:
    """What one round found and shipped (filled in while it runs)."""

    __slots__ = ("pages_scanned", "pages_sent", "zero_pages", "processes", "seconds_scanning")

    def __init__(self) -> None:
        self.pages_scanned = 0
        self.pages_sent = 0         # with data
        self.zero_pages = 0         # sent as zero records (no data)
        self.processes = 0
        self.seconds_scanning = 0.0

    def __repr__(self) -> str:
        return (f"RoundStats(scanned={self.pages_scanned}, sent={self.pages_sent}, "
                f"zero={self.zero_pages}, processes={self.processes}, "
                f"scanning={self.seconds_scanning:.3f}s)")

    @property
    def pages_changed(self) -> int:
        return self.pages_sent + self.zero_pages


def _records(pid: int, vaddr: int, view: memoryview, mirror: Mirror, stats: RoundStats,
             zero_hash: int) -> Iterator[bytes]:
    hashes = hash_pages(view)
    stats.pages_scanned += len(hashes)
    for at, count in mirror.changed(pid, vaddr, hashes):
        # Split off all-zero pages (checked by content, not just by hash).
        i, end = at, at + count
        while i < end:
            zero = hashes[i] == zero_hash and view[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] == _ZERO_PAGE
            j = i + 1
            while j < end and (hashes[j] == zero_hash and
                               view[j * PAGE_SIZE:(j + 1) * PAGE_SIZE] == _ZERO_PAGE) == zero:
                j += 1
            addr = vaddr + i * PAGE_SIZE
            if zero:
                stats.zero_pages += j - i
                yield header(pid, addr, j - i, zero=True)
            else:
                stats.pages_sent += j - i
                yield header(pid, addr, j - i) + view[i * PAGE_SIZE:j * PAGE_SIZE]
            i = j


def live_round(processes: Mapping[int, int], mirror: Mirror, stats: RoundStats, *,
               proc_root: str = "/proc") -> Iterator[bytes]:
    """Records of the pages of ``processes`` ({pid as CRIU names it: host
    pid}) that changed since the mirror's last look. A process that exits
    meanwhile is skipped (the final dump decides what exists)."""
    zero_hash = _zero_hash()
    for pid, host_pid in sorted(processes.items()):
        started = time.monotonic()
        try:
            memory = ProcessMemory(host_pid, proc_root=proc_root)
            ranges = memory.ranges()
            stats.processes += 1
            for start, end in ranges:
                for vaddr, view in memory.read(start, end):
                    stats.seconds_scanning += time.monotonic() - started
                    yield from _records(pid, vaddr, view, mirror, stats, zero_hash)
                    started = time.monotonic()
        except (ProcessLookupError, FileNotFoundError):
            continue
        stats.seconds_scanning += time.monotonic() - started


def image_round(images_dir: str, mirror: Mirror, stats: RoundStats) -> Iterator[bytes]:
    """Records of the pages in CRIU's dump that the destination lacks."""
    from migrate.migration.content.store import PE_PRESENT, pagemap_entries

    zero_hash = _zero_hash()
    for path in sorted(glob.glob(os.path.join(images_dir, "pagemap-*.img"))):
        name = os.path.basename(path)[len("pagemap-"):-len(".img")]
        if not name.isdigit():
            continue
        pid = int(name)
        pages_id, entries = pagemap_entries(path)
        stats.processes += 1
        pages_path = os.path.join(images_dir, f"pages-{pages_id}.img")
        # read() into one reused buffer: an mmap of the tmpfs file would
        # take a page fault per page, slower than the copy.
        buf = bytearray(256 * PAGE_SIZE)
        view = memoryview(buf)
        with open(pages_path, "rb", buffering=0) as f:
            for vaddr, nr, flags in entries:
                if not flags & PE_PRESENT:
                    continue
                for at in range(0, nr, 256):       # 1 MiB at a time
                    n = min(256, nr - at) * PAGE_SIZE
                    got = f.readinto(view[:n])
                    if got != n:
                        raise EOFError(f"{pages_path} is shorter than its pagemap")
                    yield from _records(pid, vaddr + at * PAGE_SIZE, view[:n], mirror, stats,
                                        zero_hash)


def shipped_files(images_dir: str) -> list[str]:
    """The page data files ``image_round`` replaces (the rest is sent whole)."""
    from migrate.migration.content.store import pagemap_entries

    out = []
    for path in glob.glob(os.path.join(images_dir, "pagemap-*.img")):
        name = os.path.basename(path)[len("pagemap-"):-len(".img")]
        if name.isdigit():
            out.append(f"pages-{pagemap_entries(path)[0]}.img")
    return out
