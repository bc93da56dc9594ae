"""events: a container's resource statistics and OOM notifications.

Events are dicts in runc's shape (``{"type", "id", "data"}``); the CLI
prints them. The watch ends when the container's cgroup is removed
(``delete``), as runc's does, or when its state is gone.
"""

from __future__ import annotations

import os
import select
import time

from migrate.runtime.container import Container
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import StateStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterator

__all__ = ["stats_event", "watch_events"]


def _load(ctx: RuntimeContext, container_id: str) -> tuple[Container, dict[str, str]]:
    from migrate.errors import UnsupportedError

    store = StateStore(ctx.root)
    container = Container.load(store, container_id, ctx.proc_root)
    container.require("events")
    cg = container.cgroups
    if cg is None or not cg.is_usable():
        raise UnsupportedError(f'container "{container_id}" has no cgroup of its own: '
                               f"no statistics to show")
    return container, cg.paths()


def _stats(container_id: str, paths: dict[str, str]) -> dict:
    from migrate.runtime.cgroups.events import collect_stats

    return {"type": "stats", "id": container_id, "data": collect_stats(paths)}


def stats_event(ctx: RuntimeContext, container_id: str) -> dict:
    """One ``stats`` event. Raises NotFoundError, InvalidStateError (stopped),
    UnsupportedError (no cgroup)."""
    _, paths = _load(ctx, container_id)
    return _stats(container_id, paths)


def watch_events(ctx: RuntimeContext, container_id: str, interval: float) -> Iterator[dict]:
    """``stats`` every ``interval`` seconds and ``oom`` as they happen, until the
    container's cgroup is removed. Raises as ``stats_event``."""
    from migrate.runtime.cgroups.base import log
    from migrate.runtime.cgroups.events import OomWatch

    container, paths = _load(ctx, container_id)
    state_dir = container.store.dir(container_id)
    try:
        oom = OomWatch(paths)
    except OSError as err:
        log.warning("no OOM notifications for %s: %s", container_id, err)
        oom = None
    fd = oom.fd if oom is not None else -1
    next_tick = time.monotonic() + interval
    try:
        while True:
            wait = max(0.0, next_tick - time.monotonic())
            # Wake at least every second so a removed cgroup without an
            # eventfd (v2, no memory controller) is noticed.
            ready = select.select([fd] if fd >= 0 else [], [], [], min(wait, 1.0))[0]
            if oom is not None and (ready or fd < 0):
                count = oom.read()
                if oom.gone():
                    return
                for _ in range(count):
                    yield {"type": "oom", "id": container_id}
            if not os.path.isdir(state_dir) or not any(os.path.isdir(p) for p in paths.values()):
                return
            if time.monotonic() >= next_tick:
                next_tick += interval
                yield _stats(container_id, paths)
    finally:
        if oom is not None:
            oom.close()
