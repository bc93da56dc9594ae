"""create: set up a container and leave its init waiting on exec.fifo.

The steps every new container shares with restore (claim, cgroups, state,
hooks, console, pid file, undo) are in bringup.py; this is create's own:
the checks of config.json and the launch of a fresh init.
"""

from __future__ import annotations

import os
from migrate._record import record

from migrate.errors import NotFoundError, UsageError
from migrate.runtime.container import Container
from migrate.runtime.context import RuntimeContext
from migrate.runtime.launcher import Launched, LaunchSpec, launch
from migrate.runtime.lifecycle.bringup import (  # noqa: F401  (re-exported)
    Bringup, ConsoleHandoff, cgroups_path, check_handoff, check_pid_file, created_timestamp,
    default_device_rules, write_pid_file)
from migrate.runtime.nsexec import NS_FLAGS, NsFlag
from migrate.runtime.state import oci_state, validate_id

__all__ = ["CreateOptions", "create", "oci_state", "write_pid_file", "check_pid_file",
           "default_device_rules"]


@record
class CreateOptions:
    id: str
    bundle: str = "."
    pid_file: str | None = None
    console_socket: str | None = None
    no_pivot: bool = False
    no_new_keyring: bool = False
    preserve_fds: int = 0
    foreground: bool = False      # `run` without -d: the runtime stays and waits
    wait_on_fifo: bool = True     # False for `run`: no separate start
    # cgroups.warmup.AttachWarmup started by the caller; waited for before the fork
    attach_warmup: object | None = None


def _timens_offsets(linux) -> str | None:
    if not linux.time_offsets:
        return None
    return "".join(f"{clock} {o.secs} {o.nanosecs}\n" for clock, o in linux.time_offsets.items())


def create(ctx: RuntimeContext, opts: CreateOptions) -> tuple[Container, Launched]:
    """Create the container. On failure nothing is left behind.

    Raises UsageError, NotFoundError, ExistsError, KernelError, MountError,
    LaunchError.
    """
    from migrate import oci
    from migrate.runtime import rootless

    validate_id(opts.id)
    bundle = os.path.abspath(opts.bundle)
    if not os.path.isdir(bundle):
        raise NotFoundError(f"bundle {bundle} does not exist")
    spec = oci.load_config(bundle)
    if spec.process is None:
        raise UsageError("config.json: process is required to create a container")
    if not os.path.isdir(spec.root.path):
        raise NotFoundError(f"rootfs {spec.root.path} does not exist")
    if spec.process.terminal and not opts.foreground and not opts.console_socket:
        raise UsageError("process.terminal is true: a detached container needs --console-socket")
    if opts.console_socket and not spec.process.terminal:
        raise UsageError("--console-socket needs process.terminal set to true in config.json")
    if opts.preserve_fds < 0:
        raise UsageError("--preserve-fds must not be negative")
    check_handoff(opts.pid_file, opts.console_socket)
    linux = spec.linux
    seccomp = None
    if linux.seccomp:   # the module is ~0.5 ms of imports that most runs do not need
        from migrate.runtime.seccomp import plan_seccomp

        # Checked before anything exists: a profile we cannot apply fails here.
        seccomp = plan_seccomp(linux.seccomp)
    facts = rootless.detect(ctx.rootless)
    create_ns, join = NsFlag(0), []
    for ns in linux.namespaces:
        flag, _name = NS_FLAGS[ns.type]
        if ns.path:
            join.append((ns.path, flag))
        else:
            create_ns |= flag
    if not (create_ns & NsFlag.MNT):
        raise UsageError("config.json: a new mount namespace is required")
    idmap = None
    if create_ns & NsFlag.USER:
        from migrate.runtime.idmap import plan_idmap

        idmap = plan_idmap(linux.uid_mappings, linux.gid_mappings,
                           privileged=not facts.euid, euid=os.geteuid(), egid=os.getegid())
    rootless.check_spec(spec, facts, idmap)

    with Bringup(ctx, opts.id, "create", spec=spec, bundle=bundle, facts=facts) as up:
        cgroups = up.open_cgroups(check_free=True)
        notify = None
        if ctx.notify_socket:
            spec, notify = _with_notify_socket(spec, up.dir, ctx.notify_socket, opts.foreground)
            if notify is not None:
                up.on_failure(notify.close)
        fifo_fd = None
        if opts.wait_on_fifo:
            fifo = os.path.join(up.dir, "exec.fifo")
            old = os.umask(0)
            try:
                os.mkfifo(fifo, 0o622)
            finally:
                os.umask(old)
            fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
            up.always(lambda: os.close(fifo_fd))
        state = up.new_state(spec, terminal=spec.process.terminal, no_pivot=opts.no_pivot)
        trees = _idmapped_trees(ctx, spec, bundle, create_ns)
        if opts.attach_warmup is not None:
            opts.attach_warmup.wait()       # no thread may run across the fork
        try:
            launched = launch(_launch_spec(ctx, opts, spec, state, cgroups, create_ns, join,
                                           idmap, facts, fifo_fd, bundle, trees, seccomp,
                                           hooks=up.creating_hooks,
                                           close_in_child=(up.claim.fd,)))
        finally:
            if trees:
                from migrate.runtime.idmapped import close_trees

                close_trees(trees)
        # In its cgroup already; recorded too for a container without one (rootless).
        up.track(launched.pid)
        up.on_failure(lambda: _close_console(launched))
        container = up.started(launched.pid)
        launched.notify = notify
        if launched.console_fd is not None and opts.console_socket:
            ConsoleHandoff(opts.console_socket, keep=False).give(launched.console_fd)
            os.close(launched.console_fd)
            launched.console_fd = None
        up.commit(opts.pid_file)
        return container, launched


