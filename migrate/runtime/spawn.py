"""exec's fast path: plan the process here, start it in C (nsexec/spawn.c).

The launcher (launcher.py) forks this Python process and runs the setns
init in Python in a grandchild; for `exec` of a plain process that costs
more than the rest of the command (issue 16: page tables of a ~20 MB
interpreter copied twice, then faulted in). Here every value the process
needs is computed first, and one C call starts it with
clone(CLONE_VM | CLONE_VFORK): no copy, no second fork, no Python in the
child. nsexec/spawn.c explains the order and the dumpable window.

``can_spawn`` says when the fast path applies; the rest keeps the launcher:
a user namespace to join (setns(2) refuses a process sharing its mm), a
time namespace (like a PID namespace, it applies to children only, and the
runtime would have to enter it), a console (its fd must come back), a
seccomp listener (it must go to the agent), a paused container (the runtime
would wait in vfork until it is resumed) and rootless cgroups (their errors
are tolerated one by one).

The errors are the launcher's: "container init failed: " and what the
Python init would have said.
"""

from __future__ import annotations

import os

from migrate._log import getLogger
from migrate.errors import KernelError, MigrateError, NotFoundError, UsageError
from migrate.oci.constants import CAP_NUMBERS, RLIMITS
from migrate.runtime import nsexec
from migrate.runtime.nsexec import NsFlag

__all__ = ["can_spawn", "spawn", "SpawnCgroupError"]

_log = getLogger("migrate.runtime.launcher")   # the launcher's debug lines, same names

_RLIM_FINITE_MAX = 2**63 - 1    # as runtime/process.py rlimit_value: above, unlimited
_RLIM_INFINITY = 2**64 - 1
_NS_NAMES = {int(flag): name for flag, name in nsexec.NS_FLAGS.values()}


class SpawnCgroupError(KernelError):
    """Joining a cgroup failed: ``pid`` is the process that tried (gone now)."""

    def __init__(self, path: str, errno: int, pid: int):
        super().__init__("write", path, errno)
        self.pid = pid


def can_spawn(join, process, seccomp, *, ignore_paused: bool, rootless_cgroups: bool) -> bool:
    """Whether ``spawn`` can start this process (see the module docstring)."""
    return bool(process.args and not process.terminal and not ignore_paused
                and not rootless_cgroups and len(process.rlimits) <= 16
                and not any(flag in (NsFlag.USER, NsFlag.TIME) for _, flag in join)
                and (seccomp is None or not seccomp.notifies))


def spawn(process, *, join, cgroups, seccomp, preserve_fds: int, setgroups_allowed: bool,
          sys, proc_root: str = "/proc") -> int:
    """Start ``process`` in the namespaces ``join`` ((path, NsFlag) pairs)
    and ``cgroups`` (a manager or None); return its pid once it has exec'd.

    Raises UsageError, SpawnCgroupError, KernelError, LaunchError.
    """
    mod = nsexec._load()
    ffi, c = mod.ffi, mod.lib
    user, caps = process.user, process.capabilities
    gids = list(user.additional_gids)
    if gids and not setgroups_allowed:
        raise UsageError("additional gids need setgroups, which this user namespace denies "
                         "(map the groups with newgidmap)")
    env: dict[str, str] = {}
    for entry in process.env:      # runtime/process.py build_env; HOME is found in C
        key, _, value = entry.partition("=")
        env[key] = value
    cgroup_files = cgroups.procs_files() if cgroups is not None else []
    s = ffi.new("struct nsexec_spawn *")
    keep: list = []                # cffi buffers must outlive the call
    cstr = lambda text: _keep(keep, ffi.new("char[]", text.encode()))  # noqa: E731
    fds: list[int] = []
    filt = None
    try:
        s.pidns_fd = s.own_pidns_fd = -1
        others = [(path, flag) for path, flag in join if flag != NsFlag.PID]
        for path, flag in join:
            if flag == NsFlag.PID:
                s.pidns_fd = _open(path, fds)
                s.own_pidns_fd = _open(f"{proc_root}/self/ns/pid", fds)
        for i, (path, flag) in enumerate(others):
            s.join_fds[i], s.join_types[i] = _open(path, fds), int(flag)
        s.njoin = len(others)
        if len(cgroup_files) > len(s.cgroup_fds):
            raise UsageError(f"too many cgroups to join: {len(cgroup_files)}")
        for i, path in enumerate(cgroup_files):
            try:
                s.cgroup_fds[i] = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as err:
                raise SpawnCgroupError(path, err.errno, os.getpid()) from None
            fds.append(s.cgroup_fds[i])
        s.ncgroups = len(cgroup_files)
        if process.oom_score_adj is not None:
            # the kernel refuses what is not in [-1000, 1000]: only keep it an int
            s.oom_score_adj_set = 1
            s.oom_score_adj = max(-2**31, min(process.oom_score_adj, 2**31 - 1))
        for i, rl in enumerate(process.rlimits):
            s.rlimit_res[i] = RLIMITS[rl.type]
            s.rlimit_cur[i], s.rlimit_max[i] = _rlim(rl.soft), _rlim(rl.hard)
        s.nrlimits = len(process.rlimits)
        s.cwd = cstr(process.cwd)
        s.argv = _keep(keep, ffi.new("const char *[]", [cstr(a) for a in process.args] + [ffi.NULL]))
        envp = [cstr(f"{k}={v}") for k, v in env.items()]
        s.envp = _keep(keep, ffi.new("char *[]", envp + [ffi.NULL, ffi.NULL]))  # + HOME
        s.nenv, s.need_home = len(envp), int("HOME" not in env)
        s.path_var = cstr(env["PATH"]) if "PATH" in env else ffi.NULL
        s.uid, s.gid = user.uid, user.gid
        s.groups = _keep(keep, ffi.new("unsigned int[]", gids or [0]))
        s.ngroups, s.set_groups = len(gids), int(setgroups_allowed)
        if caps is not None:
            s.has_caps, s.last_cap = 1, _last_cap(proc_root)
            s.bounding, s.effective = _mask(caps.bounding), _mask(caps.effective)
            s.permitted, s.inheritable = _mask(caps.permitted), _mask(caps.inheritable)
            s.ambient = _mask(caps.ambient)
        s.no_new_privs = int(bool(process.no_new_privileges))
        s.umask = user.umask & 0o777 if user.umask is not None else -1   # umask(2) masks so
        s.keep_fds = 3 + preserve_fds
        if seccomp is not None:
            from migrate.runtime.process import prepare_seccomp

            filt = prepare_seccomp(sys, seccomp)
            s.seccomp = filt
        _log.debug("nsexec container setup")
        pid = c.nsexec_spawn(s)
    finally:
        for fd in fds:
            os.close(fd)
        if filt is not None:
            c.seccomp_filter_release(filt)
    if pid < 0:
        step = ffi.string(s.failed_step).decode()
        if step == "cgroup":
            raise SpawnCgroupError(cgroup_files[s.index], -pid, s.pid)
        path = ffi.string(s.path).decode(errors="replace")
        raise _launch_error(str(_error(process, step, -pid, s.index, others, path)))
    _log.debug("child process in init()")
    _log.debug("setns_init: about to exec")
    return pid


