"""The last steps before execve: limits, user, capabilities, environment, PATH.

Calls that would change the test process (setresuid, setgroups, setrlimit,
execve) are replaced; the Syscalls ones go to FakeSyscalls.
"""

import errno
import os
import resource

import pytest

from migrate.errors import KernelError, NotFoundError, UsageError
from migrate.oci import CAP_NUMBERS, Capabilities, Process, Rlimit, User
from migrate.runtime import process as proc
from migrate.runtime.syscalls import PR
from migrate.testing import Capset, FakeSyscalls, MarkFdsCloexec, Prctl, WriteFile


def test_cap_mask():
    assert proc.cap_mask([]) == 0
    assert proc.cap_mask(["CAP_CHOWN", "CAP_KILL"]) == (1 << 0) | (1 << 5)
    assert proc.cap_mask(["CAP_SYS_ADMIN"]) == 1 << CAP_NUMBERS["CAP_SYS_ADMIN"]


def test_unknown_capability():
    with pytest.raises(UsageError, match="unknown capability 'CAP_NOPE'"):
        proc.cap_mask(["CAP_NOPE"])


@pytest.fixture
def ids(monkeypatch):
    """Record setgroups/setresgid/setresuid instead of changing our identity."""
    log = []
    monkeypatch.setattr(os, "setgroups", lambda g: log.append(("setgroups", list(g))))
    monkeypatch.setattr(os, "setresgid", lambda *a: log.append(("setresgid", a)))
    monkeypatch.setattr(os, "setresuid", lambda *a: log.append(("setresuid", a)))
    monkeypatch.setattr(proc, "_last_cap", lambda proc_root="/proc": 40)
    return log


def _process(caps=None, **user):
    return Process(args=("sh",), user=User(**user), capabilities=caps)


def test_user_and_capabilities_in_the_kernel_order(ids, monkeypatch):
    sys = FakeSyscalls()
    # Interleave the identity changes with the recorded syscalls.
    monkeypatch.setattr(os, "setresuid", lambda *a: sys.calls.append(("setresuid", a)))
    monkeypatch.setattr(os, "setresgid", lambda *a: sys.calls.append(("setresgid", a)))
    monkeypatch.setattr(os, "setgroups", lambda g: sys.calls.append(("setgroups", list(g))))
    caps = Capabilities(bounding=("CAP_KILL", "CAP_NET_BIND_SERVICE"),
                        effective=("CAP_KILL",), permitted=("CAP_KILL", "CAP_NET_BIND_SERVICE"),
                        inheritable=("CAP_NET_BIND_SERVICE",), ambient=("CAP_NET_BIND_SERVICE",))
    p = Process(args=("sh",), user=User(uid=1000, gid=100, additional_gids=(10, 20)),
                capabilities=caps, no_new_privileges=True)
    proc.apply_user_and_caps(sys, p)
    kill, nbs = CAP_NUMBERS["CAP_KILL"], CAP_NUMBERS["CAP_NET_BIND_SERVICE"]
    drops = [Prctl(PR.CAPBSET_DROP, c) for c in range(41) if c not in (kill, nbs)]
    assert sys.calls == drops + [
        Prctl(PR.SET_KEEPCAPS, 1),
        ("setgroups", [10, 20]),
        ("setresgid", (100, 100, 100)),
        ("setresuid", (1000, 1000, 1000)),
        Prctl(PR.SET_KEEPCAPS, 0),
        Capset(1 << kill, (1 << kill) | (1 << nbs), 1 << nbs),
        Prctl(PR.CAP_AMBIENT, PR.CAP_AMBIENT_CLEAR_ALL),
        Prctl(PR.CAP_AMBIENT, PR.CAP_AMBIENT_RAISE, nbs),
        Prctl(PR.SET_NO_NEW_PRIVS, 1),
    ]


def test_without_capabilities_nothing_is_dropped(ids):
    sys = FakeSyscalls()
    proc.apply_user_and_caps(sys, _process())
    assert sys.calls == [Prctl(PR.SET_KEEPCAPS, 1), Prctl(PR.SET_KEEPCAPS, 0)]
    assert ids == [("setgroups", []), ("setresgid", (0, 0, 0)), ("setresuid", (0, 0, 0))]


def test_denied_setgroups_is_skipped_without_extra_groups(ids):
    proc.apply_user_and_caps(FakeSyscalls(), _process(uid=0), setgroups_allowed=False)
    assert [name for name, _ in ids] == ["setresgid", "setresuid"]


def test_denied_setgroups_with_extra_groups(ids):
    with pytest.raises(UsageError, match="additional gids need setgroups"):
        proc.apply_user_and_caps(FakeSyscalls(), _process(additional_gids=(5,)),
                                 setgroups_allowed=False)


def test_bounding_drop_failure_names_the_capability(ids):
    sys = FakeSyscalls()
    sys.fail_on(Prctl, nth=3, errno=errno.EPERM)
    with pytest.raises(KernelError, match=r"prctl\(PR_CAPBSET_DROP\): Operation not permitted: "
                                          r"capability 2"):
        proc.apply_user_and_caps(sys, _process(Capabilities()))


