"""state, list, ps: read-only views of containers."""

from __future__ import annotations

import os
from migrate._record import record

from migrate.errors import NotFoundError
from migrate.runtime.container import Container, Status
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import StateStore

__all__ = ["state", "list_containers", "ps", "ContainerSummary"]


def state(ctx: RuntimeContext, container_id: str) -> dict:
    """The OCI state of one container. Raises NotFoundError."""
    from migrate.runtime.state import oci_state

    store = StateStore(ctx.root)
    container = Container.load(store, container_id, ctx.proc_root)
    st = oci_state(container.state, container.status().value)
    st["rootless"] = container.state.rootless_euid and container.state.rootless_cgroups
    return st


@record
class ContainerSummary:
    id: str
    pid: int
    status: str
    bundle: str
    created: str
    owner: str
    annotations: dict
    rootfs: str = ""
    oci_version: str = ""


def list_containers(ctx: RuntimeContext) -> list[ContainerSummary]:
    store = StateStore(ctx.root)
    out = []
    for cid in store.list_ids():
        try:
            c = Container.load(store, cid, ctx.proc_root)
        except NotFoundError:
            continue   # deleted while we looked
        status = c.status()
        out.append(ContainerSummary(
            id=cid, pid=c.state.pid if status is not Status.STOPPED else 0,
            status=status.value, bundle=c.state.bundle, created=c.state.created,
            owner=c.state.owner or _owner(store.dir(cid)), annotations=c.state.annotations,
            rootfs=c.state.rootfs, oci_version=c.state.config.get("ociVersion", "")))
    return out


def _owner(path: str) -> str:
    import pwd

    try:
        uid = os.stat(path).st_uid
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return "#?"


def container_pids(ctx: RuntimeContext, container_id: str) -> list[int]:
    store = StateStore(ctx.root)
    container = Container.load(store, container_id, ctx.proc_root)
    if container.require("ps") is Status.STOPPED:
        # What is left in its cgroup (usually nothing): the PID namespace is gone.
        cg = container.cgroups
        return cg.pids() if cg is not None and cg.is_usable() else []
    from migrate.runtime.pidns import processes

    # Rootless without a delegated cgroup: walk the container's PID namespace.
    return processes(container)


def ps(ctx: RuntimeContext, container_id: str, ps_args: list[str]) -> str:
    """`ps` output restricted to the container's processes, like runc."""
    import subprocess   # ~3 ms of imports that `state` (hot) must not pay

    pids = container_pids(ctx, container_id)
    res = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=30)
    if res.returncode != 0:
        from migrate.errors import UsageError

        raise UsageError(f"ps {' '.join(ps_args)}: {res.stderr.strip()}")
    lines = res.stdout.splitlines()
    if not lines:
        return ""
    header = lines[0].split()
    try:
        pid_col = header.index("PID")
    except ValueError:
        from migrate.errors import UsageError

        raise UsageError("ps output has no PID column; pass options that show it") from None
    wanted = set(pids)
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > pid_col and fields[pid_col].isdigit() and int(fields[pid_col]) in wanted:
            out.append(line)
    return "\n".join(out)
