"""Bring-up: what every new container goes through, whoever starts its tasks.

create launches a fresh init; restore (and the migration destination, which
restores through ``checkpoint.restore``) has CRIU bring the tasks back.
Around that one step the path is the same, so it is written once:

    Bringup(ctx, id, "create" | "restore", spec, bundle, facts)
      __enter__      claim the ID (locked state dir + intent record)
      open_cgroups   cgroups (+ runc's device rules), undo registered
      new_state      the ContainerState the hooks and state.json see
      ...            caller: launch() or CRIU; creating_hooks(pid) from
                     its callback; ConsoleHandoff for the terminal master
      started(pid)   pid, start time, namespace paths
      commit         state.json, scratch undone, intent dropped, pid file
      __exit__       on an exception: undo everything in reverse, remove
                     the state dir, re-raise; always release the claim

then, in the foreground (`run`, `restore` without -d): ``wait_and_delete``.

Every side effect is recorded in the claim's intent before it happens
(runtime/state.py), so `delete --force` can undo what a SIGKILL interrupts.
"""

from __future__ import annotations

import os
import _signal as signal  # not signal.py: its enums cost start-up time (migrate/_light.py)
import time
from migrate._light import suppress

from migrate import _record
from migrate.errors import UsageError
from migrate.runtime.container import Container, proc_start_time
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import ContainerState, StateStore, atomic_write, oci_state

__all__ = ["Bringup", "ConsoleHandoff", "check_handoff", "default_device_rules",
           "cgroups_path", "created_timestamp", "write_pid_file", "check_pid_file",
           "run_poststart", "wait_and_delete"]


class Bringup:
    """One container coming up; use as a context manager (see the module
    docstring). ``on_failure(step)`` and ``always(step)`` push undo steps:
    the first run only if the bring-up fails, the second in every case
    (temporary mounts, fd copies), before the intent record is dropped."""

    def __init__(self, ctx: RuntimeContext, container_id: str, op: str, *, spec, bundle: str,
                 facts):
        self.ctx = ctx
        self.id = container_id
        self.op = op
        self.spec = spec
        self.bundle = bundle
        self.facts = facts
        self.store = StateStore(ctx.root)
        self.claim = None
        self.cgroups = None
        self.state: ContainerState | None = None
        self.container: Container | None = None
        self._tasks = False            # tasks may be in the cgroups: kill them on failure
        self._undo: list = []          # (step, what) on failure, in reverse
        self._scratch: list = []       # (step, what) in every case, in reverse

    def __enter__(self) -> "Bringup":
        self.claim = self.store.claim(self.id, self.op)
        return self

    def __exit__(self, exc_type, err, tb) -> bool:
        try:
            if err is not None:
                _unwind(err, self._undo + self._scratch)     # the scratch first
                self.store.remove(self.id)
            else:
                scratch, self._scratch = self._scratch, []   # left by no commit
                _unwind(None, scratch)
        finally:
            self.claim.release()
        return False

    @property
    def dir(self) -> str:
        return self.claim.dir

    def on_failure(self, step, what: str | None = None) -> None:
        self._undo.append((step, what))

    def always(self, step, what: str | None = None) -> None:
        self._scratch.append((step, what))

    def open_cgroups(self, *, check_free: bool = False, **intent):
        """Create the container's cgroups with runc's default device rules.
        ``check_free``: refuse a frozen cgroup and warn about a used one
        before taking it (create). ``intent``: more facts for the record.
        Raises KernelError, InvalidStateError."""
        from migrate.runtime.cgroups import open_manager

        linux, facts = self.spec.linux, self.facts
        manager = open_manager(container_id=self.id,
                               cgroups_path=cgroups_path(self.ctx, linux.cgroups_path, self.id,
                                                         facts.cgroups),
                               systemd=self.ctx.systemd_cgroup, rootless=facts.cgroups,
                               cgroup_root=self.ctx.cgroup_root)
        if check_free:
            # Before it is ours: a failure here must not remove someone else's cgroup.
            _check_cgroup_is_free(self.id, manager)
        self.cgroups = manager
        self.claim.record(cgroup=manager.to_state(), rootless_cgroups=facts.cgroups, **intent)
        self.on_failure(self._remove_cgroups, "removing cgroups")
        manager.create()
        manager.apply_resources(default_device_rules(linux.resources))
        return manager

    def expect_tasks(self) -> None:
        """From now on a failure kills whatever is in the cgroups first."""
        self._tasks = True

    def _remove_cgroups(self) -> None:
        cgroups = self.cgroups
        if self._tasks:
            cgroups.kill_all(signal.SIGKILL)
            deadline = time.monotonic() + 5
            while cgroups.pids() and time.monotonic() < deadline:
                time.sleep(0.01)
        cgroups.destroy()              # and our empty parent cgroup

    def track(self, pid: int) -> None:
        """A process of ours that must die with a failed bring-up."""
        self.claim.add("processes", [pid, proc_start_time(pid, self.ctx.proc_root)])
        self.expect_tasks()
        self.on_failure(lambda: _signal(pid))

    def new_state(self, spec, *, terminal: bool, no_pivot: bool, restored: bool = False,
                  **extra) -> ContainerState:
        from migrate import oci

        facts = self.facts
        self.state = ContainerState(
            id=self.id, bundle=self.bundle, rootfs=spec.root.path, created=created_timestamp(),
            owner="", annotations=dict(spec.annotations), config=oci.spec_to_dict(spec),
            cgroup=self.cgroups.to_state(), rootless_euid=facts.euid,
            rootless_cgroups=facts.cgroups, no_pivot=no_pivot, terminal=terminal,
            restored=restored, notify_socket=self.ctx.notify_socket, **extra)
        return self.state

    def creating_hooks(self, pid: int) -> None:
        """prestart, createRuntime and createContainer, with the state
        "creating" for ``pid`` (runc runs them at the same point for both)."""
        from migrate.runtime.hooks import run_hooks

        hooks = self.spec.hooks
        self.state.pid = pid
        st = oci_state(self.state, "creating")
        run_hooks(hooks.prestart, state=st, name="prestart")
        run_hooks(hooks.create_runtime, state=st, name="createRuntime")
        run_hooks(hooks.create_container, state=st, name="createContainer")

    def started(self, pid: int, *, stdio: list | None = None) -> Container:
        """The container's init is ``pid``: record it and where its namespaces
        are. ``stdio``: what the init was handed as fds 0-2 (runtime/stdio.py);
        None reads them from the init, which must not have run user code yet."""
        from migrate.runtime.nsexec import NS_FLAGS
        from migrate.runtime.stdio import init_stdio

        state, proc = self.state, self.ctx.proc_root
        state.pid = pid
        state.pid_start = proc_start_time(pid, proc)
        state.namespaces = {ns.type: ns.path or f"{proc}/{pid}/ns/{NS_FLAGS[ns.type][1]}"
                            for ns in self.spec.linux.namespaces}
        state.stdio = init_stdio(pid, proc) if stdio is None else stdio
        state.external_descriptors = [e["path"] or "/dev/null" for e in state.stdio]
        self.container = Container(state, self.store, proc)
        return self.container

    def commit(self, pid_file: str | None) -> Container:
        """Save the state, undo the scratch, drop the intent, write the pid file."""
        self.container.save()
        scratch, self._scratch = self._scratch, []
        _unwind(None, scratch)
        self.claim.done()
        if pid_file:
            write_pid_file(pid_file, self.state.pid)
        return self.container