def _close_console(launched: Launched) -> None:
    if launched.console_fd is not None:
        os.close(launched.console_fd)
        launched.console_fd = None


def _with_notify_socket(spec, cdir: str, host_socket: str, listen: bool):
    """Bind the state dir's notify/ into the container and point the process at it."""
    from migrate import _record, oci
    from migrate.runtime.notify import CONTAINER_DIR, CONTAINER_SOCKET, NotifyProxy, prepare_notify_dir

    path = prepare_notify_dir(cdir)
    mount = oci.Mount(destination=CONTAINER_DIR, type="bind", source=path,
                      options=("bind", "nosuid", "nodev", "noexec"))
    env = tuple(e for e in spec.process.env if not e.startswith("NOTIFY_SOCKET="))
    process = _record.replace(spec.process, env=env + (f"NOTIFY_SOCKET={CONTAINER_SOCKET}",))
    spec = _record.replace(spec, mounts=spec.mounts + (mount,), process=process)
    return spec, (NotifyProxy(cdir, host_socket) if listen else None)


def _idmapped_trees(ctx, spec, bundle, create_ns) -> tuple:
    """Idmapped mounts are made here, before the init exists: see idmapped.py."""
    if not any(m.uid_mappings or m.gid_mappings or "idmap" in m.options
               or "ridmap" in m.options for m in spec.mounts):
        return ()
    from migrate.runtime.idmapped import open_idmapped_trees

    return open_idmapped_trees(ctx.syscalls, spec.mounts, spec.linux, bundle,
                               container_userns=bool(create_ns & NsFlag.USER),
                               proc_root=ctx.proc_root)


def _launch_spec(ctx, opts, spec, state, cgroups, create_ns, join, idmap, facts, fifo_fd, bundle,
                 idmapped=(), seccomp=None, hooks=None, close_in_child=()):
    """``hooks(pid)`` runs the creating hooks (Bringup.creating_hooks)."""
    from migrate.runtime.init.standard import StandardInit, run_standard_init
    from migrate.runtime.process import needs_ptrace_fence
    from migrate.runtime.rootfs import RootfsPlan, bind_sources

    linux = spec.linux
    in_userns = bool(create_ns & NsFlag.USER) or facts.in_userns or any(
        f == NsFlag.USER for _, f in join)
    plan = RootfsPlan(
        rootfs=spec.root.path, mounts=spec.mounts, devices=linux.devices,
        propagation=linux.rootfs_propagation, readonly=spec.root.readonly,
        masked_paths=linux.masked_paths, readonly_paths=linux.readonly_paths,
        in_userns=in_userns, no_pivot=opts.no_pivot,
        cgroup_paths=_cgroup_paths(cgroups, facts.cgroups),
        mount_label=linux.mount_label, idmapped=idmapped)
    has_hooks = bool(spec.hooks.prestart or spec.hooks.create_runtime
                     or spec.hooks.create_container)
    init = StandardInit(
        container_id=opts.id, spec=spec, bundle=bundle, rootfs=plan, fifo_fd=fifo_fd,
        preserve_fds=opts.preserve_fds, new_keyring=not opts.no_new_keyring,
        has_hooks=has_hooks,
        setgroups_allowed=not (idmap is not None and idmap.deny_setgroups),
        new_uts=bool(create_ns & NsFlag.UTS) or any(f == NsFlag.UTS for _, f in join),
        seccomp=seccomp,
        # Its own user namespace, not ours: a rootless runtime's forks are as
        # exposed to a container in the runtime's user namespace.
        ptrace_fence=needs_ptrace_fence(spec.process, bool(create_ns & NsFlag.USER) or any(
            f == NsFlag.USER for _, f in join)),
        # In a new user namespace the init may not reach the bind sources:
        # the runtime opens them for it (rootless: they are its own anyway,
        # and it could not join the namespace to open them).
        bind_sources=bind_sources(plan, bundle)
        if create_ns & NsFlag.USER and not facts.euid else ())
    sys = ctx.syscalls

    def mount_sources(pid: int) -> dict[int, int]:
        from migrate.runtime.rootfs import open_in_mount_namespace

        return open_in_mount_namespace(sys, pid, init.bind_sources, ctx.proc_root)

    def on_seccomp(pid: int, fd: int) -> None:
        from migrate.runtime.seccomp_agent import process_state, send_listener

        state.pid = pid
        st = oci_state(state, "creating")
        send_listener(seccomp.listener_path, process_state(
            oci_version=st["ociVersion"], pid=pid, metadata=seccomp.listener_metadata,
            state=st), fd)

    return LaunchSpec(
        create=create_ns, join=tuple(join), idmap=idmap,
        dumpable_for_idmap=facts.euid, timens_offsets=_timens_offsets(linux),
        cgroups=cgroups, child=lambda sock: run_standard_init(init, sys, sock),
        on_hooks=hooks if has_hooks else None, write_file=sys.write_file,
        close_in_child=tuple(close_in_child),
        on_seccomp=on_seccomp if seccomp is not None and seccomp.notifies else None,
        mount_sources=mount_sources if init.bind_sources else None)


def _cgroup_paths(cgroups, rootless: bool) -> dict[str, str]:
    """What the container's cgroup mount shows: its own cgroups and, in the
    hierarchies where (rootless) it could not get one, the cgroup it stays
    in, which is ours."""
    if not rootless:
        return cgroups.paths()
    from migrate.runtime.cgroups import current_paths

    return {**current_paths(), **(cgroups.paths() if cgroups.is_usable() else {})}
