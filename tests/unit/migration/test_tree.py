"""Tree streams: copies, the changes pass, deletions, and escape attempts."""

from __future__ import annotations

import os
import stat

import pytest

from migrate.errors import MigrationError, ProtocolError
from migrate.migration.tree import TreeSnapshot, TreeWriter, check_relpath, encode_entry, encode_tree
from migration_helpers import Background


def make_tree(root):
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("box\n")
    (root / "etc" / "empty").write_bytes(b"")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(os.urandom(300_000))
    (root / "bin" / "tool").chmod(0o4755)
    (root / "lnk").symlink_to("/etc/hostname")
    (root / "dangling").symlink_to("../nowhere")
    os.mkfifo(root / "fifo", 0o640)
    (root / "deep" / "er" / "est").mkdir(parents=True)
    (root / "deep" / "er" / "est" / "f").write_text("x")
    (root / "ro").mkdir(mode=0o555)
    os.utime(root / "etc" / "hostname", ns=(1_000_000_000, 1_500_000_000_123))
    os.utime(root / "deep", ns=(1_000_000_000, 1_600_000_000_000))


def copy(src, dst, **kw):
    snapshot = TreeSnapshot(root=str(src))
    data = b"".join(encode_tree(str(src), snapshot=snapshot, racy_ns=0, **kw))
    with TreeWriter(str(dst)) as w:
        # Odd chunk sizes: records and contents are split anywhere.
        for i in range(0, len(data), 777):
            w.feed(data[i:i + 777])
        stats = w.finish()
    return snapshot, stats


def listing(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            content = None
            if stat.S_ISREG(st.st_mode):
                content = open(p, "rb").read()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            mtime = None if stat.S_ISDIR(st.st_mode) and n == "ro" else st.st_mtime_ns
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), content, mtime)
    return out


