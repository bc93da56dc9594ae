"""The source's side of content pre-copy: what each round ships.

``live_round`` scans the running processes (scan.py) and yields the page
records (records.py) of every page whose hash the mirror does not have.
``changed_records`` does it for one piece of memory; the final round's page
server (pageserver.py) uses it on the frozen dump's pages, which are the
authority, whatever the live rounds read.

The mirror is updated as records are made: it describes the destination
only while the migration goes on (any failure ends the migration).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping

from migrate.migration.content.mirror import Mirror
from migrate.migration.content.records import PAGE_SIZE, header
from migrate.migration.content.scan import ProcessMemory, hash_pages

__all__ = ["RoundStats", "live_round", "changed_records", "zero_hash"]

_ZERO_PAGE = bytes(PAGE_SIZE)


def zero_hash() -> int:
    """The hash of an all-zero page."""
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


def changed_records(pid: int, vaddr: int, view: memoryview, mirror: Mirror, stats: RoundStats,
                    zero: int | None = None) -> Iterator[bytes]:
    """Records of the pages of ``view`` (process ``pid``, from ``vaddr``)
    whose hash the mirror does not have; ``zero``: ``zero_hash()``, if the
    caller keeps it."""
    zero_hash_ = zero_hash() if zero is None else zero
    hashes = hash_pages(view)
    stats.pages_scanned += len(hashes)
    for at, count in mirror.changed(pid, vaddr, hashes):
        # Split off all-zero pages (checked by content, not just by hash).
        i, end = at, at + count
        while i < end:
            is_zero = hashes[i] == zero_hash_ and \
                view[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] == _ZERO_PAGE
            j = i + 1
            while j < end and (hashes[j] == zero_hash_ and
                               view[j * PAGE_SIZE:(j + 1) * PAGE_SIZE] == _ZERO_PAGE) == is_zero:
                j += 1
            addr = vaddr + i * PAGE_SIZE
            if is_zero:
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
    zero = zero_hash()
    for pid, host_pid in sorted(processes.items()):
        started = time.monotonic()
        try:
            memory = ProcessMemory(host_pid, proc_root=proc_root)
            ranges = memory.ranges()
            stats.processes += 1
            for start, end in ranges:
                for vaddr, view in memory.read(start, end):
                    stats.seconds_scanning += time.monotonic() - started
                    yield from changed_records(pid, vaddr, view, mirror, stats, zero)
                    started = time.monotonic()
        except (ProcessLookupError, FileNotFoundError):
            continue
        stats.seconds_scanning += time.monotonic() - started
