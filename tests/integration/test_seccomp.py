"""linux.seccomp applied to real containers (libseccomp filters), as root."""

import json
import os

import pytest

from runtime_helpers import wait_for

pytestmark = pytest.mark.requires("root", "busybox")

EPERM_TEXT = "Operation not permitted"


def _profile(default="SCMP_ACT_ALLOW", syscalls=(), **extra) -> dict:
    return {"defaultAction": default,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": list(syscalls), **extra}


BLOCK_MKDIR = {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}


def _use(bundle, profile, *, nnp: bool = True):
    bundle.config["root"]["readonly"] = False
    bundle.config["process"]["noNewPrivileges"] = nnp
    bundle.config["linux"]["seccomp"] = profile
    bundle.write()
    return bundle


def _seccomp_status(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("Seccomp:"))


# noNewPrivileges off: loaded before the capabilities are dropped (needs
# CAP_SYS_ADMIN); on: loaded last, before execve. Both must filter.
@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
def test_errno_rule_makes_mkdir_fail_and_the_rest_works(runtime, bundle, cid, nnp):
    _use(bundle, _profile(syscalls=[BLOCK_MKDIR]), nnp=nnp).sh(
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; "
        "mkdir /tmp/x; echo mkdir=$?; touch /tmp/y && echo touched; ls /tmp")
    res = runtime("run", "--bundle", bundle.path, cid)
    assert res.returncode == 0, res.stderr
    assert "Seccomp:\t2" in res.stdout
    assert f"NoNewPrivs:\t{int(nnp)}" in res.stdout
    assert "mkdir=1" in res.stdout and "touched" in res.stdout
    assert EPERM_TEXT in res.stderr
    assert not os.path.exists(os.path.join(bundle.rootfs, "tmp/x"))
    assert os.path.exists(os.path.join(bundle.rootfs, "tmp/y"))


def test_errno_ret_and_argument_conditions(runtime, bundle, cid):
    # mkdir gets ENOSYS; kill only when the signal is SIGUSR1 (arg 1 == 10);
    # a syscall name this machine does not know is skipped, as runc does.
    _use(bundle, _profile(syscalls=[
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
        {"names": ["no_such_syscall_here"], "action": "SCMP_ACT_KILL"},
    ])).sh("mkdir /tmp/x; kill -0 $$ && echo kill0=ok; kill -USR1 $$; echo usr1=$?")
    res = runtime("run", "--bundle", bundle.path, cid)
    assert res.returncode == 0, res.stderr
    assert "Function not implemented" in res.stderr      # ENOSYS from mkdir
    assert "kill0=ok" in res.stdout and "usr1=1" in res.stdout


# What busybox sh and its applets need, plus what the runtime does after
# loading (nnp: execve only; the rest is libc start-up).
ALLOW_LIST = [
    "execve", "execveat", "brk", "mmap", "munmap", "mprotect", "arch_prctl", "set_tid_address",
    "set_robust_list", "rseq", "prlimit64", "getrlimit", "uname", "getpid", "getppid", "gettid",
    "getuid", "geteuid", "getgid", "getegid", "getgroups", "getcwd", "chdir", "read", "write",
    "writev", "readv", "pread64", "open", "openat", "close", "stat", "fstat", "lstat",
    "newfstatat", "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat",
    "ioctl", "fcntl", "dup", "dup2", "dup3", "pipe", "pipe2", "lseek", "getdents64",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "wait4", "waitid",
    "clone", "clone3", "fork", "vfork", "exit", "exit_group", "getrandom", "futex",
    "nanosleep", "clock_nanosleep", "clock_gettime", "gettimeofday", "time", "sysinfo",
    "poll", "ppoll", "select", "pselect6", "umask", "setpgid", "getpgid", "getpgrp", "setsid",
    "madvise", "kill", "tgkill", "prctl",
]


def test_default_deny_with_an_allow_list(runtime, bundle, cid):
    _use(bundle, _profile(default="SCMP_ACT_ERRNO", defaultErrnoRet=1, syscalls=[
        {"names": ALLOW_LIST, "action": "SCMP_ACT_ALLOW"}])).sh(
        "echo hello; ls / > /dev/null && echo listed; mkdir /tmp/x; echo mkdir=$?")
    res = runtime("run", "--bundle", bundle.path, cid)
    assert res.returncode == 0, res.stderr
    assert "hello" in res.stdout and "listed" in res.stdout
    assert "mkdir=1" in res.stdout
    assert not os.path.exists(os.path.join(bundle.rootfs, "tmp/x"))


def test_default_kill_process_kills_at_the_first_unlisted_call(runtime, bundle, cid):
    _use(bundle, _profile(default="SCMP_ACT_KILL_PROCESS", syscalls=[
        {"names": ALLOW_LIST, "action": "SCMP_ACT_ALLOW"}])).sh(
        "echo before; hostname foo; echo child=$?; exec hostname foo")
    res = runtime("run", "--bundle", bundle.path, cid)
    assert "before" in res.stdout
    assert "Bad system call" in res.stderr and "child=159" in res.stdout   # the forked applet
    assert res.returncode == 128 + 31, (res.returncode, res.stderr)   # SIGSYS


@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
def test_exec_processes_are_filtered_too(runtime, bundle, cid, tmp_path, nnp):
    _use(bundle, _profile(syscalls=[BLOCK_MKDIR]), nnp=nnp).sh("sleep 300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    res = runtime("exec", cid, "sh", "-c",
                  "grep Seccomp: /proc/self/status; mkdir /tmp/e; echo mkdir=$?")
    assert res.returncode == 0, res.stderr
    assert "Seccomp:\t2" in res.stdout and "mkdir=1" in res.stdout
    assert EPERM_TEXT in res.stderr
    # --process: runtime-spec's process has no profile, the container's applies
    proc = tmp_path / "process.json"
    proc.write_text(json.dumps({"args": ["sh", "-c", "mkdir /tmp/p; echo mkdir=$?"],
                                "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                                "noNewPrivileges": nnp}))
    res = runtime("exec", "--process", str(proc), cid)
    assert res.returncode == 0, res.stderr
    assert "mkdir=1" in res.stdout
    assert not os.path.exists(os.path.join(bundle.rootfs, "tmp/p"))


def _assert_left_nothing(runtime, cid):
    assert runtime("state", cid).returncode != 0
    assert not os.path.exists(os.path.join(runtime.root, cid))
    for controller in ("memory", "pids", "unified"):
        assert not os.path.exists(runtime.cgroup_dir(controller, cid)), controller


@pytest.mark.parametrize("profile, message", [
    (_profile(default="SCMP_ACT_FOO"),
     "linux.seccomp.defaultAction: unknown action 'SCMP_ACT_FOO'"),
    (_profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}]),
     "linux.seccomp.syscalls[0].action: unknown action 'SCMP_ACT_BOGUS'"),
    (_profile(syscalls=[{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                         "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_LIKE"}]}]),
     "linux.seccomp.syscalls[0].args[0].op: unknown operator 'SCMP_CMP_LIKE'"),
    (_profile(architectures=["SCMP_ARCH_Z80"]),
     "linux.seccomp.architectures[0]: unknown architecture 'SCMP_ARCH_Z80'"),
    (_profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]),
     "linux.seccomp.listenerPath: is not set"),
    (_profile(listenerPath="/x", syscalls=[{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]),
     "SCMP_ACT_NOTIFY cannot be used for the write syscall"),
], ids=["action", "rule-action", "operator", "arch", "notify-no-agent", "notify-write"])
def test_a_bad_profile_fails_create_with_one_line(runtime, bundle, cid, profile, message):
    _use(bundle, profile).sh("true")
    res = runtime("create", "--bundle", bundle.path, cid)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    _assert_left_nothing(runtime, cid)


