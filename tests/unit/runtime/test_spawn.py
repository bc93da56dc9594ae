"""Which `exec`s take the fast path (runtime/spawn.py), and its error texts."""

from types import SimpleNamespace as NS

import pytest

from migrate.errors import KernelError, NotFoundError
from migrate.runtime import spawn
from migrate.runtime.nsexec import NsFlag

JOIN = [("/proc/1/ns/pid", NsFlag.PID), ("/proc/1/ns/net", NsFlag.NET),
        ("/proc/1/ns/mnt", NsFlag.MNT)]


def _process(**kw):
    return NS(**{"terminal": False, "rlimits": (), "args": ("sh",), "cwd": "/w",
                 "oom_score_adj": None, "user": NS(uid=7, gid=8), **kw})


def test_a_plain_process_takes_the_fast_path():
    assert spawn.can_spawn(JOIN, _process(), None, ignore_paused=False, rootless_cgroups=False)
    assert spawn.can_spawn(JOIN, _process(), NS(notifies=False), ignore_paused=False,
                           rootless_cgroups=False)


@pytest.mark.parametrize("why", ["userns", "timens", "tty", "listener", "paused", "rootless",
                                 "no args"])
def test_what_keeps_the_forking_path(why):
    join = JOIN + [("/proc/1/ns/user", NsFlag.USER)] if why == "userns" else \
        JOIN + [("/proc/1/ns/time", NsFlag.TIME)] if why == "timens" else JOIN
    process = _process(terminal=why == "tty", args=() if why == "no args" else ("sh",))
    assert not spawn.can_spawn(join, process,
                               NS(notifies=why == "listener"), ignore_paused=why == "paused",
                               rootless_cgroups=why == "rootless")


def test_errors_say_what_the_python_init_said():
    p = _process(rlimits=(NS(type="RLIMIT_NOFILE", soft=10, hard=5),))
    others = [("/proc/1/ns/net", NsFlag.NET)]
    err = spawn._error(p, "executable", 2, 3, others, "")
    assert isinstance(err, NotFoundError)
    assert str(err) == 'exec: "sh": executable file not found in $PATH'
    assert str(spawn._error(p, "executable", 2, 0, others, "")) == \
        'exec: "sh": no such file or directory'
    assert str(spawn._error(p, "cwd", 2, 0, others, "")) == "cwd /w: No such file or directory"
    assert str(spawn._error(p, "setns", 1, 0, others, "")) == \
        "[Errno 1] setns(net): Operation not permitted"
    assert "setrlimit RLIMIT_NOFILE soft=10 hard=5" in str(spawn._error(p, "rlimit", 22, 0,
                                                                         others, ""))
    err = spawn._error(p, "execve", 13, 0, others, "/bin/sh")
    assert isinstance(err, KernelError) and err.path == "/bin/sh"
    assert "uid 7 gid 8" in str(spawn._error(p, "setresuid", 22, 0, others, ""))
