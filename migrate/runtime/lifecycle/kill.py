"""kill: send a signal to the container's init, or to all its processes."""

from __future__ import annotations

import os

from migrate.errors import InvalidStateError, KernelError
from migrate.runtime.container import Container, Status
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import StateStore

__all__ = ["kill"]


def kill(ctx: RuntimeContext, container_id: str, sig: int, *, all_processes: bool = False) -> None:
    """Raises NotFoundError, InvalidStateError, KernelError."""
    store = StateStore(ctx.root)
    with store.lock(container_id):
        container = Container.load(store, container_id, ctx.proc_root)
        status = container.status()
        if status is Status.STOPPED:
            raise InvalidStateError(container_id, "stopped", "kill",
                                    f'container "{container_id}" is not running')
        if all_processes and container.cgroups is not None:
            container.cgroups.kill_all(sig)
            return
        try:
            ctx.syscalls.kill(container.state.pid, sig)
        except ProcessLookupError:
            raise InvalidStateError(container_id, "stopped", "kill",
                                    f'container "{container_id}" is not running') from None
        except OSError as err:
            raise KernelError("kill", str(container.state.pid), err.errno or 1) from None