def test_an_ambient_capability_the_kernel_refuses_is_skipped_as_runc_does(ids):
    # `runc spec` lists ambient capabilities without an inheritable set: the
    # kernel refuses to raise them (EPERM) and runc 1.1 runs the container.
    sys = FakeSyscalls()
    caps = Capabilities(bounding=("CAP_KILL", "CAP_CHOWN"), permitted=("CAP_KILL", "CAP_CHOWN"),
                        inheritable=("CAP_CHOWN",), ambient=("CAP_KILL", "CAP_CHOWN"))
    last = proc._last_cap()
    raise_kill = (last + 1 - 2) + 2 + 1 + 1     # drops, keepcaps x2, clear, first raise
    sys.fail_on(Prctl, nth=raise_kill, errno=errno.EPERM)
    proc.apply_user_and_caps(sys, _process(caps))
    raises = [c for c in sys.of(Prctl) if c.option == PR.CAP_AMBIENT
              and c.arg2 == PR.CAP_AMBIENT_RAISE]
    # the refused one did not stop the next
    assert [c.arg3 for c in raises] == [CAP_NUMBERS["CAP_KILL"], CAP_NUMBERS["CAP_CHOWN"]]


def test_unmapped_user(ids, monkeypatch):
    def refuse(*a):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "setresuid", refuse)
    with pytest.raises(KernelError, match=r"uid 1000 gid 0 \(is it mapped\?\)"):
        proc.apply_user_and_caps(FakeSyscalls(), _process(uid=1000))


def test_oom_score_adj():
    sys = FakeSyscalls()
    proc.apply_oom_score_adj(sys, None)
    assert sys.calls == []
    proc.apply_oom_score_adj(sys, 500)
    assert sys.calls == [WriteFile("/proc/self/oom_score_adj", "500")]


def test_oom_score_adj_failure():
    sys = FakeSyscalls()
    sys.fail_on(WriteFile, errno=errno.EACCES)
    with pytest.raises(KernelError, match="oomScoreAdj -1000"):
        proc.apply_oom_score_adj(sys, -1000)


def test_rlimits(monkeypatch):
    calls = []
    monkeypatch.setattr(resource, "setrlimit", lambda kind, lim: calls.append((kind, lim)))
    proc.apply_rlimits([Rlimit(type="RLIMIT_NOFILE", soft=1024, hard=4096),
                        Rlimit(type="RLIMIT_CORE", soft=0, hard=0)])
    assert calls == [(resource.RLIMIT_NOFILE, (1024, 4096)), (resource.RLIMIT_CORE, (0, 0))]


def test_rlimits_from_2_63_up_are_unlimited(monkeypatch):
    # Engines send 2**64-1 (rlim_t's RLIM_INFINITY); Python's setrlimit
    # takes signed values and raised OverflowError for it.
    calls = []
    monkeypatch.setattr(resource, "setrlimit", lambda kind, lim: calls.append((kind, lim)))
    proc.apply_rlimits([Rlimit(type="RLIMIT_CORE", soft=2**64 - 1, hard=2**64 - 1),
                        Rlimit(type="RLIMIT_NOFILE", soft=2**63 - 1, hard=2**63)])
    inf = resource.RLIM_INFINITY
    assert calls == [(resource.RLIMIT_CORE, (inf, inf)),
                     (resource.RLIMIT_NOFILE, (2**63 - 1, inf))]


def test_rlimit_failure(monkeypatch):
    def refuse(kind, lim):
        raise ValueError("not allowed to raise maximum limit")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    with pytest.raises(UsageError, match="setrlimit RLIMIT_NOFILE soft=1 hard=2: not allowed"):
        proc.apply_rlimits([Rlimit(type="RLIMIT_NOFILE", soft=1, hard=2)])


@pytest.fixture
def passwd(tmp_path):
    p = tmp_path / "passwd"
    p.write_text("root:x:0:0:root:/root:/bin/sh\n"
                 "daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"
                 "nohome:x:7:7::::\n"
                 "broken\n")
    return str(p)


def test_home_of(passwd):
    assert proc.home_of(0, passwd) == "/root"
    assert proc.home_of(1, passwd) == "/usr/sbin"
    assert proc.home_of(7, passwd) == "/"
    assert proc.home_of(1234, passwd) == "/"
    assert proc.home_of(0, passwd + ".missing") == "/"


def test_build_env(passwd):
    env = proc.build_env(("PATH=/bin", "A=1=2", "EMPTY=", "BARE"), 0, passwd)
    assert env == {"PATH": "/bin", "A": "1=2", "EMPTY": "", "BARE": "", "HOME": "/root"}
    assert proc.build_env(("HOME=/home/x",), 0, passwd)["HOME"] == "/home/x"
    assert proc.build_env(("A=1", "A=2"), 0, passwd)["A"] == "2"


