"""The launcher's side of the sync protocol, driven over a real socketpair:
the init's messages may overtake the intermediate process's "pid"."""

import os

from migrate.runtime.launcher import Launched, LaunchSpec, _drive
from migrate.runtime.sync import socketpair


def _child(sock):   # never run here
    raise AssertionError


def test_ready_before_pid_waits_for_the_pid():
    ours, theirs = socketpair()
    try:
        me = os.getpid()   # pid1 == pid: nothing to reap
        theirs.send({"type": "console"}, (os.dup(0),))
        theirs.send({"type": "ready"})
        theirs.send({"type": "pid", "pid": me})
        result = Launched(pid=0)
        _drive(LaunchSpec(child=_child, timeout=5), ours, me, result)
        assert result.pid == me
        assert result.console_fd is not None
        os.close(result.console_fd)
        assert theirs.recv(5)[0] == {"type": "go"}
    finally:
        ours.close()
        theirs.close()


def test_hooks_run_with_the_pid_even_when_asked_first():
    ours, theirs = socketpair()
    seen = []
    try:
        me = os.getpid()
        theirs.send({"type": "hooks"})
        theirs.send({"type": "pid", "pid": me})
        theirs.send({"type": "ready"})
        _drive(LaunchSpec(child=_child, on_hooks=seen.append, timeout=5), ours, me,
               Launched(pid=0))
        assert seen == [me]
        assert [theirs.recv(5)[0]["type"] for _ in range(2)] == ["go", "hooks_ok"]
    finally:
        ours.close()
        theirs.close()
