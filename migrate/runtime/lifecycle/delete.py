"""delete: remove a stopped (or, with --force, any) container."""

from __future__ import annotations

import os
import _signal as signal  # not signal.py: its enums cost start-up time (migrate/_light.py)
import time
from migrate._light import suppress

from migrate.runtime.container import Container, Status
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import StateStore

__all__ = ["delete"]


def _wait_gone(container: Container, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while container.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)


def delete(ctx: RuntimeContext, container_id: str, *, force: bool = False) -> None:
    """Raises NotFoundError (not with ``force``), InvalidStateError (running
    without --force)."""
    store = StateStore(ctx.root)
    if force and not store.exists(container_id):
        # As runc: `delete --force` of a missing container succeeds. Podman
        # runs it after every checkpoint, which has already removed it. An
        # ID directory without state is a create or restore in progress (we
        # wait for its lock) or one that was killed: undo what it recorded.
        if not store.is_half_made(container_id) or _delete_half_made(ctx, store, container_id):
            return
    with store.lock(container_id):
        container = Container.load(store, container_id, ctx.proc_root)
        status = container.status()
        if not force:
            container.require("delete")
        cg = container.cgroups
        if status is not Status.STOPPED:
            if status is Status.PAUSED and cg is not None:
                # A frozen task cannot die: SIGKILL is queued until thaw.
                with suppress(Exception):
                    cg.thaw()
            if cg is not None and cg.is_usable():
                with suppress(Exception):
                    cg.kill_all(signal.SIGKILL)
            else:   # rootless without a delegated cgroup: walk its PID namespace
                from migrate.runtime.pidns import processes

                for pid in processes(container):
                    with suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            with suppress(OSError):
                os.kill(container.state.pid, signal.SIGKILL)
            _wait_gone(container)
        elif cg is not None:
            # The init is gone; stray processes (from exec) must go too.
            with suppress(Exception):
                cg.kill_all(signal.SIGKILL)
        if cg is not None:
            with suppress(Exception):
                cg.destroy()     # with our empty parent cgroup
        store.remove(container_id)
    hooks = container.state.config.get("hooks", {}).get("poststop")
    if hooks:
        from migrate import oci
        from migrate.runtime.hooks import run_hooks
        from migrate.runtime.state import oci_state

        spec = oci.parse_config(container.state.config, bundle=container.state.bundle)
        run_hooks(spec.hooks.poststop, state=oci_state(container.state, "stopped"),
                  name="poststop", warn_only=True)


def _delete_half_made(ctx: RuntimeContext, store: StateStore, container_id: str) -> bool:
    """Undo what the intent record of an interrupted create or restore lists
    (state.py): its processes, cgroups and mounts, then the directory.
    False if the operation was alive after all and has saved its state."""
    from migrate.errors import NotFoundError

    try:
        with store.lock(container_id):
            if store.exists(container_id):
                return False
            _undo_intent(ctx, store, container_id, store.load_intent(container_id))
    except NotFoundError:
        pass    # removed meanwhile
    return True


def _undo_intent(ctx: RuntimeContext, store: StateStore, container_id: str, intent: dict) -> None:
    from migrate.runtime.container import pid_alive

    # CRIU (or a lazy-pages daemon) first, so nothing more gets placed.
    for pid, start in intent.get("processes", ()):
        if pid_alive(pid, start, ctx.proc_root):
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    if intent.get("op") == "restore":
        _kill_tagged(ctx.proc_root, store.dir(container_id))
    cg = None
    if intent.get("cgroup"):
        from migrate.runtime.cgroups import load_manager

        with suppress(Exception):
            cg = load_manager(intent["cgroup"], rootless=bool(intent.get("rootless_cgroups")))
    if cg is not None:
        with suppress(Exception):
            cg.kill_all(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if not cg.pids():
                    break
            except Exception:   # noqa: BLE001 - gone is what we want
                break
            time.sleep(0.01)
        with suppress(Exception):
            cg.destroy()
    from migrate.runtime.mountinfo import mounts_at_or_below
    from migrate.runtime.syscalls import MNT

    criu_dir = intent.get("criu_work_dir")
    if isinstance(criu_dir, str) and os.path.isabs(criu_dir):
        umount_criu_cgyards(ctx, criu_dir)
    for path in reversed(intent.get("mounts", ())):
        # Only under the container's own directory: never unmount a path
        # named by a file just because it says so.
        if os.path.dirname(path) != store.dir(container_id):
            continue
        for point in mounts_at_or_below(path):
            with suppress(OSError):
                ctx.syscalls.umount(point, MNT.DETACH)
    store.remove(container_id)


def umount_criu_cgyards(ctx: RuntimeContext, work_dir: str) -> None:
    """Detach the cgroup yard a killed CRIU left in its work directory
    (mountinfo.CRIU_CGYARD_PREFIX) and remove its directory."""
    from migrate.runtime.mountinfo import CRIU_CGYARD_PREFIX, mounts_at_or_below
    from migrate.runtime.syscalls import MNT

    try:
        names = os.listdir(work_dir)
    except OSError:
        return
    for name in names:
        if not name.startswith(CRIU_CGYARD_PREFIX):
            continue
        yard = os.path.join(work_dir, name)
        for point in mounts_at_or_below(yard):
            with suppress(OSError):
                ctx.syscalls.umount(point, MNT.DETACH)
        if not mounts_at_or_below(yard):
            with suppress(OSError):
                os.rmdir(yard)


def _kill_tagged(proc_root: str, cdir: str) -> None:
    """SIGKILL every process whose environment carries the restore's tag
    (state.INTENT_ENV): criu swrk started but not yet recorded, and the
    tasks it forked before moving them into the container's cgroups. With
    rst_sibling those were the killed restore's children and now hang,
    waiting for a CRIU that is gone."""
    from migrate.runtime.state import INTENT_ENV

    tag = b"\0" + f"{INTENT_ENV}={cdir}".encode() + b"\0"
    for _ in range(3):      # a fork may appear while we look
        found = []
        for name in os.listdir(proc_root):
            if not name.isdigit():
                continue
            try:
                with open(f"{proc_root}/{name}/environ", "rb") as f:
                    if tag in b"\0" + f.read() + b"\0":
                        found.append(int(name))
            except OSError:
                continue
        if not found:
            return
        for pid in found:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