def _libseccomp_version() -> tuple[int, int, int]:
    import ctypes

    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_version.restype = ctypes.POINTER(ctypes.c_uint * 3)
    return tuple(lib.seccomp_version().contents)


def test_a_profile_libseccomp_refuses_fails_create(runtime, bundle, cid):
    # Known to the spec, unknown to libseccomp before 2.6 (Debian 12):
    # refused when the init builds the filter, which it still reports.
    if _libseccomp_version() >= (2, 6, 0):
        pytest.skip("libseccomp >= 2.6 knows SCMP_ARCH_LOONGARCH64")
    _use(bundle, _profile(architectures=["SCMP_ARCH_LOONGARCH64"])).sh("true")
    res = runtime("create", "--bundle", bundle.path, cid)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "seccomp architecture loongarch64" in lines[0], res.stderr
    _assert_left_nothing(runtime, cid)


def test_podman_default_profile_runs(runtime, bundle, cid):
    path = "/usr/share/containers/seccomp.json"
    if not os.path.exists(path):
        pytest.skip(f"no {path}")
    with open(path) as f:
        profile = json.load(f)
    profile.pop("archMap", None)
    profile["architectures"] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    # no_new_privs off, as Podman runs: loaded before the user and caps change
    _use(bundle, profile, nnp=False).sh("grep Seccomp: /proc/self/status; mkdir /tmp/ok && echo made")
    res = runtime("run", "--bundle", bundle.path, cid)
    assert res.returncode == 0, res.stderr
    assert "Seccomp:\t2" in res.stdout and "made" in res.stdout


