"""tmpcopyup's copy (runtime/copyup.py) between two temp directories."""

import os
import stat

import pytest

from migrate.runtime.copyup import copy_tree


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "sub" / "deeper" / "file").write_bytes(b"x" * 200_000)
    (src / "script").write_text("#!/bin/sh\n")
    (src / "script").chmod(0o4750)
    (src / "link").symlink_to("/etc/passwd")        # copied as a link, never followed
    (src / "dangling").symlink_to("nowhere")
    os.mkfifo(src / "fifo", 0o640)
    (src / "sub").chmod(0o711)
    src.chmod(0o1777)
    dst = tmp_path / "dst"
    dst.mkdir()
    return src, dst


def _copy(src, dst, **kw):
    s = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    d = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copy_tree(s, d, **kw)
    finally:
        os.close(s)
        os.close(d)


def test_copy_keeps_content_types_and_modes(tree):
    src, dst = tree
    _copy(src, dst)
    assert sorted(os.listdir(dst)) == ["dangling", "fifo", "link", "script", "sub"]
    assert (dst / "sub" / "deeper" / "file").read_bytes() == b"x" * 200_000
    assert os.readlink(dst / "link") == "/etc/passwd"
    assert os.readlink(dst / "dangling") == "nowhere"
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    for rel in ("", "sub", "script", "fifo", "sub/deeper/file"):
        s, d = os.lstat(src / rel), os.lstat(dst / rel)
        assert stat.S_IMODE(d.st_mode) == stat.S_IMODE(s.st_mode), rel
        assert (d.st_uid, d.st_gid) == (s.st_uid, s.st_gid), rel


def test_copy_can_leave_the_top_directory_alone(tree):
    src, dst = tree
    dst.chmod(0o750)
    _copy(src, dst, top_attributes=False)
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o750
    assert (dst / "script").exists()


def test_copy_into_a_non_empty_directory_fails(tree):
    src, dst = tree
    (dst / "script").write_text("")
    with pytest.raises(FileExistsError):
        _copy(src, dst)
