"""read_entries: CRIU image files read with our message tables (no CRIU, no
protobuf); images are written with pycriu's own writer."""

import subprocess
import sys

import pytest

from migrate.criu_rpc.images import KINDS, _IMG_COMMON, _IMG_SERVICE, read_entries
from migrate.errors import NotFoundError, UsageError

MOUNTS = [{"fstype": 5, "mnt_id": 13, "root_dev": 1, "parent_mnt_id": 1, "flags": 0,
           "root": "/", "mountpoint": "/dev", "source": "tmpfs", "options": ""},
          {"fstype": 16, "mnt_id": 14, "root_dev": 2, "parent_mnt_id": 13, "flags": 0,
           "root": "/", "mountpoint": "/dev/data", "source": "none", "options": "",
           "ext_key": "/data"}]


def _write(path, magic, entries):
    from pycriu import images

    with open(path, "wb") as f:
        images.dump({"magic": magic, "entries": entries}, f)
    return str(path)


def test_magics_are_pycrius():
    from pycriu.images import magic

    assert _IMG_COMMON == magic.by_name["IMG_COMMON"]
    assert _IMG_SERVICE == magic.by_name["IMG_SERVICE"]
    for kind, (value, _stem, _message) in KINDS.items():
        assert magic.by_name[kind] == value, kind


def test_reads_what_pycriu_reads(tmp_path):
    path = _write(tmp_path / "mountpoints-13.img", "MNTS", MOUNTS)
    entries = read_entries(path, "MNTS")
    assert [(e.mountpoint, e.ext_key, e.mnt_id) for e in entries] == \
        [("/dev", "", 13), ("/dev/data", "/data", 14)]
    assert not entries[0].has("ext_key")
    net = _write(tmp_path / "netns-10.img", "NETNS", [{"ext_key": "extRootNetNS"}, {}])
    assert [e.ext_key for e in read_entries(net, "NETNS")] == ["extRootNetNS", ""]


def test_inventory_pstree_and_ids(tmp_path):
    """The inventory comes without IMG_COMMON; its uptime is a uint64."""
    ids = {"vm_id": 1, "files_id": 2, "fs_id": 3, "sighand_id": 4, "net_ns_id": 0xF0000001}
    inv = _write(tmp_path / "inventory.img", "INVENTORY", [
        {"img_version": 2, "root_ids": ids, "lsmtype": "APPARMOR", "dump_uptime": (1 << 63) + 5,
         "plugins_entry": {"plugins": ["amdgpu"]}}])
    (entry,) = read_entries(inv, "INVENTORY")
    assert (entry.img_version, entry.root_ids.net_ns_id, entry.lsmtype, entry.dump_uptime,
            entry.plugins_entry.plugins) == (2, 0xF0000001, 2, (1 << 63) + 5, ["amdgpu"])
    tree = _write(tmp_path / "pstree.img", "PSTREE", [
        {"pid": 7, "ppid": 0, "pgid": 7, "sid": 7, "threads": [7, 8]}])
    assert [(e.pid, e.threads) for e in read_entries(tree, "PSTREE")] == [(7, [7, 8])]
    (task,) = read_entries(_write(tmp_path / "ids-7.img", "IDS", [ids]), "IDS")
    assert (task.files_id, task.net_ns_id, task.has("uts_ns_id")) == (2, 0xF0000001, False)


def test_an_empty_image_has_no_entries(tmp_path):
    assert read_entries(_write(tmp_path / "m.img", "MNTS", []), "MNTS") == []


def test_another_kind_of_image_is_refused(tmp_path):
    path = _write(tmp_path / "netns-10.img", "NETNS", [{}])
    with pytest.raises(UsageError, match="netns-10.img is corrupt: not a CRIU MNTS image"):
        read_entries(path, "MNTS")


@pytest.mark.parametrize("cut, message", [(2, "not a CRIU MNTS image"), (10, "truncated at"),
                                          (-3, "truncated entry")])
def test_truncated_images(tmp_path, cut, message):
    blob = open(_write(tmp_path / "whole.img", "MNTS", MOUNTS), "rb").read()
    path = tmp_path / "cut.img"
    path.write_bytes(blob[:cut])
    with pytest.raises(UsageError, match=message):
        read_entries(str(path), "MNTS")


def test_garbage_in_an_entry(tmp_path):
    path = _write(tmp_path / "m.img", "MNTS", MOUNTS[:1])
    blob = bytearray(open(path, "rb").read())
    blob[12:] = b"\xff" * (len(blob) - 12)
    (tmp_path / "bad.img").write_bytes(bytes(blob))
    with pytest.raises(UsageError, match="bad.img is corrupt"):
        read_entries(str(tmp_path / "bad.img"), "MNTS")