@pytest.fixture
def bindir(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    tool = d / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (d / "data").write_text("")
    (d / "data").chmod(0o644)
    return d


def test_resolve_executable_searches_path(bindir, tmp_path):
    env = {"PATH": f"{tmp_path}/nope:{bindir}"}
    assert proc.resolve_executable("tool", env) == str(bindir / "tool")


def test_resolve_executable_skips_non_executables(bindir):
    # Even root fails access(X_OK) on a file without any x bit.
    with pytest.raises(NotFoundError, match='exec: "data": executable file not found in'):
        proc.resolve_executable("data", {"PATH": str(bindir)})


def test_resolve_executable_with_a_slash(bindir):
    assert proc.resolve_executable(str(bindir / "tool"), {}) == str(bindir / "tool")
    with pytest.raises(NotFoundError, match="no such file or directory"):
        proc.resolve_executable(str(bindir / "nope"), {})


@pytest.mark.parametrize("name", ["data", "."])
def test_resolve_executable_with_a_slash_must_be_executable(bindir, name):
    # runc's rule; Podman turns "permission denied" into exit 126.
    with pytest.raises(KernelError, match=r"exec .*: Permission denied"):
        proc.resolve_executable(str(bindir / name), {})


def test_resolve_executable_default_path():
    assert proc.resolve_executable("sh", {}) in ("/usr/bin/sh", "/bin/sh", "/usr/sbin/sh",
                                                 "/usr/local/bin/sh")


def test_exec_process_marks_fds_and_reports_execve_errors(monkeypatch, bindir):
    monkeypatch.setattr(proc, "reset_signals", lambda: None)   # keep pytest's handlers

    def fail(path, args, env):
        raise OSError(errno.ENOEXEC, "Exec format error")

    monkeypatch.setattr(os, "execve", fail)
    sys = FakeSyscalls()
    proc.prepare_exec(sys, 3)
    assert sys.calls == [MarkFdsCloexec(3)]
    with pytest.raises(KernelError, match=r"execve .*/tool: Exec format error"):
        proc.exec_process(sys, str(bindir / "tool"), ("tool",), {})


def test_ptrace_fence_enters_a_signal_scoped_landlock_domain():
    from migrate.testing import LandlockScope

    sys = FakeSyscalls()
    assert proc.fence_ptrace(sys) is True
    assert sys.of(LandlockScope) == [LandlockScope(proc.LANDLOCK_SCOPE_SIGNAL)]


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.E2BIG])
def test_ptrace_fence_is_best_effort_without_landlock_scopes(err):
    from migrate.testing import LandlockScope

    sys = FakeSyscalls()
    sys.fail_on(LandlockScope, errno=err)
    assert proc.fence_ptrace(sys) is False


def test_ptrace_fence_other_failures_are_kernel_errors():
    from migrate.testing import LandlockScope

    sys = FakeSyscalls()
    sys.fail_on(LandlockScope, errno=errno.EPERM)
    with pytest.raises(KernelError, match="landlock_restrict_self"):
        proc.fence_ptrace(sys)


def test_needs_ptrace_fence():
    def process(*bounding):
        return Process(args=("true",), cwd="/", user=User(uid=0, gid=0),
                       capabilities=Capabilities(bounding=bounding))

    assert proc.needs_ptrace_fence(process("CAP_KILL", "CAP_SYS_PTRACE"), in_userns=False)
    assert not proc.needs_ptrace_fence(process("CAP_KILL"), in_userns=False)
    # In its own user namespace CAP_SYS_PTRACE does not reach our
    # non-dumpable forks (their mm belongs to the initial one).
    assert not proc.needs_ptrace_fence(process("CAP_SYS_PTRACE"), in_userns=True)


def test_stdio_goes_to_the_process_user_keeping_the_group(monkeypatch, tmp_path):
    # runc's fixStdioPermissions: a non-root user must own its terminal.
    files = {fd: os.open(tmp_path / f"f{fd}", os.O_CREAT | os.O_RDWR) for fd in (10, 11)}
    null = os.open(os.devnull, os.O_RDONLY)
    chowned = []
    monkeypatch.setattr(os, "fchown", lambda fd, uid, gid: chowned.append((fd, uid, gid)))
    try:
        proc.fix_stdio_owner(1000, fds=(files[10], null, files[11]))
        gid = os.fstat(files[10]).st_gid
        assert chowned == [(files[10], 1000, gid), (files[11], 1000, gid)]   # not /dev/null
        chowned.clear()
        proc.fix_stdio_owner(os.getuid(), fds=(files[10],))     # already the owner
        assert chowned == []
    finally:
        for fd in (*files.values(), null):
            os.close(fd)


def test_stdio_the_kernel_will_not_chown_is_left_alone(monkeypatch, tmp_path):
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)

    def refuse(*a):
        raise OSError(errno.EINVAL, "Invalid argument")   # gid not mapped in the userns

    monkeypatch.setattr(os, "fchown", refuse)
    try:
        proc.fix_stdio_owner(1000, fds=(fd,))
    finally:
        os.close(fd)
