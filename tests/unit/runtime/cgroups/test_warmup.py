"""The launcher's cgroup-attach warm-up, as Python takes it over (cgroups/warmup.py)."""

import os

from migrate.runtime.cgroups import warmup


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
