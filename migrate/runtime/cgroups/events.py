"""Statistics and OOM notifications of a container's cgroup, in runc's shapes.

``collect_stats(paths)`` reads the cgroup files of every hierarchy in
``paths`` (controller -> directory, ``""`` for v2, as
``CgroupManager.paths()`` gives them) into the document ``runc events``
prints under ``"data"`` (runc's ``types.Stats``: key names, nesting, and
which zero values Go's ``omitempty`` leaves out).

``OomWatch`` is the v1 memory controller's OOM notification (an eventfd
registered in ``cgroup.event_control``, cgroup-v1/memory.rst section 9)
or, on v2, the ``oom_kill`` count of ``memory.events``.
"""

from __future__ import annotations

import contextlib
import os

from migrate.runtime.cgroups.base import flat_keyed

__all__ = ["collect_stats", "OomWatch"]

# cpuacct.stat counts USER_HZ ticks; runc reports nanoseconds.
_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _read(d: str | None, name: str) -> str | None:
    if not d:
        return None
    try:
        with open(os.path.join(d, name), encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _int(d: str | None, name: str) -> int:
    text = _read(d, name)
    try:
        return int(text.split()[0]) if text else 0
    except ValueError:
        return 0   # "max"


def _ints(text: str | None) -> list[int]:
    return [int(v) for v in (text or "").split() if v.isdigit()]


def _cpu_list(text: str | None) -> list[int]:
    """"0-2,4" -> [0, 1, 2, 4]."""
    out: list[int] = []
    for part in (text or "").strip().split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _omit(d: dict, *keys: str) -> dict:
    """Go's omitempty for the given keys (zero, empty list, empty map)."""
    for key in keys:
        if d.get(key) in (0, None, [], {}, ""):
            d.pop(key, None)
    return d


def _memory_entry(d: str, prefix: str) -> dict:
    limit = _int(d, prefix + "limit_in_bytes")
    return _omit({"limit": limit, "usage": _int(d, prefix + "usage_in_bytes"),
                  "max": _int(d, prefix + "max_usage_in_bytes"),
                  "failcnt": _int(d, prefix + "failcnt")}, "usage", "max")


def _blkio_entries(text: str | None) -> list[dict]:
    out = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) == 3 and ":" in fields[0]:
            major, _, minor = fields[0].partition(":")
            entry = {"major": int(major), "minor": int(minor), "op": fields[1],
                     "value": int(fields[2]) if fields[2].isdigit() else 0}
        elif len(fields) == 2 and ":" in fields[0]:
            major, _, minor = fields[0].partition(":")
            entry = {"major": int(major), "minor": int(minor), "value": int(fields[1])}
        else:
            continue
        out.append(_omit(entry, "major", "minor", "op", "value"))
    return out


def _v1(paths: dict[str, str]) -> dict:
    cpu, acct = paths.get("cpu"), paths.get("cpuacct")
    usage = {"total": _int(acct, "cpuacct.usage"),
             "percpu": _ints(_read(acct, "cpuacct.usage_percpu")),
             "percpu_kernel": _ints(_read(acct, "cpuacct.usage_percpu_sys")),
             "percpu_user": _ints(_read(acct, "cpuacct.usage_percpu_user"))}
    ticks = flat_keyed(_read(acct, "cpuacct.stat"))
    usage["kernel"] = ticks.get("system", 0) * _NS_PER_TICK
    usage["user"] = ticks.get("user", 0) * _NS_PER_TICK
    throttle = flat_keyed(_read(cpu, "cpu.stat"))
    stats: dict = {
        "cpu": {"usage": _omit(usage, "total", "percpu", "percpu_kernel", "percpu_user"),
                "throttling": _omit({"periods": throttle.get("nr_periods", 0),
                                     "throttledPeriods": throttle.get("nr_throttled", 0),
                                     "throttledTime": throttle.get("throttled_time", 0)},
                                    "periods", "throttledPeriods", "throttledTime")},
    }
    cs = paths.get("cpuset")
    flags = ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
             "memory_spread_page", "memory_spread_slab", "memory_pressure",
             "sched_load_balance", "sched_relax_domain_level")
    cpuset = {"cpus": _cpu_list(_read(cs, "cpuset.cpus")) if cs else [],
              **{name: _int(cs, f"cpuset.{name}") if cs else 0 for name in flags[:1]},
              "mems": _cpu_list(_read(cs, "cpuset.mems")) if cs else []}
    cpuset.update({name: _int(cs, f"cpuset.{name}") if cs else 0 for name in flags[1:]})
    stats["cpuset"] = _omit(cpuset, "cpus", "mems")
    mem = paths.get("memory")
    if mem:
        raw = flat_keyed(_read(mem, "memory.stat"))
        stats["memory"] = _omit({
            "cache": raw.get("cache", 0),
            "usage": _memory_entry(mem, "memory."),
            "swap": _memory_entry(mem, "memory.memsw."),
            "kernel": _memory_entry(mem, "memory.kmem."),
            "kernelTCP": _memory_entry(mem, "memory.kmem.tcp."),
            "raw": raw}, "cache", "raw")
    else:
        stats["memory"] = {"usage": {"limit": 0, "failcnt": 0}, "swap": {"limit": 0, "failcnt": 0},
                           "kernel": {"limit": 0, "failcnt": 0},
                           "kernelTCP": {"limit": 0, "failcnt": 0}}
    pids = paths.get("pids")
    stats["pids"] = _omit({"current": _int(pids, "pids.current"),
                           "limit": _int(pids, "pids.max")}, "current", "limit")
    bio = paths.get("blkio")
    blkio: dict = {}
    for key, name in (("ioServiceBytesRecursive", "io_service_bytes_recursive"),
                      ("ioServicedRecursive", "io_serviced_recursive")):
        entries = _blkio_entries(_read(bio, f"blkio.{name}") or _read(bio, f"blkio.throttle.{name}"))
        if entries:
            blkio[key] = entries
    stats["blkio"] = blkio
    huge: dict = {}
    hd = paths.get("hugetlb")
    if hd:
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(hd)):
                if name.startswith("hugetlb.") and name.endswith(".usage_in_bytes") \
                        and not name.endswith(".rsvd.usage_in_bytes"):
                    size = name[len("hugetlb."):-len(".usage_in_bytes")]
                    huge[size] = _omit({"usage": _int(hd, name),
                                        "max": _int(hd, f"hugetlb.{size}.max_usage_in_bytes"),
                                        "failcnt": _int(hd, f"hugetlb.{size}.failcnt")},
                                       "usage", "max")
    stats["hugetlb"] = huge
    return stats


