"""exec: run a new process inside a running container."""

from __future__ import annotations

from migrate import _record
import os
from migrate._record import record

from migrate.errors import NotFoundError, UsageError
from migrate.runtime.container import Container
from migrate.runtime.context import RuntimeContext
from migrate.runtime.nsexec import NS_FLAGS
from migrate.runtime.state import StateStore

__all__ = ["ExecOptions", "exec_process", "build_process"]


@record
class ExecOptions:
    id: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    cwd: str | None = None
    user: str | None = None              # "uid[:gid]"
    additional_gids: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()
    tty: bool = False
    console_socket: str | None = None
    detach: bool = False
    pid_file: str | None = None
    process_file: str | None = None
    no_new_privs: bool = False
    preserve_fds: int = 0
    ignore_paused: bool = False          # a paused container: the process waits for resume
    sub_cgroups: tuple[tuple[str, str], ...] = ()   # (controller or "", path below ours)
    # cgroups.warmup.AttachWarmup started by the caller; waited for before the fork
    attach_warmup: object | None = None


def _int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"invalid {what} {text!r}: must be numeric") from None
    if value < 0:
        raise UsageError(f"invalid {what} {text!r}: must not be negative")
    return value


def build_process(base, opts: ExecOptions):
    """The process to run: --process file, or the container's own process
    with the command-line overrides (runc's rules). Raises UsageError."""
    from migrate import oci
    from migrate._light import loads

    if opts.process_file:
        try:
            with open(opts.process_file) as f:
                data = loads(f.read())
        except OSError as err:
            raise NotFoundError(f"--process {opts.process_file}: {err.strerror}") from None
        except ValueError as err:
            raise UsageError(f"--process {opts.process_file}: invalid JSON: {err}") from None
        return oci.parse_process(data, source=opts.process_file)
    if not opts.args:
        raise UsageError("exec needs a command to run (or --process FILE)")
    p = base
    user = p.user
    if opts.user:
        uid_s, _, gid_s = opts.user.partition(":")
        user = _record.replace(user, uid=_int(uid_s, "uid"),
                                   gid=_int(gid_s, "gid") if gid_s else user.gid)
    if opts.additional_gids:
        user = _record.replace(user, additional_gids=tuple(
            _int(g, "additional gid") for g in opts.additional_gids))
    caps = p.capabilities
    if opts.caps:
        from migrate.oci import CAP_NUMBERS

        for c in opts.caps:
            if c not in CAP_NUMBERS:
                raise UsageError(f"unknown capability {c!r}")
        caps = caps or oci.Capabilities()
        add = tuple(opts.caps)
        caps = _record.replace(
            caps, bounding=tuple(dict.fromkeys(caps.bounding + add)),
            effective=tuple(dict.fromkeys(caps.effective + add)),
            permitted=tuple(dict.fromkeys(caps.permitted + add)),
            ambient=tuple(dict.fromkeys(caps.ambient + add)),
            inheritable=tuple(dict.fromkeys(caps.inheritable + add)))
    for e in opts.env:
        if "=" not in e:
            raise UsageError(f"invalid --env {e!r}: use KEY=VALUE")
    keys = {e.split("=", 1)[0] for e in opts.env}
    env = tuple(e for e in p.env if e.split("=", 1)[0] not in keys) + tuple(opts.env)
    cwd = opts.cwd or p.cwd
    if not cwd.startswith("/"):
        raise UsageError(f"--cwd {cwd!r} must be an absolute path")
    return _record.replace(
        p, args=tuple(opts.args), env=env, cwd=cwd, user=user, capabilities=caps,
        terminal=opts.tty, console_size=None,
        no_new_privileges=p.no_new_privileges or opts.no_new_privs)


