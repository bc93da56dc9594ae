"""kill: send a signal to the container's init, or to all its processes."""

from __future__ import annotations

import _signal as signal  # not signal.py: its enums cost start-up time (migrate/_light.py)

from migrate.errors import InvalidStateError, KernelError
from migrate.runtime.container import NOT_RUNNING, Container, Status
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import StateStore

__all__ = ["kill"]


def kill(ctx: RuntimeContext, container_id: str, sig: int, *, all_processes: bool = False) -> None:
    """Raises NotFoundError, InvalidStateError, KernelError."""
    store = StateStore(ctx.root)
    with store.lock(container_id):
        container = Container.load(store, container_id, ctx.proc_root)
        status = container.status()
        if all_processes:
            cg = container.cgroups
            if status is Status.STOPPED and (cg is None or not cg.exists()):
                return   # nothing left to signal (runc: not an error with --all)
            if cg is not None and cg.is_usable():
                cg.kill_all(sig)
                return
            if status is Status.STOPPED:
                return
            # Rootless without a delegated cgroup: signal what a walk of the
            # container's PID namespace finds (pidns.py says what that misses).
            _kill_walked(ctx, container, sig)
            return
        if status is Status.STOPPED:
            raise InvalidStateError(container_id, "stopped", "kill",
                                    f'cannot kill container "{container_id}": {NOT_RUNNING}')
        try:
            ctx.syscalls.kill(container.state.pid, sig)
        except ProcessLookupError:
            raise InvalidStateError(container_id, "stopped", "kill",
                                    f'cannot kill container "{container_id}": {NOT_RUNNING}') from None
        except OSError as err:
            raise KernelError("kill", str(container.state.pid), err.errno or 1) from None
        if status is Status.PAUSED and sig == signal.SIGKILL:
            # A v1-frozen task dies only once thawed; other signals wait
            # for resume, as runc leaves them.
            cg = container.cgroups
            if cg is not None and cg.is_usable():
                cg.thaw()


def _kill_walked(ctx: RuntimeContext, container: Container, sig: int) -> None:
    from migrate.runtime.pidns import processes

    init = container.state.pid
    # The init last: once it dies its PID namespace is torn down, and a
    # signal other than SIGKILL should still reach everyone.
    for pid in sorted(processes(container), key=lambda p: p == init):
        try:
            ctx.syscalls.kill(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as err:
            raise KernelError("kill", str(pid), err.errno or 1) from None
