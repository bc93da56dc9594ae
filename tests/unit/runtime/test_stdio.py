"""The record of an init's stdio (runtime/stdio.py), from a fake /proc/PID."""

import os
import stat

from migrate.runtime.stdio import fd_identity, fdinfo_mnt_id, init_stdio


def _fake_proc(tmp_path, pid=42):
    """fd 0 a file of ours (mnt_id 27), fd 1 a pipe, fd 2 closed."""
    d = tmp_path / "proc" / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "fdinfo").mkdir()
    target = tmp_path / "out"
    target.write_text("")
    os.symlink(str(target), d / "fd" / "0")
    (d / "fdinfo" / "0").write_text("pos:\t0\nflags:\t0102001\nmnt_id:\t27\nino:\t9\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.symlink(str(fifo), d / "fd" / "1")       # what stat sees of a pipe: a FIFO
    (d / "fdinfo" / "1").write_text("pos:\t0\nflags:\t01\nmnt_id:\t15\n")
    return tmp_path / "proc", target


def test_fdinfo_mnt_id():
    assert fdinfo_mnt_id("pos:\t0\nflags:\t02\nmnt_id:\t24\n") == 24
    assert fdinfo_mnt_id("pos:\t0\n") is None


def test_init_stdio_records_path_mount_inode_mode(tmp_path):
    proc, target = _fake_proc(tmp_path)
    got = init_stdio(42, str(proc))
    assert [e["fd"] for e in got] == [0, 1, 2]
    assert got[0] == {"fd": 0, "path": str(target), "mnt_id": 27,
                      "inode": os.stat(target).st_ino, "mode": os.stat(target).st_mode}
    assert got[1]["mnt_id"] == 15 and stat.S_ISFIFO(got[1]["mode"])
    # closed: no path, nothing else
    assert got[2] == {"fd": 2, "path": "", "mnt_id": None, "inode": 0, "mode": 0}


def test_fd_identity_under_another_role(tmp_path):
    proc, target = _fake_proc(tmp_path)
    e = fd_identity(f"{proc}/42", 0, role=1)
    assert e["fd"] == 1 and e["path"] == str(target)