def _keep(keep: list, buf):
    keep.append(buf)
    return buf


def _open(path: str, fds: list[int]) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise _launch_error(f"open namespace {path}: {err.strerror}") from None
    fds.append(fd)
    return fd


def _rlim(value: int) -> int:
    return _RLIM_INFINITY if value > _RLIM_FINITE_MAX else value


def _mask(names) -> int:
    mask = 0
    for name in names:
        if name not in CAP_NUMBERS:
            raise UsageError(f"unknown capability {name!r}")
        mask |= 1 << CAP_NUMBERS[name]
    return mask


def _last_cap(proc_root: str) -> int:
    try:
        with open(f"{proc_root}/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def _launch_error(text: str) -> MigrateError:
    from migrate.runtime.launcher import LaunchError

    return LaunchError(f"container init failed: {text}")


def _error(process, step: str, err: int, index: int, others, path: str) -> MigrateError:
    """What the Python init (runtime/process.py) says when ``step`` fails."""
    strerror = os.strerror(err)
    if step == "rlimit":
        rl = process.rlimits[index]
        return UsageError(f"setrlimit {rl.type} soft={rl.soft} hard={rl.hard}: "
                          f"[Errno {err}] {strerror}")
    if step == "oom_score_adj":
        return KernelError("write", "/proc/self/oom_score_adj", err,
                           f"oomScoreAdj {process.oom_score_adj}")
    if step == "setns":
        return MigrateError(f"[Errno {err}] setns({_NS_NAMES.get(int(others[index][1]))}): "
                            f"{strerror}")
    if step == "cwd":
        return NotFoundError(f"cwd {process.cwd}: {strerror}")
    if step == "executable":
        arg0 = process.args[0]
        if index == 3:
            return NotFoundError(f'exec: "{arg0}": executable file not found in $PATH')
        if index in (1, 2):
            return KernelError("exec", arg0, err, "is a directory" if index == 1 else "not executable")
        if err == 2:   # ENOENT
            return NotFoundError(f'exec: "{arg0}": no such file or directory')
        return KernelError("stat", arg0, err)
    if step in ("fstat", "fchown"):
        return KernelError(step, f"fd {index}", err, "the process's stdio")
    if step == "capbset":
        return KernelError("prctl(PR_CAPBSET_DROP)", None, err, f"capability {index}")
    if step == "setresuid":
        return KernelError("setresuid/setresgid", None, err,
                           f"uid {process.user.uid} gid {process.user.gid} (is it mapped?)")
    if step == "seccomp":
        return KernelError("seccomp", None, err, "loading the linux.seccomp filter")
    if step == "execve":
        return KernelError("execve", path or process.args[0], err)
    return KernelError(step, None, err)
