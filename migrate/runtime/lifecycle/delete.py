"""delete: remove a stopped (or, with --force, any) container."""

from __future__ import annotations

import contextlib
import os
import signal
import time

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
        # runs it after every checkpoint, which has already removed it.
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
                with contextlib.suppress(Exception):
                    cg.thaw()
            if cg is not None and cg.is_usable():
                with contextlib.suppress(Exception):
                    cg.kill_all(signal.SIGKILL)
            else:   # rootless without a delegated cgroup: walk its PID namespace
                from migrate.runtime.pidns import processes

                for pid in processes(container):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(container.state.pid, signal.SIGKILL)
            _wait_gone(container)
        elif cg is not None:
            # The init is gone; stray processes (from exec) must go too.
            with contextlib.suppress(Exception):
                cg.kill_all(signal.SIGKILL)
        if cg is not None:
            with contextlib.suppress(Exception):
                cg.destroy()
        store.remove(container_id)
    hooks = container.state.config.get("hooks", {}).get("poststop")
    if hooks:
        from migrate import oci
        from migrate.runtime.hooks import run_hooks
        from migrate.runtime.lifecycle.create import oci_state

        spec = oci.parse_config(container.state.config, bundle=container.state.bundle)
        run_hooks(spec.hooks.poststop, state=oci_state(container.state, "stopped"),
                  name="poststop", warn_only=True)
