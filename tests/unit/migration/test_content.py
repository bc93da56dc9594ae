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
            {"vaddr": v, "nr_pages": n, "compat_nr_pages": n, "flags": fl} for v, n, fl in entries]}, f)


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
    # A parent/lazy entry is not in pages-N.img; the present ones are, in order.
    _pagemap(images / "pagemap-5.img", 3, [(0x8000, 1, PE_PRESENT), (0x9000, 2, PE_PARENT),
                                           (0x10000, 16, PE_PRESENT), (0x30000, 1, PE_LAZY)])
    assert store.build_pages_images(str(images)) == 17
    want = content[0x8000] + b"".join(content[v] for v in range(0x10000, 0x20000, PAGE_SIZE))
    assert (images / "pages-3.img").read_bytes() == want
    store.close()


def test_store_refuses_to_invent_a_page(tmp_path):
    store = PageStore(str(tmp_path / "store"))
    store.write(1, 0x1000, memoryview(_page(1)), 1)
    images = tmp_path / "images"
    images.mkdir()
    _pagemap(images / "pagemap-1.img", 1, [(0x1000, 2, PE_PRESENT)])
    with pytest.raises(MigrationError, match="lacks page 0x2000 of process 1"):
        store.build_pages_images(str(images))
    assert os.path.exists(images / "pages-1.img")
    store.close()


def test_final_round_ships_only_what_the_destination_lacks_and_rebuilds_the_image(pair, tmp_path):
    """The final round end to end without CRIU: a dump's pagemap + pages
    image on the source, a store that already holds most pages at the
    destination; only the changed pages cross, and the rebuilt pages image
    is the source's byte for byte."""
    from types import SimpleNamespace

    from migrate.migration.content import destination
    from migrate.migration.content.precopy import ship
    from migrate.migration.content.rounds import RoundStats, image_round, shipped_files
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
    (images / "pages-2.img").write_bytes(b"".join(pages[v] for v in sorted(pages)))

    workdir = tmp_path / "dst"
    (workdir / "images").mkdir(parents=True)
    incoming = Incoming(conn=dst_conn, workdir=str(workdir), prepare=None)
    controls = destination.controls()

    def serve(n):
        out = []
        for _ in range(n):
            h = dst_conn.recv(Kind.CONTROL).header
            dst_conn.send(Kind.REPLY, controls[h["op"]](incoming, h))
            out.append(h["op"])
        return out

    m = SimpleNamespace(conn=src_conn)
    mirror = Mirror()
    # Round "live": the destination gets everything once.
    agent = Background(lambda: serve(1))
    first = RoundStats()
    reply, _ = ship(m, image_round(str(images), mirror, first), label="round-1")
    assert agent.result() == ["content_pages"]
    assert reply["pages"] == 64 and reply["zero_pages"] == 1 and first.pages_changed == 65
    # Three pages change before the final dump.
    for v in (0x401000, 0x402000, 0x43f000):
        pages[v] = rng.randbytes(PAGE_SIZE)
    (images / "pages-2.img").write_bytes(b"".join(pages[v] for v in sorted(pages)))
    final = RoundStats()
    agent = Background(lambda: serve(1))
    reply, sent = ship(m, image_round(str(images), mirror, final), label="final")
    agent.result()
    assert final.pages_scanned == 65 and final.pages_changed == 3 == reply["pages"]
    assert sent.raw < 4 * PAGE_SIZE
    assert shipped_files(str(images)) == ["pages-2.img"]
    # The destination gets the pagemap (as send_images would), rebuilds.
    (workdir / "images" / "pagemap-1.img").write_bytes((images / "pagemap-1.img").read_bytes())
    built = controls["content_build"](incoming, {"dir": "images"})
    assert built == {"pages": 65}
    assert (workdir / "images" / "pages-2.img").read_bytes() == (images / "pages-2.img").read_bytes()
    assert incoming.cleanup() == []