def _unwind(err, steps) -> None:
    """Run undo steps in reverse; with ``err`` their failures become notes on
    it, without one the first failure is raised."""
    for step, what in reversed(steps):
        try:
            step()
        except Exception as cleanup:  # noqa: BLE001
            if err is None:
                raise
            if isinstance(err, Exception):
                err.add_note(f"cleanup: {what} failed: {cleanup}" if what
                             else f"cleanup: {cleanup}")


def _signal(pid: int) -> None:
    # No wait: in a frozen cgroup it would not die before kill_all thaws it.
    with suppress(OSError):
        os.kill(pid, signal.SIGKILL)


class ConsoleHandoff:
    """Where a new container's terminal master goes: to --console-socket,
    or kept (a copy) for the foreground proxy, or nowhere."""

    def __init__(self, socket_path: str | None, keep: bool):
        self.socket_path = socket_path
        self.keep = keep
        self.master: int | None = None

    def give(self, fd: int) -> None:
        """``fd`` stays the caller's to close."""
        if self.socket_path:
            from migrate.runtime.console import send_console

            send_console(self.socket_path, fd)
        elif self.keep:
            self.master = os.dup(fd)


def check_handoff(pid_file: str | None, console_socket: str | None) -> None:
    """Before anything is made: --pid-file's directory exists and
    --console-socket is a socket. Raises UsageError, NotFoundError."""
    check_pid_file(pid_file)
    if console_socket:
        from migrate.runtime.console import check_console_socket

        check_console_socket(console_socket)


def wait_and_delete(ctx: RuntimeContext, container_id: str, fg, pid: int,
                    console_fd: int | None = None, notify=None, keep: bool = False) -> int:
    """The foreground end of `run` and `restore`: wait for the init (``fg``
    installed before it was started), put our signal handling back, delete
    the container unless ``keep``; return its exit code."""
    try:
        code = fg.wait(pid, console_fd, notify)
    finally:
        if notify is not None:
            notify.close()
        fg.restore()
    if not keep:
        from migrate.runtime.lifecycle.delete import delete

        with suppress(Exception):
            delete(ctx, container_id, force=True)
    return code


def run_poststart(state: ContainerState, spec=None) -> None:
    """The poststart hooks, warnings only (start, run, restore)."""
    if not state.config.get("hooks", {}).get("poststart"):
        return
    from migrate.runtime.hooks import run_hooks

    if spec is None:
        from migrate import oci

        spec = oci.parse_config(state.config, bundle=state.bundle)
    run_hooks(spec.hooks.poststart, state=oci_state(state, "running"), name="poststart",
              warn_only=True)


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
        from migrate._log import getLogger

        getLogger("migrate.runtime.lifecycle").warning(
            "container's cgroup is not empty: %d process(es) found", len(pids))
