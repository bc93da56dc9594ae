"""update: change a live container's cgroup limits and remember them.

The new values are written to the container's cgroup, then merged into
``linux.resources`` of the saved config, so later commands (checkpoint,
restore, events) see what is in force.

runc 1.1's rules (``update.go``), kept here:

- Only fields the caller sets change (``None`` in the patch: keep).
- CPU quota and period: when only one of them is given, the other keeps
  its saved value (cgroup v2 writes both in one ``cpu.max`` line).
- ``memory.limit = -1`` without a swap value also lifts the swap limit
  (the kernel needs memory+swap >= memory), and the saved swap says so.
- Device rules are never rewritten by update: re-applying them would
  open a window where every device is denied to a running container.
"""

from __future__ import annotations

from migrate._record import record, replace
from migrate.runtime.container import Container
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import StateStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from migrate.oci.resources import Resources

__all__ = ["UpdateOptions", "update", "merge_resources", "plan_patch"]


@record
class UpdateOptions:
    id: str
    resources: "Resources"        # the patch: None / empty fields are left alone


def plan_patch(patch: "Resources", saved: "Resources | None") -> "Resources":
    """What to write to the cgroup: ``patch`` with runc's implied values filled in."""
    cpu, mem = patch.cpu, patch.memory
    old_cpu = saved.cpu if saved is not None else None
    if cpu is not None and old_cpu is not None and (cpu.quota is None) != (cpu.period is None):
        if cpu.quota is None and old_cpu.quota is not None:
            cpu = replace(cpu, quota=old_cpu.quota)
        elif cpu.period is None and old_cpu.period is not None:
            cpu = replace(cpu, period=old_cpu.period)
    if mem is not None and mem.limit == -1 and mem.swap is None:
        mem = replace(mem, swap=-1)
    # No device rules: see the module docstring.
    return replace(patch, cpu=cpu, memory=mem, devices=())


def _merge_record(old, new):
    """``old`` with every field that ``new`` sets (records nested one level)."""
    if old is None or new is None:
        return new if old is None else old
    changes = {}
    for name in new.__record_fields__:
        value = getattr(new, name)
        if value is None or value == () or value == {}:
            continue
        changes[name] = value
    return replace(old, **changes)


def merge_resources(saved: "Resources | None", patch: "Resources") -> "Resources":
    """The resources in force after ``patch`` (what state.json keeps)."""
    if saved is None:
        return patch
    merged = {}
    for name in ("memory", "cpu", "pids", "block_io", "network"):
        merged[name] = _merge_record(getattr(saved, name), getattr(patch, name))
    for name in ("hugepage_limits",):
        merged[name] = getattr(patch, name) or getattr(saved, name)
    merged["rdma"] = {**saved.rdma, **patch.rdma}
    merged["unified"] = {**saved.unified, **patch.unified}
    return replace(saved, **merged)


def update(ctx: RuntimeContext, opts: UpdateOptions) -> None:
    """Apply ``opts.resources`` to the container's cgroup and save them.

    A paused container stays paused. Raises NotFoundError,
    InvalidStateError (stopped), UnsupportedError (no cgroup, or a
    controller missing), KernelError (the kernel refused a value),
    UsageError (impossible values).
    """
    from migrate import oci
    from migrate.errors import UnsupportedError

    store = StateStore(ctx.root)
    with store.lock(opts.id):
        container = Container.load(store, opts.id, ctx.proc_root)
        container.require("update")
        cg = container.cgroups
        if cg is None or not cg.is_usable():
            raise UnsupportedError(f'container "{opts.id}" has no cgroup of its own: '
                                   f"its limits cannot be updated")
        config = container.state.config
        linux = config.setdefault("linux", {})
        saved_dict = linux.get("resources")
        saved = oci.parse_resources(saved_dict, source="state.json linux.resources") \
            if saved_dict else None
        cg.apply_resources(plan_patch(opts.resources, saved))
        merged = merge_resources(saved, plan_patch(opts.resources, saved))
        if saved is not None:
            # Device rules are kept as they were (the patch never has any).
            merged = replace(merged, devices=saved.devices)
        linux["resources"] = oci.resources_to_dict(merged)
        container.save()
