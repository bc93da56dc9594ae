"""Content pre-copy's pure parts: the page records, the mirror, the store."""

import os
import random

import pytest

from migrate.errors import MigrationError, ProtocolError
from migrate.migration.content.mirror import Mirror, changed_runs
from migrate.migration.content.records import HEADER, PAGE_SIZE, RecordReader, header
from migrate.migration.content.store import PE_LAZY, PE_PARENT, PE_PRESENT, PageStore


def _page(n: int) -> bytes:
    return bytes([n % 251]) * PAGE_SIZE


def _collect():
    got = []

    def sink(pid, vaddr, data, npages):
        got.append((pid, vaddr, None if data is None else bytes(data), npages))
    return got, sink


def test_records_survive_any_cut_of_the_stream():
    stream = (header(7, 0x1000, 3) + _page(1) + _page(2) + _page(3)
              + header(8, 0x7ffc0000, 2, zero=True) + header(7, 0x9000, 1) + _page(9))
    for cut in [1, 5, HEADER.size, HEADER.size + 1, PAGE_SIZE - 3, 3 * PAGE_SIZE + 7, 100000]:
        got, sink = _collect()
        reader = RecordReader(sink)
        for i in range(0, len(stream), cut):
            reader.feed(stream[i:i + cut])
        reader.finish()
        pages = {}
        for pid, vaddr, data, n in got:
            for k in range(n):
                pages[(pid, vaddr + k * PAGE_SIZE)] = None if data is None else \
                    data[k * PAGE_SIZE:(k + 1) * PAGE_SIZE]
        assert pages == {(7, 0x1000): _page(1), (7, 0x2000): _page(2), (7, 0x3000): _page(3),
                         (8, 0x7ffc0000): None, (8, 0x7ffc1000): None, (7, 0x9000): _page(9)}
        assert reader.pages == 4 and reader.zero_pages == 2 and reader.records == 3


@pytest.mark.parametrize("bad", [header(1, 0x1001, 1), header(1, 0x1000, 0),
                                 HEADER.pack(1, 8, 0x1000, 1)])
def test_a_bad_record_is_a_protocol_error(bad):
    with pytest.raises(ProtocolError, match="bad page record"):
        RecordReader(lambda *a: None).feed(bad)


def test_a_stream_cut_inside_a_record_is_an_error():
    reader = RecordReader(lambda *a: None)
    reader.feed(header(1, 0x1000, 2) + _page(1))
    with pytest.raises(ProtocolError, match="inside a record"):
        reader.finish()


def test_changed_runs_ship_new_and_changed_pages_once():
    known: dict[int, int] = {}
    assert list(changed_runs(known, 10, [1, 2, 3, 4])) == [(0, 4)]
    assert list(changed_runs(known, 10, [1, 2, 3, 4])) == []
    assert list(changed_runs(known, 10, [1, 9, 9, 4, 5])) == [(1, 2), (4, 1)]
    assert known == {10: 1, 11: 9, 12: 9, 13: 4, 14: 5}


def test_mirror_keys_by_pid_and_page():
    m = Mirror()
    assert list(m.changed(1, 0x5000, [7])) == [(0, 1)]
    assert list(m.changed(2, 0x5000, [7])) == [(0, 1)]      # another process
    assert list(m.changed(1, 0x5000, [7])) == []
    assert len(m) == 2


def _pagemap(path, pages_id, entries):
    from pycriu import images

    with open(path, "wb") as f:
        images.dump({"magic": "PAGEMAP", "entries": [{"pages_id": pages_id}] + [
            {"vaddr": v, "nr_pages": n, "compat_nr_pages": n, "flags": fl}
            for v, n, fl in entries]}, f)


def _restored_pages(images_dir, pid, *, exact=True):
    """{vaddr: content} as CRIU's restore reads them: PE_PRESENT pages from
    pages-<id>.img in order, PE_PARENT ones from the parent's images
    (``exact``: the pages image holds nothing more)."""
    from migrate.migration.content.store import pagemap_entries

    def read(directory):
        pages_id, entries = pagemap_entries(os.path.join(directory, f"pagemap-{pid}.img"))
        with open(os.path.join(directory, f"pages-{pages_id}.img"), "rb") as f:
            data = f.read()
        return entries, data

    entries, data = read(images_dir)
    parent = {}
    if any(flags & PE_PARENT for _, _, flags in entries):
        p_entries, p_data = read(os.path.join(images_dir, "parent"))
        at = 0
        for vaddr, n, flags in p_entries:
            assert flags == PE_PRESENT
            for i in range(n):
                parent[vaddr + i * PAGE_SIZE] = p_data[at:at + PAGE_SIZE]
                at += PAGE_SIZE
    out, at = {}, 0
    for vaddr, n, flags in entries:
        for i in range(n):
            if flags & PE_PRESENT:
                out[vaddr + i * PAGE_SIZE] = data[at:at + PAGE_SIZE]
                at += PAGE_SIZE
            elif flags & PE_PARENT:
                out[vaddr + i * PAGE_SIZE] = parent[vaddr + i * PAGE_SIZE]
    assert at == len(data) if exact else at <= len(data)
    return out


