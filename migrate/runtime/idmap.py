"""The parent's half of the uid/gid map handshake (the child's is nsexec/idmap.c).

Writing /proc/PID/{uid,gid}_map follows user_namespaces(7):
- a privileged writer (CAP_SETUID/CAP_SETGID over the parent namespace) may
  write any ranges directly;
- an unprivileged writer may map only its own ID, one line, and for gid_map
  only after writing "deny" to /proc/PID/setgroups;
- anything else goes through the setuid helpers newuidmap/newgidmap, which
  check /etc/subuid and /etc/subgid.
"""

from __future__ import annotations

import shutil
import subprocess
from migrate._record import record

from migrate.errors import KernelError, UsageError

__all__ = ["IdMapPlan", "plan_idmap", "write_idmaps", "format_map", "parse_subid", "uncovered"]


@record
class IdMapPlan:
    uid_map: tuple[tuple[int, int, int], ...]   # (container_id, host_id, size)
    gid_map: tuple[tuple[int, int, int], ...]
    use_helpers: bool        # newuidmap/newgidmap
    deny_setgroups: bool


def format_map(ranges) -> str:
    return "".join(f"{c} {h} {s}\n" for c, h, s in ranges)


def plan_idmap(uid_mappings, gid_mappings, *, privileged: bool, euid: int, egid: int) -> IdMapPlan:
    """Decide how to write the maps. Raises UsageError for maps we cannot write."""
    uid_map = tuple((m.container_id, m.host_id, m.size) for m in uid_mappings)
    gid_map = tuple((m.container_id, m.host_id, m.size) for m in gid_mappings)
    if not uid_map or not gid_map:
        raise UsageError("a user namespace needs both linux.uidMappings and linux.gidMappings")
    if privileged:
        return IdMapPlan(uid_map=uid_map, gid_map=gid_map, use_helpers=False, deny_setgroups=False)
    own = (len(uid_map) == 1 and uid_map[0][1] == euid and uid_map[0][2] == 1
           and len(gid_map) == 1 and gid_map[0][1] == egid and gid_map[0][2] == 1)
    if own:
        return IdMapPlan(uid_map=uid_map, gid_map=gid_map, use_helpers=False, deny_setgroups=True)
    for tool in ("newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            raise UsageError(f"mapping more than your own uid/gid needs {tool} "
                             f"(install the uidmap package)")
    return IdMapPlan(uid_map=uid_map, gid_map=gid_map, use_helpers=True, deny_setgroups=False)


def _helper(tool: str, pid: int, ranges) -> None:
    argv = [tool, str(pid)] + [str(x) for r in ranges for x in r]
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=30)
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise UsageError(f"{tool} {pid} failed: {msg[-1] if msg else 'exit ' + str(res.returncode)}")


def write_idmaps(pid: int, plan: IdMapPlan, write_file, proc_root: str = "/proc") -> None:
    """Write the maps of ``pid``. Raises KernelError or UsageError."""
    if plan.use_helpers:
        _helper("newuidmap", pid, plan.uid_map)
        _helper("newgidmap", pid, plan.gid_map)
        return
    base = f"{proc_root}/{pid}"
    steps = []
    if plan.deny_setgroups:
        steps.append((f"{base}/setgroups", "deny"))
    # gid_map before uid_map: once uid_map is written we may lose CAP_SETGID
    # over the namespace when unprivileged.
    steps += [(f"{base}/gid_map", format_map(plan.gid_map)),
              (f"{base}/uid_map", format_map(plan.uid_map))]
    for path, data in steps:
        try:
            write_file(path, data)
        except OSError as err:
            raise KernelError("write", path, err.errno or 1) from err


def parse_subid(text: str, names: tuple[str, ...]) -> list[tuple[int, int]]:
    """The (start, count) ranges /etc/subuid or /etc/subgid (subuid(5))
    delegates to any of ``names`` (a user name, or the ID as a string)."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in names and parts[1].isdigit() and parts[2].isdigit():
            out.append((int(parts[1]), int(parts[2])))
    return out


def uncovered(host_id: int, size: int, delegated: list[tuple[int, int]]) -> bool:
    """True when part of [host_id, host_id + size) is in no delegated range."""
    pos, end = host_id, host_id + size
    for start, count in sorted(delegated):
        if start <= pos < start + count:
            pos = start + count
            if pos >= end:
                return False
    return pos < end