def test_full_copy_keeps_content_types_modes_and_times(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    _, stats = copy(src, dst)
    assert listing(dst) == listing(src)
    assert os.stat(dst / "etc" / "hostname").st_mtime_ns == 1_500_000_000_123
    assert os.stat(dst / "deep").st_mtime_ns == 1_600_000_000_000  # set after its children
    assert stat.S_IMODE(os.stat(dst / "bin" / "tool").st_mode) == 0o4755
    assert (stats.files, stats.symlinks, stats.specials) == (4, 2, 1)
    assert stats.bytes == 300_000 + 4 + 1


def test_changes_pass_sends_only_changes_and_deletions(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    snapshot, _ = copy(src, dst)
    (src / "etc" / "hostname").write_text("renamed-box\n")   # changed (size, times)
    (src / "new").write_text("new file")                      # added
    os.unlink(src / "dangling")                                # deleted
    import shutil
    shutil.rmtree(src / "deep")                                # deleted subtree
    (src / "lnk").unlink()
    (src / "lnk").mkdir()                                      # symlink became a directory
    sent = b"".join(encode_tree(str(src), since=snapshot, racy_ns=0))
    # Unchanged content is not sent again.
    assert b"lnk" in sent and b"renamed-box" in sent and len(sent) < 10_000
    with TreeWriter(str(dst)) as w:
        w.feed(sent)
        stats = w.finish()
    assert listing(dst) == listing(src)
    # "deep" goes as one deletion (its subtree with it), "dangling" as another.
    assert stats.deleted == 2


def test_changes_since_a_time(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    (src / "etc" / "hostname").write_text("later\n")
    since = os.stat(src / "etc" / "hostname").st_ctime_ns
    sent = b"".join(encode_tree(str(src), since=since))
    assert b"later" in sent and b'"path":"bin/tool"' not in sent


def test_racy_entries_are_sent_again(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    snapshot = TreeSnapshot(root=str(src))
    b"".join(encode_tree(str(src), snapshot=snapshot))   # default: 1 s racy window
    again = b"".join(encode_tree(str(src), since=snapshot))
    assert b'"path":"bin/tool"' in again   # just written: cannot be trusted unchanged


def test_a_file_that_shrinks_while_read_is_padded_and_resent(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f").write_bytes(b"a" * 100)
    real_read = os.read

    def short_read(fd, n):
        data = real_read(fd, n)
        return data[:60]

    monkeypatch.setattr(os, "read", short_read)
    snapshot = TreeSnapshot(root=str(src))
    data = b"".join(encode_tree(str(src), snapshot=snapshot, racy_ns=0))
    monkeypatch.undo()
    with TreeWriter(str(dst)) as w:
        w.feed(data)
        w.finish()
    assert (dst / "f").read_bytes() == b"a" * 60 + bytes(40)   # stream stays in step
    assert snapshot.entries["f"].racy


def test_dest_entries_are_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep me")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "f").symlink_to(outside)
    with TreeWriter(str(dst)) as w:
        w.feed(encode_entry({"op": "put", "path": "f", "type": "file", "mode": 0o644,
                             "uid": 0, "gid": 0, "mtime_ns": 0, "size": 3}) + b"new")
        w.finish()
    assert outside.read_text() == "keep me"
    assert not (dst / "f").is_symlink() and (dst / "f").read_text() == "new"


def put(path, kind="file", **kw):
    entry = {"op": "put", "path": path, "type": kind, "mode": 0o644, "uid": 0, "gid": 0,
             "mtime_ns": 0, **kw}
    if kind == "file":
        entry.setdefault("size", 0)
    return encode_entry(entry)


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.",
                                  "", "a\0b", 7])
def test_escaping_paths_are_refused(tmp_path, path):
    with TreeWriter(str(tmp_path / "dst")) as w, pytest.raises(ProtocolError, match="refusing"):
        w.feed(put(path))


def test_no_write_through_a_symlinked_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with TreeWriter(str(tmp_path / "dst")) as w:
        w.feed(put("a", "symlink", target=str(outside)))
        with pytest.raises(ProtocolError, match="'a' is not a directory"):
            w.feed(put("a/evil", size=4) + b"evil")
    assert os.listdir(outside) == []


def test_no_delete_through_a_symlinked_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("v")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "a").symlink_to(outside)
    with TreeWriter(str(dst)) as w, pytest.raises(ProtocolError, match="is not a directory"):
        w.feed(encode_entry({"op": "delete", "path": "a/victim"}))
    assert (outside / "victim").exists()


def test_the_root_cannot_be_deleted(tmp_path):
    with TreeWriter(str(tmp_path / "dst")) as w, pytest.raises(ProtocolError, match="root"):
        w.feed(encode_entry({"op": "delete", "path": "."}))


def test_a_symlink_as_the_destination_root_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "dst").symlink_to(tmp_path / "real")
    with pytest.raises(MigrationError, match="dst"):
        TreeWriter(str(tmp_path / "dst"))


@pytest.mark.parametrize("data,words", [
    (put("f", size=10) + b"short", "ended in the middle"),
    (b"\x00\x00", "ended in the middle"),
    (encode_entry({"op": "chmod", "path": "f"}), "unknown tree operation"),
    (put("f", "socketpair"), "unknown type"),
    (put("f", size=-1), "bad size"),
    (put("f", "chr", rdev="1:3"), "bad rdev"),
    (encode_entry({"op": "put", "path": "f", "type": "file", "mode": "0644"}), "not an integer"),
    (b"\x7f\xff\xff\xff", "over the limit"),
    (b"\x00\x00\x00\x02{]", "bad tree entry"),
    (put("a", "symlink", target=""), "bad symlink target"),
])
def test_malformed_streams(tmp_path, data, words):
    with TreeWriter(str(tmp_path / "dst")) as w, pytest.raises(ProtocolError, match=words):
        w.feed(data)
        w.finish()


def test_missing_parent_is_an_error(tmp_path):
    with TreeWriter(str(tmp_path / "dst")) as w, pytest.raises(MigrationError, match="open"):
        w.feed(put("no/such/file"))


@pytest.mark.parametrize("path,ok", [("a/b", True), ("a", True), (".", True),
                                     ("a/../b", False), ("/a", False)])
def test_check_relpath(path, ok):
    if ok:
        check_relpath(path, phase="t")
    else:
        with pytest.raises(ProtocolError):
            check_relpath(path, phase="t")


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and owners need root")
def test_devices_and_owners_as_root(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (src / "owned").write_text("x")
    os.chown(src / "owned", 1234, 5678)
    copy(src, dst)
    st = os.stat(dst / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert (os.stat(dst / "owned").st_uid, os.stat(dst / "owned").st_gid) == (1234, 5678)


def test_tree_over_a_connection(pair, tmp_path):
    src_conn, dst_conn = pair
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    sender = Background(lambda: src_conn.send_tree(str(src), label="rootfs", racy_ns=0))
    header, stats = dst_conn.recv_tree(str(dst))
    snapshot, sent_stats, counts = sender.result()
    assert header["label"] == "rootfs" and header["pass"] == "full"
    assert listing(dst) == listing(src)
    assert stats.files == sent_stats.files == 4 and counts.raw > 300_000
    (src / "etc" / "hostname").write_text("changed!\n")
    sender = Background(lambda: src_conn.send_tree(str(src), only_changed_since=snapshot,
                                                   label="rootfs"))
    header, stats = dst_conn.recv_tree(str(dst))
    sender.result()
    assert header["pass"] == "changes" and stats.files == 1
    assert (dst / "etc" / "hostname").read_text() == "changed!\n"


def test_an_escape_attempt_over_a_connection_tells_the_sender(pair, tmp_path):
    src_conn, dst_conn = pair
    sender = Background(lambda: src_conn.send_stream(
        {"what": "tree", "label": "x"}, [put("../../etc/evil", size=1) + b"!"]))
    with pytest.raises(ProtocolError, match="refusing path '../../etc/evil'"):
        dst_conn.recv_tree(str(tmp_path / "dst"))
    sender.result()
    dst_conn.send_error("refusing path '../../etc/evil'")
    with pytest.raises(MigrationError, match="the destination failed .*refusing path"):
        src_conn.recv()