def test_store_rebuilds_the_pages_image_criu_asks_for(tmp_path):
    store = PageStore(str(tmp_path / "store"))
    rng = random.Random(4)
    content = {}
    # Three rounds: everything, then a few pages changed, one new page at a
    # lower address (its slot comes last: the rebuild must reorder).
    for vaddr in range(0x10000, 0x20000, PAGE_SIZE):
        content[vaddr] = rng.randbytes(PAGE_SIZE)
    store.write(5, 0x10000, memoryview(b"".join(content[v] for v in sorted(content))), 16)
    for vaddr in (0x13000, 0x14000, 0x1f000):
        content[vaddr] = rng.randbytes(PAGE_SIZE)
        store.write(5, vaddr, memoryview(content[vaddr]), 1)
    content[0x8000] = bytes(PAGE_SIZE)
    store.write(5, 0x8000, None, 1)
    images = tmp_path / "images"
    images.mkdir()
    # A lazy entry is not in pages-N.img; the present ones are, in order.
    _pagemap(images / "pagemap-5.img", 3, [(0x8000, 1, PE_PRESENT), (0x9000, 2, PE_LAZY),
                                           (0x10000, 16, PE_PRESENT)])
    assert store.build_pages_images(str(images)) == 17      # not compacted: all copied
    got = _restored_pages(str(images), 5)
    assert got == {v: content[v] for v in [0x8000, *range(0x10000, 0x20000, PAGE_SIZE)]}
    store.close()


def test_store_refuses_to_invent_a_page(tmp_path):
    store = PageStore(str(tmp_path / "store"))
    store.write(1, 0x1000, memoryview(_page(1)), 1)
    images = tmp_path / "images"
    images.mkdir()
    _pagemap(images / "pagemap-1.img", 1, [(0x1000, 2, PE_PRESENT)])
    before = (images / "pagemap-1.img").read_bytes()
    for lazy in (False, True):
        with pytest.raises(MigrationError, match="lacks page 0x2000 of process 1"):
            store.build_pages_images(str(images), lazy=lazy)
        assert (images / "pagemap-1.img").read_bytes() == before     # not rewritten
    store.close()


