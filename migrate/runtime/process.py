"""Turning the OCI ``process`` into the running program: the last steps of
every init, new container or exec, just before execve.

Order, forced by the kernel:
  rlimits and oom_score_adj while we are still root with all capabilities;
  drop the bounding set (needs CAP_SETPCAP);
  PR_SET_KEEPCAPS so setuid keeps the permitted set;
  setgroups, setgid, setuid (groups first: afterwards we may not set them);
  capset for effective/permitted/inheritable, then the ambient set (a
  capability must be permitted and inheritable to be raised as ambient);
  no_new_privs last before exec (it does not stop the steps above).

The seccomp filter (built earlier, while our modules and libseccomp could
still be reached: see ``Syscalls.seccomp_prepare``) is loaded where runc
loads it (``standard_init_linux.go``, ``setns_init_linux.go``):
  without no_new_privs, seccomp(2) needs CAP_SYS_ADMIN, so the filter goes
  in first, before the bounding set is dropped and the user switched; the
  profile must then allow what follows (capset, setresuid, the sync socket,
  exec.fifo, startContainer hooks);
  with no_new_privs, any process may load a filter, so it goes in late,
  after everything but the last words with the runtime: "ready" (a
  write(2)), exec.fifo, the startContainer hooks (which run filtered, as in
  runc) and execve. The fds were marked close-on-exec and the signals reset
  before (``prepare_exec``), so the profile need not allow that.
  (seccomp(2) man page, SECCOMP_SET_MODE_FILTER: "the caller must have
  CAP_SYS_ADMIN ... or the thread must already have the no_new_privs bit
  set".)
A filter with SCMP_ACT_NOTIFY rules gives a listener fd when loaded; the
init hands it to the runtime at once (``hand_over``), which passes it to
the seccomp agent, and closes its own copy: until the agent has it, a
notified syscall would block for good.
"""

from __future__ import annotations

import errno
import os
import resource
import _signal as signal  # not signal.py: its enums cost start-up time (migrate/_light.py)
import stat
from migrate._light import suppress

from migrate.errors import KernelError, NotFoundError, UsageError
# Imported here, not lazily: these run after pivot_root, when our own
# modules are no longer reachable on the file system.
from migrate.oci.constants import CAP_NUMBERS, RLIMITS
from migrate.runtime.syscalls import PR, Syscalls

__all__ = ["apply_rlimits", "rlimit_value", "apply_user_and_caps", "cap_mask", "resolve_executable",
           "build_env", "home_of", "fix_stdio_owner", "exec_process", "prepare_exec", "reset_signals",
           "prepare_seccomp", "load_seccomp", "become_process", "fence_ptrace",
           "needs_ptrace_fence", "preload"]


def cap_mask(names) -> int:
    mask = 0
    for name in names:
        try:
            mask |= 1 << CAP_NUMBERS[name]
        except KeyError:
            raise UsageError(f"unknown capability {name!r}") from None
    return mask


def _last_cap(proc_root: str = "/proc") -> int:
    try:
        with open(f"{proc_root}/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


# rlim_t is unsigned 64-bit and RLIM_INFINITY is its all-ones value, but
# Python's setrlimit() takes signed 64-bit values (RLIM_INFINITY is -1
# there): anything from 2**63 up cannot be a finite limit, and engines send
# 2**64-1 for "unlimited", as getrlimit(2) would report it.
_RLIM_FINITE_MAX = 2**63 - 1


def rlimit_value(value: int) -> int:
    """An OCI (u64) rlimit value as Python's setrlimit() takes it."""
    return resource.RLIM_INFINITY if value > _RLIM_FINITE_MAX else value


def apply_rlimits(rlimits) -> None:
    for rl in rlimits:
        try:
            resource.setrlimit(RLIMITS[rl.type], (rlimit_value(rl.soft), rlimit_value(rl.hard)))
        except (OSError, ValueError) as err:
            raise UsageError(f"setrlimit {rl.type} soft={rl.soft} hard={rl.hard}: {err}") from None


# include/uapi/linux/landlock.h: the one IPC scope with the fewest side
# effects here (the container's processes cannot signal processes outside
# their domain: exec'd ones, and the host's if they share its PID namespace).
LANDLOCK_SCOPE_SIGNAL = 0x2


def fence_ptrace(sys: Syscalls) -> bool:
    """Enter a Landlock domain: from now on this process and its descendants
    cannot ptrace-access (mem, exe, attach) any process outside it, even
    with CAP_SYS_PTRACE: the runtime's forks joining the container stay out
    of reach (exe_guard.py). Needs CAP_SYS_ADMIN, so it runs before the
    capabilities are dropped. Returns False where the kernel has no Landlock
    scopes (ABI < 6, Linux < 6.12, or Landlock not enabled): the fence is
    best effort. Raises KernelError on another failure."""
    try:
        sys.landlock_scope(LANDLOCK_SCOPE_SIGNAL)
    except OSError as err:
        if err.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.E2BIG):
            return False
        raise KernelError("landlock_restrict_self", None, err.errno or 1,
                          "fencing the container off the runtime (CAP_SYS_PTRACE)") from None
    return True


