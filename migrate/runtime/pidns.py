"""A container's processes found without cgroups (rootless, no delegation).

With its own PID namespace, a container's processes are exactly those
whose ``/proc/PID/ns/pid`` is the init's (``exec`` joins it with setns).
Sharing the host's, the best we can do is the init and its descendants.

Unlike a cgroup, nothing stops a process from forking while we walk, and
we only see processes we may inspect (ptrace access mode read, proc(5)),
which for a rootless user are exactly their own. Callers that signal
every process (``kill --all``) accept that; ``pause`` cannot and refuses.
"""

from __future__ import annotations

import os

__all__ = ["container_pids", "has_own_pid_namespace", "processes"]


def _ns_id(pid: int, proc_root: str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"{proc_root}/{pid}/ns/pid")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _ppid(pid: int, proc_root: str) -> int | None:
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after its end.
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def _all_pids(proc_root: str) -> list[int]:
    try:
        return [int(n) for n in os.listdir(proc_root) if n.isdigit()]
    except OSError:
        return []


def container_pids(init_pid: int, *, own_pid_namespace: bool, proc_root: str = "/proc") -> list[int]:
    """Every process of the container whose init is ``init_pid``, sorted; [] when it is gone."""
    target = _ns_id(init_pid, proc_root)
    if target is None:
        return []
    if own_pid_namespace:
        return sorted(p for p in _all_pids(proc_root) if _ns_id(p, proc_root) == target)
    children: dict[int, list[int]] = {}
    for p in _all_pids(proc_root):
        parent = _ppid(p, proc_root)
        if parent is not None:
            children.setdefault(parent, []).append(p)
    found, todo = {init_pid}, [init_pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def has_own_pid_namespace(config: dict) -> bool:
    """True when the saved OCI config gives the container a new PID namespace."""
    namespaces = (config.get("linux") or {}).get("namespaces") or ()
    return any(ns.get("type") == "pid" and not ns.get("path") for ns in namespaces)


def processes(container) -> list[int]:
    """The processes of a loaded ``Container``, by its cgroup when usable, else by walking."""
    cg = container.cgroups
    if cg is not None and cg.is_usable():
        return sorted(cg.pids())
    if not container.is_alive():
        return []
    return container_pids(container.state.pid, proc_root=container.proc_root,
                          own_pid_namespace=has_own_pid_namespace(container.state.config))