def test_final_round_ships_only_what_the_destination_lacks_and_rebuilds_the_image(pair, tmp_path):
    """The final round end to end without CRIU: a dump's pagemap + pages
    image on the source, a store that already holds most pages at the
    destination; only the changed pages cross, and the rebuilt pages image
    is the source's byte for byte."""
    from types import SimpleNamespace

    from migrate.migration.content import destination
    from migrate.migration.content.precopy import ship
    from migrate.migration.content.rounds import RoundStats, changed_records
    from migrate.migration.messages import Control
    from migrate.migration.protocol import Kind
    from migrate.migration.receiver import Incoming
    from migration_helpers import Background

    src_conn, dst_conn = pair
    rng = random.Random(9)
    pages = {v: rng.randbytes(PAGE_SIZE) for v in range(0x400000, 0x440000, PAGE_SIZE)}
    pages[0x7ff000] = bytes(PAGE_SIZE)
    images = tmp_path / "src"
    images.mkdir()
    _pagemap(images / "pagemap-1.img", 2, [(0x400000, 64, PE_PRESENT), (0x7ff000, 1, PE_PRESENT)])

    def memory(stats):
        # what a round (or the final dump's page server) reads of process 1
        yield from changed_records(1, 0x400000, memoryview(b"".join(
            pages[v] for v in range(0x400000, 0x440000, PAGE_SIZE))), mirror, stats)
        yield from changed_records(1, 0x7ff000, memoryview(pages[0x7ff000]), mirror, stats)

    workdir = tmp_path / "dst"
    (workdir / "images").mkdir(parents=True)
    incoming = Incoming(conn=dst_conn, workdir=str(workdir), prepare=None)
    controls = destination.controls(memory_dir=None)       # in the work directory

    def serve(n):
        out = []
        for _ in range(n):
            control = Control.from_header(dst_conn.recv(Kind.CONTROL).header)
            dst_conn.send(Kind.REPLY, controls[control.op](incoming, control).to_header())
            out.append(control.op)
        return out

    m = SimpleNamespace(conn=src_conn)
    mirror = Mirror()
    # Round "live": the destination gets everything once.
    agent = Background(lambda: serve(1))
    first = RoundStats()
    reply, _, _ = ship(m, memory(first), label="round-1")
    assert agent.result() == ["content_pages"]
    assert reply.pages == 64 and reply.zero_pages == 1 and first.pages_changed == 65
    # they arrived in vaddr order: the store is laid out already
    assert controls["content_compact"](incoming, Control(op="content_compact")).pages == 0
    # Three pages change before the final dump.
    for v in (0x401000, 0x402000, 0x43f000):
        pages[v] = rng.randbytes(PAGE_SIZE)
    final = RoundStats()
    agent = Background(lambda: serve(1))
    reply, sent, _ = ship(m, memory(final), label="final")
    agent.result()
    assert final.pages_scanned == 65 and final.pages_changed == 3 == reply.pages
    assert sent.raw < 4 * PAGE_SIZE
    # The destination gets the pagemap (as send_images would), rebuilds.
    (workdir / "images" / "pagemap-1.img").write_bytes((images / "pagemap-1.img").read_bytes())
    built = controls["content_build"](incoming, Control(op="content_build", args={"dir": "images"}))
    assert (built.copied, built.in_parent) == (0, 65)       # nothing copied while frozen
    assert _restored_pages(str(workdir / "images"), 1) == pages
    assert incoming.cleanup() == []


def test_a_compacted_store_is_the_parent_and_only_new_pages_are_copied(tmp_path):
    store = PageStore(str(tmp_path / "store"))
    rng = random.Random(5)
    content = {v: rng.randbytes(PAGE_SIZE) for v in range(0x10000, 0x18000, PAGE_SIZE)}
    # Sent out of order (a later round brought the low pages).
    for v in sorted(content, reverse=True):
        store.write(2, v, memoryview(content[v]), 1)
    assert store.compact() == 8
    # The final round: a changed page (rewritten in place) and a new one
    # between two runs (like the text page CRIU's parasite injection COWs).
    content[0x12000] = rng.randbytes(PAGE_SIZE)
    store.write(2, 0x12000, memoryview(content[0x12000]), 1)
    content[0x9000] = rng.randbytes(PAGE_SIZE)
    store.write(2, 0x9000, memoryview(content[0x9000]), 1)
    images = tmp_path / "images"
    images.mkdir()
    _pagemap(images / "pagemap-2.img", 4, [(0x9000, 1, PE_PRESENT), (0x10000, 3, PE_PRESENT),
                                           (0x13000, 5, PE_PRESENT)])
    assert store.build_pages_images(str(images)) == 1 and store.pages_in_parent == 8
    assert os.readlink(images / "parent") == "../store/parent"
    assert (images / "pages-4.img").read_bytes() == content[0x9000]
    assert _restored_pages(str(images), 2) == content
    store.close()


def test_a_new_process_is_copied_whole(tmp_path):
    store = PageStore(str(tmp_path / "store"))
    store.write(1, 0x1000, memoryview(_page(1)), 1)
    store.compact()
    store.write(7, 0x5000, memoryview(_page(5) + _page(6)), 2)     # came in the final round
    images = tmp_path / "images"
    images.mkdir()
    _pagemap(images / "pagemap-1.img", 1, [(0x1000, 1, PE_PRESENT)])
    _pagemap(images / "pagemap-7.img", 2, [(0x5000, 2, PE_PRESENT)])
    assert store.build_pages_images(str(images)) == 2
    assert _restored_pages(str(images), 7) == {0x5000: _page(5), 0x6000: _page(6)}
    assert _restored_pages(str(images), 1) == {0x1000: _page(1)}
    store.close()