def needs_ptrace_fence(process, in_userns: bool) -> bool:
    """A container without its own user namespace whose processes may hold
    CAP_SYS_PTRACE (bounding set) can ptrace non-dumpable host processes."""
    caps = process.capabilities
    return not in_userns and caps is not None and "CAP_SYS_PTRACE" in caps.bounding


def apply_oom_score_adj(sys: Syscalls, value: int | None) -> None:
    if value is None:
        return
    try:
        sys.write_file("/proc/self/oom_score_adj", str(value))
    except OSError as err:
        raise KernelError("write", "/proc/self/oom_score_adj", err.errno or 1,
                          f"oomScoreAdj {value}") from None


def prepare_seccomp(sys: Syscalls, plan):
    """Build the filter of a ``runtime.seccomp.SeccompPlan`` (None: no
    filter), while the init can still report an error. Raises KernelError."""
    if plan is None:
        return None
    try:
        return sys.seccomp_prepare(plan)
    except OSError as err:
        raise KernelError("seccomp", err.filename, err.errno or 1) from None


def load_seccomp(sys: Syscalls, filter, hand_over=None) -> None:
    """Load a filter from ``sys.seccomp_prepare``. A listener fd (notify
    rules) goes to ``hand_over(fd)``, then is closed here. Raises
    KernelError, and what ``hand_over`` raises."""
    try:
        listener = sys.seccomp_load(filter)
    except OSError as err:
        raise KernelError("seccomp", None, err.errno or 1, "loading the linux.seccomp filter") from None
    if listener is None:
        return
    try:
        if hand_over is not None:
            hand_over(listener)
    finally:
        os.close(listener)


def apply_user_and_caps(sys: Syscalls, process, *, setgroups_allowed: bool = True,
                        seccomp=None, hand_over=None) -> None:
    """Switch to the spec's user with exactly its capabilities.

    ``seccomp`` (a prepared filter) is loaded here, first, when the process
    has no no_new_privs; with no_new_privs the caller loads it later with
    `load_seccomp` (module docstring). Raises KernelError, UsageError.
    """
    if seccomp is not None and not process.no_new_privileges:
        load_seccomp(sys, seccomp, hand_over)
    caps = process.capabilities
    last = _last_cap()
    if caps is not None:
        keep = cap_mask(caps.bounding)
        for cap in range(last + 1):
            if not keep & (1 << cap):
                try:
                    sys.prctl(PR.CAPBSET_DROP, cap)
                except OSError as err:
                    raise KernelError("prctl(PR_CAPBSET_DROP)", None, err.errno or 1,
                                      f"capability {cap}") from None
    user = process.user
    sys.prctl(PR.SET_KEEPCAPS, 1)
    gids = list(user.additional_gids)
    if setgroups_allowed:
        os.setgroups(gids)
    elif gids:
        raise UsageError("additional gids need setgroups, which this user namespace denies "
                         "(map the groups with newgidmap)")
    try:
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as err:
        raise KernelError("setresuid/setresgid", None, err.errno or 1,
                          f"uid {user.uid} gid {user.gid} (is it mapped?)") from None
    sys.prctl(PR.SET_KEEPCAPS, 0)
    if caps is not None:
        sys.capset(cap_mask(caps.effective), cap_mask(caps.permitted),
                   cap_mask(caps.inheritable))
        sys.prctl(PR.CAP_AMBIENT, PR.CAP_AMBIENT_CLEAR_ALL)
        for name in caps.ambient:
            # The kernel raises an ambient capability only if it is both
            # permitted and inheritable (capabilities(7)). runc 1.1 tries
            # each one and ignores the refusal, so a config from `runc
            # spec` (ambient, but no inheritable set) runs: so do we.
            with suppress(OSError):
                sys.prctl(PR.CAP_AMBIENT, PR.CAP_AMBIENT_RAISE, CAP_NUMBERS[name])
    if process.no_new_privileges:
        sys.prctl(PR.SET_NO_NEW_PRIVS, 1)


