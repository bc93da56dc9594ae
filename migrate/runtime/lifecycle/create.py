"""create: set up a container and leave its init waiting on exec.fifo."""

from __future__ import annotations

import contextlib
from migrate import _record
import os
import signal
import time
from migrate._record import record

from migrate.errors import NotFoundError, UsageError
from migrate.runtime.container import Container, proc_start_time
from migrate.runtime.context import RuntimeContext
from migrate.runtime.launcher import Launched, LaunchSpec, launch
from migrate.runtime.nsexec import NS_FLAGS, NsFlag
from migrate.runtime.state import ContainerState, StateStore, atomic_write, validate_id

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


def default_device_rules(resources):
    """runc's always-allowed devices, on top of what the spec asks."""
    from migrate.oci import DeviceRule, Resources

    rules = [DeviceRule(allow=False, access="rwm")]
    rules += list(resources.devices) if resources else []
    for t, major, minor in (("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9),
                            ("c", 5, 0), ("c", 5, 1), ("c", 5, 2), ("c", 136, None),
                            ("c", 10, 200)):
        rules.append(DeviceRule(allow=True, type=t, major=major, minor=minor, access="rwm"))
    rules += [DeviceRule(allow=True, type="c", access="m"), DeviceRule(allow=True, type="b", access="m")]
    base = resources if resources is not None else Resources()
    return _record.replace(base, devices=tuple(rules))


def oci_state(state: ContainerState, status: str) -> dict:
    """The runtime-spec state JSON, as `state` prints and hooks receive."""
    return {
        "ociVersion": state.config.get("ociVersion", "1.2.0"),
        "id": state.id,
        "pid": state.pid if status != "stopped" else 0,
        "status": status,
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "created": state.created,
        "owner": state.owner,
        "annotations": state.annotations,
    }


def cgroups_path(ctx: RuntimeContext, configured: str | None, container_id: str,
                 rootless: bool) -> str | None:
    """The spec's cgroupsPath, else ours: /migrate/<id> for the default
    --root, /migrate-<hash of root>/<id> for any other, so two runtime roots
    on one machine (two "hosts" in network namespaces) never share a cgroup.
    Rootless: None, for the cgroup manager's delegated default."""
    if configured or rootless:
        return configured
    from migrate.runtime.context import DEFAULT_ROOT

    if os.path.normpath(ctx.root) == DEFAULT_ROOT:
        return f"/migrate/{container_id}"
    tag = _sha256(os.path.normpath(ctx.root).encode()).hexdigest()[:8]
    return f"/migrate-{tag}/{container_id}"


def _sha256(data: bytes):
    # hashlib loads OpenSSL (libcrypto plus its config): 3 ms at best, 25 ms
    # measured on a busy machine, on every create with a --root of its own,
    # which is what engines pass. The interpreter's built-in sha256 is the
    # same function without that: _sha256 up to 3.11, _sha2 from 3.12.
    try:
        from _sha256 import sha256
    except ImportError:
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256
    return sha256(data)


def created_timestamp() -> str:
    """Now, as RFC 3339 UTC with microseconds (the state's "created")."""
    # time, not datetime: datetime is ~1 ms of imports on the hot path.
    ns = time.time_ns()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
            + f".{ns // 1000 % 1_000_000:06d}Z")


def write_pid_file(path: str, pid: int) -> None:
    """Raises KernelError naming the file (a missing directory, no permission)."""
    try:
        # Not durable, like the state file: the pid means nothing after a crash.
        atomic_write(os.path.abspath(path), f"{pid}".encode(), 0o644, durable=False)
    except OSError as err:
        from migrate.errors import KernelError

        raise KernelError.from_oserror("write pid file", err, path) from None