def test_the_page_server_keeps_only_changed_pages_and_writes_criu_s_pagemaps(tmp_path):
    """CRIU's side of the protocol played by hand (criu/page-xfer.c)."""
    import socket
    import struct

    from migrate.migration.content import pageserver as ps
    from migrate.migration.content.rounds import RoundStats
    from migrate.migration.content.store import pagemap_entries

    def iov(cmd, nr=0, vaddr=0, dst_id=0, flags=0):
        return ps.IOV.pack(flags << ps.PS_CMD_BITS | cmd, nr, vaddr, dst_id)

    mirror = Mirror()
    old = [_page(1), _page(2), _page(3)]
    from xxhash import xxh3_64_intdigest

    list(mirror.changed(7, 0x10000, [xxh3_64_intdigest(p) for p in old]))
    criu, ours = socket.socketpair()
    stats = RoundStats()
    server = ps.DedupPageServer(ours, str(tmp_path), mirror, stats).start()
    pid7 = 7 << ps.PS_TYPE_BITS | ps.PS_TYPE_PID
    shm = 9 << ps.PS_TYPE_BITS | ps.PS_TYPE_SHMEM
    criu.sendall(iov(ps.PS_IOV_OPEN2, dst_id=pid7))
    assert criu.recv(1) == b"\0"
    # pages 1 and 3 as the destination has them, page 2 changed
    criu.sendall(iov(ps.PS_IOV_ADD_F, 3, 0x10000, pid7, ps.PE_PRESENT)
                 + _page(1) + _page(20) + _page(3))
    criu.sendall(iov(ps.PS_IOV_ADD_F, 2, 0x20000, pid7, ps.PE_LAZY))
    criu.sendall(iov(ps.PS_IOV_OPEN2, dst_id=shm))
    assert criu.recv(1) == b"\0"
    criu.sendall(iov(ps.PS_IOV_ADD_F, 1, 0x0, shm, ps.PE_PRESENT) + _page(5))
    criu.sendall(iov(ps.PS_IOV_CLOSE))
    assert struct.unpack("=i", criu.recv(4)) == (0,)
    assert server.join(5) and server.error is None and server.closed
    got, sink = _collect()
    reader = RecordReader(sink)
    for rec in server.records:
        reader.feed(rec)
    reader.finish()
    assert got == [(7, 0x11000, _page(20), 1)]
    assert stats.pages_scanned == 3 and stats.pages_changed == 1
    assert pagemap_entries(str(tmp_path / "pagemap-7.img")) == (
        1, [(0x10000, 3, ps.PE_PRESENT), (0x20000, 2, ps.PE_LAZY)])
    assert pagemap_entries(str(tmp_path / "pagemap-shmem-9.img")) == (2, [(0, 1, ps.PE_PRESENT)])
    assert (tmp_path / "pages-2.img").read_bytes() == _page(5)
    assert not (tmp_path / "pages-1.img").exists()      # process pages stay out
    criu.close()


def test_the_page_server_fails_the_dump_when_the_stream_breaks(tmp_path):
    import socket

    from migrate.migration.content import pageserver as ps
    from migrate.migration.content.rounds import RoundStats

    criu, ours = socket.socketpair()
    server = ps.DedupPageServer(ours, str(tmp_path), Mirror(), RoundStats()).start()
    pid = 1 << ps.PS_TYPE_BITS | ps.PS_TYPE_PID
    criu.sendall(ps.IOV.pack(ps.PS_IOV_ADD_F | ps.PE_PRESENT << ps.PS_CMD_BITS, 2, 0x1000, pid)
                 + _page(1))
    criu.shutdown(socket.SHUT_WR)
    assert server.join(5) and not server.closed
    assert "ended inside a command" in str(server.error)
    criu.close()


def _out_of_order_compacted_store(tmp_path, rng):
    store = PageStore(str(tmp_path / "store"))
    content = {v: rng.randbytes(PAGE_SIZE) for v in range(0x10000, 0x18000, PAGE_SIZE)}
    for v in sorted(content, reverse=True):
        store.write(2, v, memoryview(content[v]), 1)
    assert store.compact() == 8
    return store, content


def test_pieces_split_a_run_by_the_compacted_layout():
    from migrate.migration.content.store import _pieces

    layout = [(0x10000, 3), (0x14000, 2)]
    assert list(_pieces(layout, 0x10000, 3)) == [(0x10000, 3, True)]
    assert list(_pieces(layout, 0xe000, 8)) == [(0xe000, 2, False), (0x10000, 3, True),
                                                (0x13000, 1, False), (0x14000, 2, True)]
    assert list(_pieces(layout, 0x15000, 4)) == [(0x15000, 1, True), (0x16000, 3, False)]
    assert list(_pieces([], 0x1000, 2)) == [(0x1000, 2, False)]