def become_process(sys: Syscalls, process, *, setgroups_allowed: bool, seccomp=None,
                   hand_over=None, default_umask: int | None = None
                   ) -> tuple[str, dict[str, str]]:
    """The steps every init takes to turn into the OCI process, just short
    of execve: limits, environment, cwd, the executable's path (resolved
    while still root, as root would see it), user and capabilities, umask.
    Returns (path, env) for ``exec_process``."""
    apply_oom_score_adj(sys, process.oom_score_adj)
    apply_rlimits(process.rlimits)
    env = build_env(process.env, process.user.uid)
    try:
        os.chdir(process.cwd)
    except OSError as err:
        raise NotFoundError(f"cwd {process.cwd}: {err.strerror}") from None
    path = resolve_executable(process.args[0], env)
    fix_stdio_owner(process.user.uid)
    apply_user_and_caps(sys, process, setgroups_allowed=setgroups_allowed, seccomp=seccomp,
                        hand_over=hand_over)
    umask = process.user.umask if process.user.umask is not None else default_umask
    if umask is not None:
        os.umask(umask)
    return path, env


def fix_stdio_owner(uid: int, fds=(0, 1, 2), null: str = "/dev/null") -> None:
    """Give the process's user its stdio (a terminal, pipes), as runc does:
    a non-root user must be able to reopen them (/dev/stdout, $(tty)).
    Only the owner changes: the group stays (devpts's tty group). Stdio on
    /dev/null is left alone; EINVAL/EPERM/EROFS (ids not mapped in a user
    namespace, a read-only /dev) leave it as it is. Raises KernelError."""
    try:
        null_rdev = os.stat(null).st_rdev
    except OSError:
        null_rdev = None
    for fd in fds:
        try:
            st = os.fstat(fd)
        except OSError as err:
            raise KernelError("fstat", f"fd {fd}", err.errno or 1, "the process's stdio") from None
        if st.st_uid == uid or (null_rdev is not None and stat.S_ISCHR(st.st_mode)
                                and st.st_rdev == null_rdev):
            continue
        try:
            os.fchown(fd, uid, st.st_gid)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise KernelError("fchown", f"fd {fd}", err.errno or 1,
                                  "the process's stdio") from None


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """HOME from the container's own /etc/passwd ("/" when absent)."""
    try:
        with open(passwd) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def build_env(env, uid: int, passwd: str = "/etc/passwd") -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        out[key] = value
    if "HOME" not in out:
        out["HOME"] = home_of(uid, passwd)
    return out


def resolve_executable(arg0: str, env: dict[str, str]) -> str:
    """Like execvp's search, with the container's PATH. Raises NotFoundError."""
    if "/" in arg0:
        try:
            st = os.stat(arg0)
        except FileNotFoundError:
            raise NotFoundError(f'exec: "{arg0}": no such file or directory') from None
        # As runc (Go's exec.LookPath), so the error comes from create, not from
        # an execve after start that nobody hears: Podman maps "permission
        # denied" to exit 126.
        if os.path.isdir(arg0) or not st.st_mode & 0o111:
            raise KernelError("exec", arg0, errno.EACCES,
                              "is a directory" if os.path.isdir(arg0) else "not executable")
        return arg0
    for d in env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        cand = os.path.join(d or ".", arg0)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise NotFoundError(f'exec: "{arg0}": executable file not found in $PATH')


def reset_signals() -> None:
    """Undo what the Python runtime changed: handlers to default (SIGPIPE and
    SIGXFSZ are ignored by the interpreter), nothing blocked."""
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def prepare_exec(sys: Syscalls, keep_fds: int) -> None:
    """What execve needs done first: only fds 0 .. keep_fds-1 survive it,
    and signal handling is the default. Done before a no_new_privs filter
    is loaded, so the profile need not allow close_range or rt_sigaction."""
    sys.mark_fds_cloexec(keep_fds)
    for fd in range(3, keep_fds):
        os.set_inheritable(fd, True)
    reset_signals()


def exec_process(sys: Syscalls, path: str, args, env: dict[str, str]) -> None:
    """execve, after ``prepare_exec``. Never returns on success."""
    args, env = list(args), dict(env)
    try:
        os.execve(path, args, env)
    except OSError as err:
        raise KernelError("execve", path, err.errno or 1) from None


def preload(process, start_hooks: bool) -> None:
    """Import now what runs after pivot_root (or setns into the container's
    mount namespace): from then on our modules are out of sight. Here, not
    in init/standard.py, so exec does not import the rootfs code for it."""
    if process.terminal:
        import migrate.runtime.console  # noqa: F401
    if start_hooks:
        import subprocess  # noqa: F401

        import migrate.runtime.hooks  # noqa: F401