PROBE = ("while true; do if mkdir /tmp/probe 2>/dev/null; then echo made >> /tmp/log; "
         "rmdir /tmp/probe; else echo blocked >> /tmp/log; fi; sleep 0.05; done")


def _log(bundle) -> list[str]:
    try:
        with open(os.path.join(bundle.rootfs, "tmp/log")) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


@pytest.mark.requires("criu", "iptables")
def test_checkpoint_restore_keeps_the_filter(runtime, bundle, cid, tmp_path):
    _use(bundle, _profile(syscalls=[BLOCK_MKDIR])).sh(PROBE)
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    wait_for(lambda: len(_log(bundle)) > 3, what="probe")
    assert _seccomp_status(runtime.state(cid)["pid"]) == "2"
    images = str(tmp_path / "img")
    runtime("checkpoint", "--image-path", images, cid).check()
    before = len(_log(bundle))
    runtime("restore", "--detach", "--image-path", images, "--bundle", bundle.path, cid).check()
    pid = runtime.state(cid)["pid"]
    assert _seccomp_status(pid) == "2"
    wait_for(lambda: len(_log(bundle)) > before + 5, what="probe after restore")
    assert set(_log(bundle)) == {"blocked"}
    # processes forked after the restore inherit it, and exec still applies it
    res = runtime("exec", cid, "sh", "-c", "mkdir /tmp/after; echo mkdir=$?")
    assert "mkdir=1" in res.stdout, res.stderr
    runtime("delete", "--force", cid).check()


# -- SCMP_ACT_NOTIFY: a seccomp agent at listenerPath ---------------------------

import select      # noqa: E402
import socket      # noqa: E402
import struct      # noqa: E402
import threading   # noqa: E402

# include/uapi/linux/seccomp.h: struct seccomp_notif (80 bytes) and
# seccomp_notif_resp (24 bytes), and their _IOWR('!', n, ...) ioctls.
_NOTIF = struct.Struct("QIIiIQ6Q")
_RESP = struct.Struct("QqiI")
_NOTIF_RECV = 0xC0000000 | (_NOTIF.size << 16) | (ord("!") << 8) | 0
_NOTIF_SEND = 0xC0000000 | (_RESP.size << 16) | (ord("!") << 8) | 1
_FLAG_CONTINUE = 1
ENOMEDIUM = 123