def test_a_lazy_build_links_the_compacted_store_and_copies_only_new_pages(tmp_path):
    """The compacted file itself becomes the pages image (same inode, nothing
    copied); the dump's PE_LAZY flags stay, so a local lazy-pages daemon
    serves those pages; a page new since compacting goes to a small parent."""
    from migrate.migration.content.store import pagemap_entries

    rng = random.Random(6)
    store, content = _out_of_order_compacted_store(tmp_path, rng)
    content[0x12000] = rng.randbytes(PAGE_SIZE)         # changed: rewritten in place
    store.write(2, 0x12000, memoryview(content[0x12000]), 1)
    content[0x9000] = rng.randbytes(PAGE_SIZE)          # new (the parasite's COW)
    store.write(2, 0x9000, memoryview(content[0x9000]), 1)
    images = tmp_path / "images"
    images.mkdir()
    lazy = PE_PRESENT | PE_LAZY
    _pagemap(images / "pagemap-2.img", 4, [(0x9000, 1, PE_PRESENT), (0x10000, 3, lazy),
                                           (0x13000, 5, lazy)])
    assert store.build_pages_images(str(images), lazy=True) == 1
    assert (store.pages_lazy, store.pages_in_parent) == (8, 0)
    assert os.path.samefile(images / "pages-4.img", tmp_path / "store" / "pages-2.img")
    assert pagemap_entries(str(images / "pagemap-2.img"))[1] == [
        (0x9000, 1, PE_PARENT), (0x10000, 3, lazy), (0x13000, 5, lazy)]
    assert os.readlink(images / "parent") == "../store/parent"
    # the new page is after the compacted ones in the store file: ignored there
    assert _restored_pages(str(images), 2, exact=False) == content
    store.close()


def test_a_process_whose_dump_lacks_a_page_of_the_store_keeps_the_parent_layout(tmp_path):
    """A page the store holds but the dump has not would shift every later
    page of a linked file: that process is built with the store as its
    parent (restored at once), another one in the same dump is linked."""
    rng = random.Random(7)
    store, content = _out_of_order_compacted_store(tmp_path, rng)
    store.write(3, 0x1000, memoryview(_page(1)), 1)
    assert store.compact() == 0         # both in vaddr order by now
    del content[0x13000]            # unmapped before the final dump
    images = tmp_path / "images"
    images.mkdir()
    _pagemap(images / "pagemap-2.img", 4, [(0x10000, 3, PE_PRESENT | PE_LAZY),
                                           (0x14000, 4, PE_PRESENT | PE_LAZY)])
    _pagemap(images / "pagemap-3.img", 5, [(0x1000, 1, PE_PRESENT | PE_LAZY)])
    assert store.build_pages_images(str(images), lazy=True) == 0
    assert (store.pages_lazy, store.pages_in_parent) == (1, 8)
    from migrate.migration.content.store import pagemap_entries

    assert pagemap_entries(str(images / "pagemap-2.img"))[1] == [
        (0x10000, 3, PE_PARENT), (0x14000, 4, PE_PARENT)]
    assert (images / "pages-4.img").read_bytes() == b""
    assert _restored_pages(str(images), 2) == content
    assert os.path.samefile(images / "pages-5.img", tmp_path / "store" / "pages-3.img")
    assert _restored_pages(str(images), 3) == {0x1000: _page(1)}
    store.close()


def test_a_process_new_in_the_final_round_is_copied_in_a_lazy_build(tmp_path):
    store = PageStore(str(tmp_path / "store"))
    store.write(1, 0x1000, memoryview(_page(1)), 1)
    store.compact()
    store.write(7, 0x5000, memoryview(_page(5)), 1)     # a process new in the final round
    images = tmp_path / "images"
    images.mkdir()
    _pagemap(images / "pagemap-1.img", 1, [(0x1000, 1, PE_PRESENT | PE_LAZY)])
    _pagemap(images / "pagemap-7.img", 2, [(0x5000, 1, PE_PRESENT | PE_LAZY)])
    assert store.build_pages_images(str(images), lazy=True) == 1
    assert store.pages_lazy == 1
    assert _restored_pages(str(images), 7) == {0x5000: _page(5)}
    assert _restored_pages(str(images), 1) == {0x1000: _page(1)}
    store.close()


