"""How criu swrk is started (criu_rpc._swrk._start): posix_spawn with what
subprocess.Popen(close_fds=True, restore_signals=True) would give it."""

import os
import shutil

from migrate.criu_rpc._swrk import _start


def _run(tmp_path, **kw):
    out = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        script = ("ls /proc/self/fd; grep -E '^Sig(Ign|Blk)' /proc/self/status; "
                  "read line || echo stdin-empty; echo err >&2")
        child = _start([shutil.which("sh"), "-c", script], output=out, **kw)
        assert child.wait() == 0 and child.poll() == 0
    finally:
        os.close(out)
    return (tmp_path / "out").read_text().split()


def test_only_pass_fds_reach_the_child(tmp_path):
    stray = os.open("/dev/null", os.O_RDONLY)       # inheritable: Popen would close it
    passed = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.set_inheritable(stray, True)
    try:
        words = _run(tmp_path, pass_fds=(passed,), cwd=None, env=None)
    finally:
        os.close(stray)
        os.close(passed)
    fds = {int(w) for w in words[:words.index("SigBlk:")]}
    assert passed in fds and stray not in fds
    assert fds <= {0, 1, 2, 3, passed}              # 3: ls's own directory
    assert "stdin-empty" in words and "err" in words


def test_pipe_and_file_size_signals_are_not_ignored(tmp_path):
    words = _run(tmp_path, pass_fds=(), cwd=None, env=None)
    ignored = int(words[words.index("SigIgn:") + 1], 16)
    for sig in (13, 25):            # SIGPIPE, SIGXFSZ (Python ignores both)
        assert not ignored & (1 << (sig - 1))


def test_a_working_directory_goes_through_popen(tmp_path):
    out = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        child = _start([shutil.which("sh"), "-c", "pwd"], pass_fds=(), cwd=str(tmp_path),
                       output=out, env=None)
        assert child.wait() == 0
    finally:
        os.close(out)
    assert (tmp_path / "out").read_text().strip() == str(tmp_path)


def test_kill_and_a_program_that_is_not_there(tmp_path):
    import pytest

    out = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        child = _start([shutil.which("sleep"), "60"], pass_fds=(), cwd=None, output=out, env=None)
        assert child.poll() is None
        child.kill()
        assert child.wait() == -9
        child.kill()                # reaped: nothing to do
        with pytest.raises(OSError):
            _start(["no-such-criu-here"], pass_fds=(), cwd=None, output=out, env=None)
    finally:
        os.close(out)


def test_an_added_variable_reaches_the_child(tmp_path):
    out = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        child = _start([shutil.which("sh"), "-c", "echo $CK16_TAG"], pass_fds=(), cwd=None,
                       output=out, env={**os.environ, "CK16_TAG": "tagged"})
        assert child.wait() == 0
    finally:
        os.close(out)
    assert (tmp_path / "out").read_text().strip() == "tagged"