def test_missing_image(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        read_entries(str(tmp_path / "mountpoints-1.img"), "MNTS")


def _without_protobuf(code: str) -> str:
    """Run ``code`` in a fresh interpreter, check it imported neither
    protobuf nor pycriu, and return what it printed."""
    code += ("import sys\n"
             "bad = [m for m in sys.modules if m.startswith(('google', 'pycriu'))]\n"
             "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_reading_imports_neither_protobuf_nor_pycriu(tmp_path):
    path = _write(tmp_path / "mountpoints-13.img", "MNTS", MOUNTS)
    net = _write(tmp_path / "netns-10.img", "NETNS", [{"ext_key": "extRootNetNS"}])
    _without_protobuf("from migrate.criu_rpc.images import read_entries\n"
                      f"assert read_entries({path!r}, 'MNTS')[1].ext_key == '/data'\n"
                      f"assert read_entries({net!r}, 'NETNS')[0].ext_key == 'extRootNetNS'\n")


DUMP_STATS = {"freezing_time": 1200, "frozen_time": 150000, "memdump_time": 900,
              "memwrite_time": 300, "pages_scanned": 262144, "pages_skipped_parent": 0,
              "pages_written": 12, "pages_lazy": 262100, "page_pipes": 3, "page_pipe_bufs": 9}


def test_stats_read_as_pycriu_reads_them(tmp_path):
    """read_stats gives pycriu's flat dict of what CRIU wrote, for both kinds,
    and without importing protobuf or pycriu (it runs after a migration's
    last page, where those imports cost ~70 ms)."""
    from pycriu import images

    _write(tmp_path / "stats-dump", "STATS", [{"dump": DUMP_STATS}])
    restore = {"pages_compared": 5, "pages_skipped_cow": 1, "forking_time": 7, "restore_time": 9}
    _write(tmp_path / "stats-restore", "STATS", [{"restore": restore}])
    with open(tmp_path / "stats-dump", "rb") as f:
        theirs = dict(images.load(f)["entries"][0]["dump"])
    printed = _without_protobuf("import json\n"
                                "from migrate.checkpoint.stats import read_stats\n"
                                f"print(json.dumps([read_stats({str(tmp_path)!r}, 'dump'), "
                                f"read_stats({str(tmp_path)!r}, 'restore')]))\n")
    import json

    dump, rest = json.loads(printed)
    assert dump == theirs == DUMP_STATS
    assert rest == restore


def test_stats_errors(tmp_path):
    from migrate.checkpoint.dump import read_dump_stats
    from migrate.checkpoint.stats import read_stats

    with pytest.raises(NotFoundError):
        read_stats(str(tmp_path), "dump")
    assert read_dump_stats(str(tmp_path)) == {}
    _write(tmp_path / "stats-dump", "MNTS", MOUNTS)
    with pytest.raises(UsageError, match="not a CRIU STATS image"):
        read_stats(str(tmp_path), "dump")
    assert read_dump_stats(str(tmp_path)) == {}
    _write(tmp_path / "stats-dump", "STATS", [{"restore": {"pages_compared": 1, "pages_skipped_cow": 0,
                                                           "forking_time": 1, "restore_time": 1}}])
    assert read_stats(str(tmp_path), "dump") == {}


def test_a_pagemap_starts_with_its_head(tmp_path):
    """PAGEMAP's first entry is a pagemap_head; the pages of the others, but
    those in a parent, are what a lazy dump leaves to be pulled (its stats
    say 0 in CRIU 4.2.1)."""
    from migrate.migration.pipeline import _pagemap_pages

    _write(tmp_path / "pagemap-7.img", "PAGEMAP", [
        {"pages_id": 3},
        {"vaddr": 0x400000, "compat_nr_pages": 0, "nr_pages": 5, "flags": "PE_PRESENT | PE_LAZY"},
        {"vaddr": 0x500000, "compat_nr_pages": 0, "nr_pages": 7, "flags": "PE_PARENT"},
        {"vaddr": 0x600000, "compat_nr_pages": 2, "in_parent": False}])
    head, *entries = read_entries(str(tmp_path / "pagemap-7.img"), "PAGEMAP")
    assert head.pages_id == 3
    assert [(e.vaddr, e.nr_pages, e.flags) for e in entries] == \
        [(0x400000, 5, 6), (0x500000, 7, 1), (0x600000, 0, 0)]
    _write(tmp_path / "pagemap-8.img", "PAGEMAP", [{"pages_id": 4}, {
        "vaddr": 0x1000, "compat_nr_pages": 0, "nr_pages": 1 << 33, "flags": "PE_PRESENT"}])
    (tmp_path / "pagemap-9.img").write_bytes(b"garbage")     # skipped, as before
    assert _pagemap_pages(str(tmp_path)) == 5 + 2 + (1 << 33)