def check_pid_file(path: str | None) -> None:
    """Before anything is started: the directory of ``--pid-file`` must
    exist, or the container would be made and then torn down for nothing.
    Raises UsageError."""
    if not path:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--pid-file {path}: directory {directory} does not exist")
    if os.path.lexists(path) and not (os.path.islink(path) or os.path.isfile(path)):
        raise UsageError(f"--pid-file {path}: exists and is not a regular file")


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
    from migrate.runtime.cgroups import open_manager

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
    check_pid_file(opts.pid_file)
    if opts.console_socket:
        from migrate.runtime.console import check_console_socket

        check_console_socket(opts.console_socket)
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

    store = StateStore(ctx.root)
    # From here every side effect is recorded in the claim's intent before it
    # happens, so `delete --force` can undo what a SIGKILL interrupts.
    claim = store.claim(opts.id, "create")
    cdir = claim.dir
    notify = None
    cgroups = None
    launched = None
    fifo_fd = None
    try:
        manager = open_manager(container_id=opts.id,
                               cgroups_path=cgroups_path(ctx, linux.cgroups_path, opts.id,
                                                         facts.cgroups),
                               systemd=ctx.systemd_cgroup, rootless=facts.cgroups,
                               cgroup_root=ctx.cgroup_root)
        # Before it is ours: a failure here must not remove someone else's cgroup.
        _check_cgroup_is_free(opts.id, manager)
        cgroups = manager
        claim.record(cgroup=cgroups.to_state(), rootless_cgroups=facts.cgroups,
                     default_cgroups_path=not linux.cgroups_path)
        cgroups.create()
        cgroups.apply_resources(default_device_rules(linux.resources))
        if ctx.notify_socket:
            spec, notify = _with_notify_socket(spec, cdir, ctx.notify_socket, opts.foreground)
        if opts.wait_on_fifo:
            fifo = os.path.join(cdir, "exec.fifo")
            old = os.umask(0)
            try:
                os.mkfifo(fifo, 0o622)
            finally:
                os.umask(old)
            fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
        state = ContainerState(
            id=opts.id, bundle=bundle, rootfs=spec.root.path,
            created=created_timestamp(),
            owner="", annotations=dict(spec.annotations), config=oci.spec_to_dict(spec),
            cgroup=cgroups.to_state(), rootless_euid=facts.euid,
            rootless_cgroups=facts.cgroups, no_pivot=opts.no_pivot,
            terminal=spec.process.terminal, notify_socket=ctx.notify_socket)
        trees = _idmapped_trees(ctx, spec, bundle, create_ns)
        try:
            launched = launch(_launch_spec(ctx, opts, spec, state, cgroups, create_ns, join,
                                           idmap, facts, fifo_fd, bundle, trees, seccomp,
                                           close_in_child=(claim.fd,)))
        finally:
            if trees:
                from migrate.runtime.idmapped import close_trees

                close_trees(trees)
        if fifo_fd is not None:
            os.close(fifo_fd)
            fifo_fd = None
        state.pid = launched.pid
        state.pid_start = proc_start_time(launched.pid, ctx.proc_root)
        # In its cgroup already; recorded too for a container without one (rootless).
        claim.add("processes", [state.pid, state.pid_start])
        state.namespaces = _namespace_paths(linux, launched.pid, ctx.proc_root)
        state.external_descriptors = _descriptors(launched.pid, ctx.proc_root)
        container = Container(state, store, ctx.proc_root)
        launched.notify = notify
        if launched.console_fd is not None and opts.console_socket:
            from migrate.runtime.console import send_console

            send_console(opts.console_socket, launched.console_fd)
            os.close(launched.console_fd)
            launched.console_fd = None
        container.save()
        claim.done()
        if opts.pid_file:
            write_pid_file(opts.pid_file, launched.pid)
        return container, launched
    except BaseException as err:
        if notify is not None:
            notify.close()
        _undo(err, store, opts.id, cgroups, launched, fifo_fd)
        raise
    finally:
        claim.release()


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


def _check_cgroup_is_free(container_id: str, cgroups) -> None:
    """Refuse a frozen cgroup (the init would hang in it); warn about a used one.

    runc 1.1 does both (factory_linux.go); sharing a cgroup is refused from
    runc 1.2 on, but still works here with the warning. Raises
    InvalidStateError.
    """
    if not cgroups.is_usable() or not cgroups.exists():
        return
    if cgroups.is_frozen():
        from migrate.errors import InvalidStateError

        raise InvalidStateError(container_id, "frozen", "create",
                                f"container's cgroup unexpectedly frozen: "
                                f"{cgroups.freezer_path()} (thaw or remove it first)")
    pids = cgroups.pids()
    if pids:
        import logging

        logging.getLogger("migrate.runtime.lifecycle").warning(
            "container's cgroup is not empty: %d process(es) found", len(pids))


def _undo(err, store, cid, cgroups, launched, fifo_fd) -> None:
    """Remove everything a failed create made; cleanup failures become notes."""
    if fifo_fd is not None:
        os.close(fifo_fd)
    if launched is not None:
        with contextlib.suppress(OSError):
            os.kill(launched.pid, signal.SIGKILL)
        if launched.console_fd is not None:
            os.close(launched.console_fd)
    if cgroups is not None:
        try:
            if launched is not None:
                cgroups.kill_all(signal.SIGKILL)
            cgroups.destroy()
            from migrate.runtime.lifecycle.delete import remove_parent_cgroups

            remove_parent_cgroups(cgroups)
        except Exception as cleanup:  # noqa: BLE001
            if isinstance(err, Exception):
                err.add_note(f"cleanup: removing cgroups failed: {cleanup}")
    store.remove(cid)


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
                 idmapped=(), seccomp=None, close_in_child=()):
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
    hooks = spec.hooks
    has_hooks = bool(hooks.prestart or hooks.create_runtime or hooks.create_container)
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

    def on_hooks(pid: int) -> None:
        from migrate.runtime.hooks import run_hooks

        state.pid = pid
        st = oci_state(state, "creating")
        run_hooks(hooks.prestart, state=st, name="prestart")
        run_hooks(hooks.create_runtime, state=st, name="createRuntime")
        run_hooks(hooks.create_container, state=st, name="createContainer")

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
        on_hooks=on_hooks if has_hooks else None, write_file=sys.write_file,
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


def _namespace_paths(linux, pid: int, proc_root: str) -> dict[str, str]:
    out = {}
    for ns in linux.namespaces:
        out[ns.type] = ns.path or f"{proc_root}/{pid}/ns/{NS_FLAGS[ns.type][1]}"
    return out


def _descriptors(pid: int, proc_root: str) -> list[str]:
    out = []
    for fd in range(3):
        try:
            out.append(os.readlink(f"{proc_root}/{pid}/fd/{fd}"))
        except OSError:
            out.append("/dev/null")
    return out
