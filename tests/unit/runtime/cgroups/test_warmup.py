"""The cgroup-attach warm-ups (cgroups/warmup.py): the launcher's, as Python
takes it over, and the kept-warm attach of a restore, against a fake /proc
and a FIFO standing in for cgroup.procs (each attach is one write to it)."""

import os
import time

from migrate.runtime.cgroups import warmup
from migrate.runtime.cgroups.warmup import AttachKeptWarm


def _child() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def test_adopting_takes_the_pid_out_of_the_environment_and_reaps_it():
    pid = _child()
    env = {warmup.LAUNCHER_WARMUP: str(pid), "OTHER": "1"}
    child = warmup.adopt_launcher_warmup(env)
    assert env == {"OTHER": "1"}            # nothing we start inherits it
    child.wait()
    child.wait()                            # once only
    assert not os.path.exists(f"/proc/{pid}")


def test_nothing_or_nonsense_adopts_nothing():
    for value in (None, "", "0", "-3", "x1"):
        env = {} if value is None else {warmup.LAUNCHER_WARMUP: value}
        assert warmup.adopt_launcher_warmup(env) is None
        assert warmup.LAUNCHER_WARMUP not in env


def test_a_warmup_nobody_took_is_reaped_before_exit(monkeypatch):
    """An error before create/run/exec took it over: cli/main.py program()
    still reaps it, so no zombie goes to a PID 1 that never reaps."""
    pid = _child()
    monkeypatch.setattr(warmup, "_adopted", [])
    monkeypatch.setenv(warmup.LAUNCHER_WARMUP, str(pid))
    warmup.reap_launcher_warmup()
    assert warmup.LAUNCHER_WARMUP not in os.environ
    assert not os.path.exists(f"/proc/{pid}")


def test_a_missing_child_is_no_error():
    warmup.ChildWarmup(os.getpid() + 10**6).wait()


def _fake_host(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("1:memory:/x\n0::/x\n")
    (cg / "x").mkdir(parents=True)
    (cg / "cgroup.controllers").write_text("memory\n")
    procs = cg / "x" / "cgroup.procs"
    os.mkfifo(procs)
    reader = os.open(procs, os.O_RDONLY | os.O_NONBLOCK)
    return str(cg), str(proc), reader


def _drain(fd) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_attaches_again_until_stopped(tmp_path):
    cg, proc, reader = _fake_host(tmp_path)
    try:
        warm = AttachKeptWarm(cg, proc, interval=0.002)
        pid = str(os.getpid()).encode()
        seen = b""
        deadline = time.monotonic() + 10
        while seen.count(pid) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
            seen += _drain(reader)
        assert seen.count(pid) >= 3, seen
        warm.stop()
        _drain(reader)
        time.sleep(0.05)
        assert _drain(reader) == b"", "attached after stop()"
        warm.stop()         # twice is fine
    finally:
        os.close(reader)


def test_gives_up_after_its_limit_and_without_a_cgroup(tmp_path):
    cg, proc, reader = _fake_host(tmp_path)
    try:
        warm = AttachKeptWarm(cg, proc, interval=0.001, limit=0.02)
        time.sleep(0.2)
        _drain(reader)
        time.sleep(0.05)
        assert _drain(reader) == b""
        warm.stop()
    finally:
        os.close(reader)
    (tmp_path / "proc" / "self" / "cgroup").write_text("1:memory:/x\n")   # no unified line
    AttachKeptWarm(cg, proc).stop()
