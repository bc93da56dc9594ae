"""Content pre-copy's scanner on a real process: it finds exactly the pages
CRIU would dump, does not fault in any other, and what it ships rebuilds the
process's memory in a page store."""

import mmap
import os
import subprocess
import sys
import textwrap

import pytest

from migrate.migration.content.mirror import Mirror
from migrate.migration.content.records import PAGE_SIZE, RecordReader
from migrate.migration.content.rounds import RoundStats, live_round
from migrate.migration.content.scan import ProcessMemory, hash_pages, ns_pid, processes_of

CHILD = textwrap.dedent("""
    import ctypes, mmap, os, sys
    P = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    def addr(m): return ctypes.addressof(ctypes.c_char.from_buffer(m))
    written = mmap.mmap(-1, 64 * 4096, flags=P)       # pages 0-9 and 20 written
    for i in list(range(10)) + [20]: written[i * 4096] = i + 1
    read = mmap.mmap(-1, 16 * 4096, flags=P)          # only read: the zero page
    for i in range(16): read[i * 4096]
    untouched = mmap.mmap(-1, 16 * 4096, flags=P)
    zeroed = mmap.mmap(-1, 4096, flags=P); zeroed[0] = 1; zeroed[0] = 0
    print(addr(written), addr(read), addr(untouched), addr(zeroed), flush=True)
    for line in sys.stdin:
        i = int(line); written[i * 4096 + 1] = (written[i * 4096 + 1] + 1) % 256
        print("ok", flush=True)
""")


@pytest.fixture
def child():
    if os.geteuid() != 0:
        pytest.skip("reading another process's memory needs root here")
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        yield p, [int(x) for x in p.stdout.readline().split()]
    finally:
        p.kill()
        p.wait()


def _present(pid, addr):
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(addr // PAGE_SIZE * 8)
        return bool(int.from_bytes(f.read(8), "little") >> 63)


def _rss_anon(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:"))


@pytest.mark.parametrize("use_scan", [True, False], ids=["PAGEMAP_SCAN", "pagemap"])
def test_finds_written_pages_only_and_faults_nothing_in(child, use_scan):
    p, (written, read, untouched, zeroed) = child
    rss = _rss_anon(p.pid)
    ranges = ProcessMemory(p.pid, use_scan=use_scan).ranges()
    pages = {a for s, e in ranges for a in range(s, e, PAGE_SIZE)}
    assert {written + i * PAGE_SIZE for i in list(range(10)) + [20]} <= pages
    assert written + 10 * PAGE_SIZE not in pages
    assert not any(read <= a < read + 16 * PAGE_SIZE for a in pages)      # zero page
    assert not any(untouched <= a < untouched + 16 * PAGE_SIZE for a in pages)
    assert zeroed in pages                  # written, even if with zeros: CRIU dumps it
    for _ in ProcessMemory(p.pid, use_scan=use_scan).chunks():
        pass
    # Nothing faulted in: the untouched mapping has no page at all (a read
    # would map the zero page there, a write a new one).
    assert not any(_present(p.pid, untouched + i * PAGE_SIZE) for i in range(16))
    # RssAnon moves by a few pages on its own here (DAMON, THP); the 16
    # untouched pages written in would be 64 KiB.
    assert _rss_anon(p.pid) - rss < 16 * PAGE_SIZE // 1024


def test_rounds_ship_what_changed_and_the_store_matches_memory(child, tmp_path):
    from migrate.migration.content.store import PageStore

    p, (written, *_rest) = child
    procs = processes_of([p.pid])
    assert procs == {ns_pid(p.pid): p.pid}
    mirror, store = Mirror(), PageStore(str(tmp_path / "store"))
    sent = []
    for change in (None, 3, 20, None):
        if change is not None:
            p.stdin.write(f"{change}\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "ok"
        stats = RoundStats()
        pages = set()

        def sink(pid, vaddr, data, n):
            pages.update(range(vaddr, vaddr + n * PAGE_SIZE, PAGE_SIZE))
            store.write(pid, vaddr, data, n)
        reader = RecordReader(sink)
        for rec in live_round(procs, mirror, stats):
            reader.feed(rec)
        reader.finish()
        assert stats.processes == 1 and stats.pages_changed == len(pages)
        sent.append({i for i in list(range(10)) + [20] if written + i * PAGE_SIZE in pages})
    # The first round sends every written page; then only the changed one
    # of them (the interpreter's own heap changes too, elsewhere).
    assert sent == [set(range(10)) | {20}, {3}, {20}, set()]
    # What the store holds for the written mapping is the process's memory now.
    pid = next(iter(procs))
    fd = os.open(f"/proc/{p.pid}/mem", os.O_RDONLY)
    try:
        for i in list(range(10)) + [20]:
            vaddr = written + i * PAGE_SIZE
            slot = store._procs[pid].slots[vaddr // PAGE_SIZE]
            assert os.pread(store._procs[pid].fd, PAGE_SIZE, slot * PAGE_SIZE) == \
                os.pread(fd, PAGE_SIZE, vaddr)
    finally:
        os.close(fd)
        store.close()


def test_hash_pages_is_per_page():
    a = bytes(PAGE_SIZE) + b"x" * PAGE_SIZE + bytes(PAGE_SIZE)
    h = hash_pages(memoryview(a))
    assert len(h) == 3 and h[0] == h[2] != h[1]


def test_a_gone_process_is_skipped():
    stats = RoundStats()
    assert list(live_round({1: 2 ** 22 + 12345}, Mirror(), stats)) == []
    assert stats.processes == 0


def test_a_sample_finds_what_changed_since_the_round_and_leaves_the_mirror(child):
    from migrate.migration.content.rounds import sample_changed

    p, _addrs = child
    procs = processes_of([p.pid])
    mirror = Mirror()
    for _ in live_round(procs, mirror, RoundStats()):
        pass
    held = dict(mirror.pages[next(iter(procs))])
    for page in (3, 20):
        p.stdin.write(f"{page}\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ok"
    # every page sampled: both written pages changed (and maybe a few of
    # the interpreter's own heap); nothing new was mapped
    sample = sample_changed(procs, mirror, every=1)
    assert sample.sampled == len(held) and 2 <= sample.changed < 2 + len(held) // 4
    assert sample.pages(len(held)) >= 2 and sample.seconds > 0
    assert mirror.pages[next(iter(procs))] == held       # nothing marked as sent
    # one in 16: an estimate over the same pages, scaled back up
    sparse = sample_changed(procs, mirror)
    assert sparse.sampled == len(held) // 16 + (len(held) % 16 > 8)