def test_compacting_a_store_in_vaddr_order_copies_nothing(tmp_path):
    store = PageStore(str(tmp_path / "store"))
    store.write(1, 0x10000, memoryview(_page(1) + _page(2)), 2)
    store.write(1, 0x20000, memoryview(_page(3)), 1)
    store.write(1, 0x10000, memoryview(_page(4)), 1)        # rewritten in its slot
    inode = os.stat(tmp_path / "store" / "pages-1.img").st_ino
    assert store.compact() == 0
    assert os.stat(tmp_path / "store" / "pages-1.img").st_ino == inode
    images = tmp_path / "images"
    images.mkdir()
    _pagemap(images / "pagemap-1.img", 2, [(0x10000, 2, PE_PRESENT | PE_LAZY),
                                           (0x20000, 1, PE_PRESENT | PE_LAZY)])
    assert store.build_pages_images(str(images), lazy=True) == 0 and store.pages_lazy == 3
    assert _restored_pages(str(images), 1) == {0x10000: _page(4), 0x11000: _page(2),
                                               0x20000: _page(3)}
    store.close()


# -- whether another round pays (rounds.another_round) -------------------------------------

def test_a_round_that_costs_more_than_it_saves_is_skipped():
    from migrate.migration.content.rounds import RoundCost, another_round

    # 64 MiB unshaped, as measured: round 1 0.3 s, a scan 60 ms, ~2 MiB changed since
    cost = RoundCost(shipped=64 << 20, seconds=0.3, fixed=0.06)
    go_on, why = another_round(cost, 2 << 20)
    assert not go_on
    assert why.startswith("another round would not pay") and "2.0 MiB changed" in why
    assert "9 ms to ship frozen" in why and "213 MiB/s" in why and "60 ms" in why


def test_a_round_pays_when_round_1_was_long_and_much_changed():
    from migrate.migration.content.rounds import RoundCost, another_round

    # 1 GiB at 1 Gbit/s: round 1 ~9 s, ~68 MiB changed meanwhile, a scan 0.5 s
    cost = RoundCost(shipped=1 << 30, seconds=9.0, fixed=0.5)
    go_on, why = another_round(cost, 68 << 20)
    assert go_on and why.startswith("another round pays") and "598 ms" in why
    # even when the machine is loaded and the scan takes twice as long
    assert another_round(RoundCost(shipped=1 << 30, seconds=9.0, fixed=1.0), 68 << 20)[0]


@pytest.mark.parametrize("fixed, changed, weight, expected", [
    (0.1, 0, 2.0, False),               # nothing changed: never pays
    (0.1, 64 << 20, 2.0, True),         # all changed: saves round 1's 1 s
    (0.5, 16 << 20, 2.0, False),        # saves 0.25 s, weighed 0.5 s: not more than 0.5 s
    (0.5, 16 << 20, 3.0, True),         # a heavier frozen second tips it
    (1.5, 64 << 20, 1.0, False),        # round 1 took less than a round's fixed cost
])
def test_another_round_weighs_the_frozen_seconds_saved_against_the_scan(fixed, changed, weight,
                                                                        expected):
    from migrate.migration.content.rounds import RoundCost, another_round

    cost = RoundCost(shipped=64 << 20, seconds=1.0, fixed=fixed)
    assert another_round(cost, changed, weight=weight)[0] is expected


def test_a_sample_estimates_the_changed_pages_of_the_whole():
    from migrate.migration.content.rounds import Sample

    assert Sample(sampled=1024, changed=32, new=10).pages(16384) == 512 + 10
    assert Sample(sampled=0, new=7).pages(0) == 7


def test_pagemaps_are_written_byte_for_byte_as_pycriu_writes_them():
    import io

    images = pytest.importorskip("pycriu.images")
    from migrate.migration.content.store import encode_pagemap

    rng = random.Random(14)
    for entries in ([], [(0x400000, 1, PE_PRESENT)],
                    [(rng.randrange(1 << 47) & ~0xfff, rng.randrange(1, 1 << 20),
                      rng.choice([0, PE_PRESENT, PE_PARENT, PE_LAZY | PE_PRESENT]))
                     for _ in range(50)] + [(0x7ff000000000, (1 << 32) + 5, PE_PRESENT)]):
        pages_id = rng.randrange(1 << 20)
        want = io.BytesIO()
        images.dump({"magic": "PAGEMAP", "entries": [{"pages_id": pages_id}] + [
            {"vaddr": v, "compat_nr_pages": min(n, 0xffffffff), "nr_pages": n, "flags": fl}
            for v, n, fl in entries]}, want)
        assert encode_pagemap(pages_id, entries) == want.getvalue()
