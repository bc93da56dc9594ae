"""pause / resume: freeze and thaw the container's cgroup."""

from __future__ import annotations

from migrate.errors import UnsupportedError
from migrate.runtime.container import Container
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import StateStore

__all__ = ["pause", "resume"]


def _freezer(container: Container):
    cg = container.cgroups
    if cg is None or not cg.is_usable():
        why = ("it was created rootless and no cgroup hierarchy had a subtree this user may "
               "write" if container.state.rootless_cgroups else "its cgroup is gone")
        raise UnsupportedError(
            f'container "{container.id}" has no cgroup of its own ({why}): pause and resume '
            f"need its freezer; run as root, or start migrate inside a cgroup delegated to "
            f"you (e.g. `systemd-run --user --scope -p Delegate=yes migrate ...`)")
    return cg


def pause(ctx: RuntimeContext, container_id: str) -> None:
    """Raises NotFoundError, InvalidStateError, UnsupportedError, KernelError."""
    store = StateStore(ctx.root)
    with store.lock(container_id):
        container = Container.load(store, container_id, ctx.proc_root)
        container.require("pause")
        _freezer(container).freeze()


def resume(ctx: RuntimeContext, container_id: str) -> None:
    store = StateStore(ctx.root)
    with store.lock(container_id):
        container = Container.load(store, container_id, ctx.proc_root)
        container.require("resume")
        _freezer(container).thaw()