class Agent:
    """A small seccomp agent: takes listener fds with the container state,
    answers ENOMEDIUM to every notified syscall."""

    def __init__(self, path: str):
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.states: list[dict] = []
        self.seen: list[int] = []       # syscall numbers answered
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return          # closed
            with conn:
                data, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            self.states.append(json.loads(data))
            t = threading.Thread(target=self._answer, args=(fds[0],), daemon=True)
            self.threads.append(t)
            t.start()

    def _answer(self, listener: int):
        import fcntl

        poller = select.poll()
        poller.register(listener, select.POLLIN)
        try:
            while True:
                events = poller.poll(30_000)
                if not events or events[0][1] & (select.POLLHUP | select.POLLERR):
                    return        # every filtered task is gone
                buf = bytearray(_NOTIF.size)
                try:
                    fcntl.ioctl(listener, _NOTIF_RECV, buf)
                except OSError:
                    continue      # the task died meanwhile
                notif_id, _pid, _flags, nr, *_ = _NOTIF.unpack(buf)
                self.seen.append(nr)
                resp = bytearray(_RESP.pack(notif_id, -1, -ENOMEDIUM, 0))
                try:
                    fcntl.ioctl(listener, _NOTIF_SEND, resp)
                except OSError:
                    pass
        finally:
            os.close(listener)

    def close(self):
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.threads[0].join(timeout=10)


@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
def test_notify_hands_the_listener_to_the_agent(runtime, bundle, cid, tmp_path, nnp):
    agent = Agent(str(tmp_path / "agent.sock"))
    try:
        _use(bundle, _profile(listenerPath=agent.path, listenerMetadata="meta-1", syscalls=[
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]), nnp=nnp).sh(
            "mkdir /tmp/n; echo mkdir=$?; touch /tmp/t && echo touched")
        res = runtime("run", "--bundle", bundle.path, cid)
    finally:
        agent.close()
    assert res.returncode == 0, res.stderr
    assert "mkdir=1" in res.stdout and "touched" in res.stdout
    assert "No medium found" in res.stderr          # the agent's answer
    assert agent.seen, "the agent got no notification"
    (state,) = agent.states
    assert state["fds"] == ["seccompFd"] and state["metadata"] == "meta-1"
    assert state["state"]["id"] == cid and state["state"]["status"] == "creating"
    assert state["pid"] == state["state"]["pid"] > 0
    assert state["state"]["bundle"] == bundle.path


def test_notify_for_an_exec_sends_the_running_state(runtime, bundle, cid, tmp_path):
    agent = Agent(str(tmp_path / "agent.sock"))
    try:
        _use(bundle, _profile(listenerPath=agent.path, syscalls=[
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}])).sh("sleep 300")
        runtime("run", "-d", "--bundle", bundle.path, cid).check()
        init_pid = json.loads(runtime("state", cid).stdout)["pid"]
        res = runtime("exec", cid, "sh", "-c", "mkdir /tmp/e; echo rc=$?")
    finally:
        agent.close()
    assert res.returncode == 0, res.stderr
    assert "rc=1" in res.stdout and "No medium found" in res.stderr
    assert [s["state"]["status"] for s in agent.states] == ["creating", "running"]
    exec_state = agent.states[1]
    assert exec_state["state"]["pid"] == init_pid and exec_state["pid"] != init_pid


def test_notify_without_an_agent_fails_create_with_one_line(runtime, bundle, cid, tmp_path):
    _use(bundle, _profile(listenerPath=str(tmp_path / "nobody.sock"), syscalls=[
        {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}])).sh("true")
    res = runtime("create", "--bundle", bundle.path, cid)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "failed to connect with seccomp agent" in lines[0], res.stderr
    _assert_left_nothing(runtime, cid)
