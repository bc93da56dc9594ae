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

__all__ = ["RoundStats", "live_round", "changed_records", "zero_hash", "Sample",
           "sample_changed", "RoundCost", "another_round", "DOWNTIME_WEIGHT", "SAMPLE_EVERY"]

_ZERO_PAGE = bytes(PAGE_SIZE)


def zero_hash() -> int:
    """The hash of an all-zero page."""
    from xxhash import xxh3_64_intdigest

    return xxh3_64_intdigest(_ZERO_PAGE)


class RoundStats:
    """What one round found and shipped (filled in while it runs)."""

    __slots__ = ("pages_scanned", "pages_sent", "zero_pages", "processes", "seconds_scanning",
                 "seconds_ranges", "seconds_hashing")

    def __init__(self) -> None:
        self.pages_scanned = 0
        self.pages_sent = 0         # with data
        self.zero_pages = 0         # sent as zero records (no data)
        self.processes = 0
        self.seconds_scanning = 0.0     # process_vm_readv
        self.seconds_ranges = 0.0       # /proc/PID/maps and PAGEMAP_SCAN
        self.seconds_hashing = 0.0      # hashing, the mirror's compare, making the records

    def __repr__(self) -> str:
        return (f"RoundStats(scanned={self.pages_scanned}, sent={self.pages_sent}, "
                f"zero={self.zero_pages}, processes={self.processes}, "
                f"scanning={self.seconds_scanning:.3f}s)")

    @property
    def pages_changed(self) -> int:
        return self.pages_sent + self.zero_pages


def changed_records(pid: int, vaddr: int, view: memoryview, mirror: Mirror, stats: RoundStats,
                    zero: int | None = None, *, keep: bool = True) -> Iterator[bytes | memoryview]:
    """Records of the pages of ``view`` (process ``pid``, from ``vaddr``)
    whose hash the mirror does not have; ``zero``: ``zero_hash()``, if the
    caller keeps it. ``keep=False``: a record's pages come as a slice of
    ``view`` after its header, not copied: valid only until ``view``
    changes (a consumer that sends each piece before asking for the next)."""
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
            elif keep:
                stats.pages_sent += j - i
                yield header(pid, addr, j - i) + view[i * PAGE_SIZE:j * PAGE_SIZE]
            else:
                stats.pages_sent += j - i
                yield header(pid, addr, j - i)
                yield view[i * PAGE_SIZE:j * PAGE_SIZE]
            i = j


def live_round(processes: Mapping[int, int], mirror: Mirror, stats: RoundStats, *,
               proc_root: str = "/proc") -> Iterator[bytes | memoryview]:
    """Records of the pages of ``processes`` ({pid as CRIU names it: host
    pid}) that changed since the mirror's last look, as pieces of a stream
    (a record's pages are a view of the read buffer, valid until the next
    piece is asked for: ``Connection.send_stream`` sends or copies each
    first). A process that exits meanwhile is skipped (the final dump
    decides what exists)."""
    zero = zero_hash()
    clock = time.monotonic
    for pid, host_pid in sorted(processes.items()):
        started = clock()
        try:
            memory = ProcessMemory(host_pid, proc_root=proc_root)
            ranges = memory.ranges()
            stats.seconds_ranges += clock() - started
            stats.processes += 1
            started = clock()
            for start, end in ranges:
                for vaddr, view in memory.read(start, end):
                    now = clock()
                    stats.seconds_scanning += now - started
                    # the time the consumer spends between records (sending
                    # them) is not ours
                    for rec in changed_records(pid, vaddr, view, mirror, stats, zero, keep=False):
                        stats.seconds_hashing += clock() - now
                        yield rec
                        now = clock()
                    stats.seconds_hashing += clock() - now
                    started = clock()
        except (ProcessLookupError, FileNotFoundError):
            continue
        stats.seconds_scanning += clock() - started


# -- whether another round pays ------------------------------------------------------------

# One page in this many of what the destination holds is read again to
# estimate how much changed since the last round.
SAMPLE_EVERY = 16
# A second the container is frozen weighs this many seconds of the
# migration's running part: another round pays when it takes at least
# 1/DOWNTIME_WEIGHT of its own cost off the frozen part.
DOWNTIME_WEIGHT = 2.0


class Sample:
    """What re-reading every ``SAMPLE_EVERY``-th page the destination
    holds found: ``changed`` of ``sampled`` differ now; ``new`` pages are
    present that the destination never got (memory grown since)."""

    __slots__ = ("sampled", "changed", "new", "seconds")

    def __init__(self, sampled: int = 0, changed: int = 0, new: int = 0,
                 seconds: float = 0.0) -> None:
        self.sampled, self.changed, self.new, self.seconds = sampled, changed, new, seconds

    def pages(self, held: int) -> int:
        """The estimate: pages that differ from what the destination holds."""
        if not self.sampled:
            return self.new
        return round(self.changed * held / self.sampled) + self.new


def sample_changed(processes: Mapping[int, int], mirror: Mirror, *, proc_root: str = "/proc",
                   every: int = SAMPLE_EVERY) -> Sample:
    """Re-read one page in ``every`` of those the mirror holds and count the
    ones whose hash differs (the mirror is left alone: nothing is shipped);
    count the present pages beyond what the mirror holds as new."""
    from itertools import islice

    from xxhash import xxh3_64_intdigest as h

    started = time.monotonic()
    sample = Sample()
    for pid, host_pid in sorted(processes.items()):
        known = mirror.pages.get(pid, {})
        try:
            memory = ProcessMemory(host_pid, proc_root=proc_root, chunk=256 * PAGE_SIZE)
            present = sum(end - start for start, end in memory.ranges()) // PAGE_SIZE
            sample.new += max(0, present - len(known))
            picked = dict(islice(known.items(), every // 2, None, every))
            for vaddr, view in memory.read_pages([page * PAGE_SIZE for page in picked]):
                sample.sampled += 1
                sample.changed += h(view) != picked[vaddr // PAGE_SIZE]
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    sample.seconds = time.monotonic() - started
    return sample


class RoundCost:
    """What round 1 measured: it shipped ``shipped`` bytes (all the memory)
    in ``seconds``; ``fixed``: the part of a round that does not depend on
    what it ships (reading and hashing all the memory, finding it, the
    destination's reply)."""

    __slots__ = ("shipped", "seconds", "fixed")

    def __init__(self, shipped: int, seconds: float, fixed: float) -> None:
        self.shipped, self.seconds, self.fixed = shipped, seconds, fixed


def another_round(cost: RoundCost, changed_bytes: int, *,
                  weight: float = DOWNTIME_WEIGHT) -> tuple[bool, str]:
    """Whether one more live round pays, and why (with the numbers).

    Frozen now, the final round ships ``changed_bytes``: at round 1's rate
    (``cost.shipped`` bytes in ``cost.seconds``, its scan included) that is
    at most what another round can take off the frozen part; the round
    itself costs at least ``cost.fixed`` (a full scan) on top of what it
    ships. A round pays when ``weight`` times the first beats the second."""
    rate = cost.shipped / cost.seconds if cost.seconds > 0 else float("inf")
    saves = changed_bytes / rate if rate > 0 else 0.0
    numbers = (f"about {changed_bytes / 2**20:.1f} MiB changed since the last round, "
               f"{saves * 1000:.0f} ms to ship frozen at round 1's "
               f"{rate / 2**20:.0f} MiB/s, against {cost.fixed * 1000:.0f} ms for another "
               f"round's scan")
    if saves * weight <= cost.fixed:
        return False, f"another round would not pay: {numbers}"
    return True, f"another round pays: {numbers}"