def _v2(d: str) -> dict:
    cpu = flat_keyed(_read(d, "cpu.stat"))
    mem = flat_keyed(_read(d, "memory.stat"))
    events = flat_keyed(_read(d, "memory.events"))
    return {
        "cpu": {"usage": _omit({"total": cpu.get("usage_usec", 0) * 1000,
                                "kernel": cpu.get("system_usec", 0) * 1000,
                                "user": cpu.get("user_usec", 0) * 1000}, "total"),
                "throttling": _omit({"periods": cpu.get("nr_periods", 0),
                                     "throttledPeriods": cpu.get("nr_throttled", 0),
                                     "throttledTime": cpu.get("throttled_usec", 0) * 1000},
                                    "periods", "throttledPeriods", "throttledTime")},
        "cpuset": _omit({"cpus": _cpu_list(_read(d, "cpuset.cpus.effective")),
                         "mems": _cpu_list(_read(d, "cpuset.mems.effective"))}, "cpus", "mems"),
        "memory": _omit({"cache": mem.get("file", 0),
                         "usage": _omit({"limit": _int(d, "memory.max"),
                                         "usage": _int(d, "memory.current"),
                                         "failcnt": events.get("max", 0)}, "usage"),
                         "swap": _omit({"limit": _int(d, "memory.swap.max"),
                                        "usage": _int(d, "memory.swap.current"),
                                        "failcnt": 0}, "usage"),
                         "kernel": {"limit": 0, "failcnt": 0},
                         "kernelTCP": {"limit": 0, "failcnt": 0},
                         "raw": mem}, "cache", "raw"),
        "pids": _omit({"current": _int(d, "pids.current"), "limit": _int(d, "pids.max")},
                      "current", "limit"),
        "blkio": {},
        "hugetlb": {},
    }


def collect_stats(paths: dict[str, str]) -> dict:
    """runc's ``types.Stats`` document for the cgroup directories in ``paths``."""
    if "" in paths and "memory" not in paths and "cpuacct" not in paths:
        stats = _v2(paths[""])
    else:
        stats = _v1(paths)
    stats["intel_rdt"] = {}
    stats["network_interfaces"] = None
    return stats


class OomWatch:
    """An fd that becomes readable on each OOM event of the cgroup.

    v1: an eventfd registered for ``memory.oom_control``; the kernel also
    signals it when the cgroup is removed (``gone()`` tells the two apart).
    v2: no fd; ``poll()`` compares ``memory.events`` ``oom_kill`` counts.
    Raises OSError when the memory cgroup cannot be watched.
    """

    def __init__(self, paths: dict[str, str]):
        self.fd = -1
        self._dir = paths.get("memory")
        self._v2 = None
        self._kills = 0
        if self._dir:
            efd = os.eventfd(0, os.EFD_CLOEXEC)
            try:
                ofd = os.open(os.path.join(self._dir, "memory.oom_control"),
                              os.O_RDONLY | os.O_CLOEXEC)
                try:
                    fd = os.open(os.path.join(self._dir, "cgroup.event_control"),
                                 os.O_WRONLY | os.O_CLOEXEC)
                    try:
                        os.write(fd, f"{efd} {ofd}".encode())
                    finally:
                        os.close(fd)
                finally:
                    os.close(ofd)   # the kernel keeps its own reference
            except OSError:
                os.close(efd)
                raise
            self.fd = efd
        elif "" in paths:
            self._v2 = paths[""]
            self._kills = flat_keyed(_read(self._v2, "memory.events")).get("oom_kill", 0)

    def read(self) -> int:
        """Events since the last call (v1: drains the eventfd)."""
        if self.fd >= 0:
            try:
                return os.eventfd_read(self.fd)
            except BlockingIOError:
                return 0
        if self._v2:
            kills = flat_keyed(_read(self._v2, "memory.events")).get("oom_kill", 0)
            new, self._kills = kills - self._kills, kills
            return max(new, 0)
        return 0

    def gone(self) -> bool:
        """True once the watched cgroup has been removed."""
        d = self._dir or self._v2
        return bool(d) and not os.path.isdir(d)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