def exec_process(ctx: RuntimeContext, opts: ExecOptions) -> int:
    """Start the process; with detach return 0 at once, else its exit code.

    Raises NotFoundError, InvalidStateError, UsageError, LaunchError.
    """
    store = StateStore(ctx.root)
    container = Container.load(store, opts.id, ctx.proc_root)
    container.require("exec_ignore_paused" if opts.ignore_paused else "exec")
    cgroups = container.cgroups
    sub_cgroups = bool(opts.sub_cgroups and cgroups is not None)
    if sub_cgroups:
        from migrate.runtime.cgroups import sub_manager

        cgroups = sub_manager(cgroups, dict(opts.sub_cgroups),
                              rootless=container.state.rootless_cgroups)
    # What exec needs of the config, checked by `create` already: the
    # process, the namespaces and the seccomp profile (kept as JSON by the
    # parser too). Not parse_config: with its checks and the resources
    # model it is ~1.5 ms more of every exec (issue 16).
    config = container.state.config
    linux = config.get("linux") or {}
    base = None
    if not opts.process_file:
        from migrate.oci.reader import Invalid, Obj, read_process

        try:
            base = read_process(Obj(config.get("process"), "process"))
        except Invalid as err:
            raise err.to_error("config.json") from None
    process = build_process(base, opts)
    if opts.user or opts.additional_gids or opts.process_file:
        # The container's own user runs its init already, so it is mapped;
        # a user from the command line may not be (~0.5 ms of imports).
        from migrate.runtime.rootless import check_exec_user

        check_exec_user(process, container.state.pid, ctx.proc_root)
    if process.terminal and opts.detach and not opts.console_socket:
        raise UsageError("--tty with --detach needs --console-socket")
    if opts.console_socket and not process.terminal:
        raise UsageError("--console-socket needs --tty")
    if opts.pid_file:
        from migrate.runtime.lifecycle.bringup import check_pid_file

        check_pid_file(opts.pid_file)
    if opts.console_socket:
        from migrate.runtime.console import check_console_socket

        check_console_socket(opts.console_socket)
    pid = container.state.pid
    join = []
    for ns in linux.get("namespaces") or ():
        flag, name = NS_FLAGS[ns["type"]]
        join.append((f"{ctx.proc_root}/{pid}/ns/{name}", flag))
    seccomp = None
    if linux.get("seccomp"):   # ~0.5 ms of imports that most containers do not need
        from migrate.runtime.seccomp import plan_seccomp

        # The container's profile: runtime-spec's process (--process) has none.
        seccomp = plan_seccomp(linux["seccomp"])
    from migrate.runtime.spawn import can_spawn

    fast = can_spawn(join, process, seccomp, ignore_paused=opts.ignore_paused,
                     rootless_cgroups=container.state.rootless_cgroups)
    if not fast:
        from migrate.runtime.process import preload

        preload(process, False)   # the child cannot import after setns(mnt)
    fg = None
    if not opts.detach:
        from migrate.runtime.foreground import Foreground

        fg = Foreground(ctx.syscalls)
        fg.install()
    if opts.attach_warmup is not None:
        opts.attach_warmup.wait()       # no thread may run across the fork
    try:
        if fast:
            pid, console_fd = _spawn(ctx, opts, container, process, join, cgroups, seccomp,
                                     sub_cgroups), None
        else:
            launched = _launch(ctx, opts, container, process, join,
                               _Joining(cgroups) if sub_cgroups else cgroups, seccomp)
            pid, console_fd = launched.pid, launched.console_fd
        try:
            if opts.pid_file:
                from migrate.runtime.lifecycle.bringup import write_pid_file

                write_pid_file(opts.pid_file, pid)
            if console_fd is not None and opts.console_socket:
                from migrate.runtime.console import send_console

                send_console(opts.console_socket, console_fd)
                os.close(console_fd)
                console_fd = None
        except BaseException:
            # Nobody would ever hear of the process: do not leave it running.
            _kill_quietly(pid)
            if console_fd is not None:
                os.close(console_fd)
            raise
        if fg is None:
            return 0
        return fg.wait(pid, console_fd)
    finally:
        if fg is not None:
            fg.restore()


def _spawn(ctx, opts: ExecOptions, container, process, join, cgroups, seccomp,
           sub_cgroups: bool) -> int:
    """The fast path (runtime/spawn.py): the process is running when this returns."""
    from migrate.runtime.spawn import SpawnCgroupError, spawn

    try:
        return spawn(process, join=join, cgroups=cgroups, seccomp=seccomp,
                     preserve_fds=opts.preserve_fds,
                     setgroups_allowed=_setgroups_allowed(container.state.pid, ctx.proc_root),
                     sys=ctx.syscalls, proc_root=ctx.proc_root)
    except SpawnCgroupError as err:
        raise _joining_error(err.pid, err) if sub_cgroups else err from None


def _launch(ctx, opts: ExecOptions, container, process, join, cgroups, seccomp):
    """The launcher's path (runtime/launcher.py): fork, then the setns init in Python."""
    from migrate.runtime.init.setns import SetnsInit, run_setns_init
    from migrate.runtime.launcher import LaunchSpec, launch

    pid = container.state.pid
    init = SetnsInit(process=process, preserve_fds=opts.preserve_fds,
                     setgroups_allowed=_setgroups_allowed(pid, ctx.proc_root),
                     seccomp=seccomp)

    def on_seccomp(exec_pid: int, fd: int) -> None:
        from migrate.runtime.state import oci_state
        from migrate.runtime.seccomp_agent import process_state, send_listener

        st = oci_state(container.state, "running")
        send_listener(seccomp.listener_path, process_state(
            oci_version=st["ociVersion"], pid=exec_pid, metadata=seccomp.listener_metadata,
            state=st), fd)

    sys = ctx.syscalls
    return launch(LaunchSpec(
        join=tuple(join), cgroups=cgroups,
        child=lambda sock: run_setns_init(init, sys, sock),
        on_seccomp=on_seccomp if seccomp is not None and seccomp.notifies else None))


def _joining_error(pid: int, err):
    """A sub-cgroup that could not be joined, in runc's words (callers match on them)."""
    from migrate.errors import KernelError

    error = KernelError(f"adding pid {pid} to cgroups: write", err.path, err.errno)
    # Go's lower-case errno text, which runc's callers match on.
    error.args = (f"adding pid {pid} to cgroups: write {err.path}: "
                  f"{os.strerror(err.errno).lower()}",)
    return error


class _Joining:
    """A sub-cgroup manager whose failure to add says which pid and file (runc's words)."""

    def __init__(self, manager):
        self._manager = manager

    def add(self, pid: int) -> None:
        from migrate.errors import KernelError

        try:
            self._manager.add(pid)
        except KernelError as err:
            raise _joining_error(pid, err) from None


def _kill_quietly(pid: int) -> None:
    import _signal as signal

    from migrate._light import suppress

    with suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _setgroups_allowed(pid: int, proc_root: str) -> bool:
    try:
        with open(f"{proc_root}/{pid}/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True
