"""cgroup v2 (unified hierarchy).

``V2Manager`` manages a container on a pure-v2 machine. The ``set_*``
functions write one controller's resources into a v2 directory; the hybrid
manager in ``v1.py`` uses them too, for the unified hierarchy (``unified``
resources, and controllers that are bound only there).

Conversions from the OCI (v1-shaped) values follow runc's
``libcontainer/cgroups/utils.go`` and ``fs2/*.go`` so the same config.json
gives the same limits under both runtimes.

Devices: v2 has no devices controller; enforcing device rules needs an
eBPF program attached to the cgroup, which this runtime does not do. Rules
beyond runc's defaults are logged as a warning and not enforced.
"""

from __future__ import annotations

import errno
import os
import _signal as signal  # not signal.py: its enums cost start-up time (migrate/_light.py)

from migrate.errors import KernelError, UnsupportedError, UsageError

from .base import (
    STATE_VERSION, ManagerBase, Mount, attr, cgroup_dir, flat_keyed, levels, log, read_int,
)

TYPE_CHECKING = False  # annotations only: typing stays off the hot path
if TYPE_CHECKING:
    from typing import Any

# Devices runc allows in every container (libcontainer/specconv AllowedDevices)
# plus the "c/b *:* m" mknod rules: (type, major, minor); None is a wildcard.
_DEFAULT_DEVICES = frozenset({
    ("c", None, None), ("b", None, None), ("c", 1, 3), ("c", 1, 5), ("c", 1, 7),
    ("c", 1, 8), ("c", 1, 9), ("c", 5, 0), ("c", 5, 1), ("c", 5, 2), ("c", 136, None),
    ("c", 10, 200),
})


def cpu_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000] (runc ConvertCPUSharesToCgroupV2Value)."""
    if not shares:
        return 0
    return 1 + ((max(shares, 2) - 2) * 9999) // 262142


def io_weight(blkio_weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000] (runc ConvertBlkIOToIOWeightValue)."""
    if not blkio_weight:
        return 0
    return 1 + ((max(blkio_weight, 10) - 10) * 9999) // 990


def swap_max(swap: int | None, memory: int | None) -> int | None:
    """OCI memory+swap -> memory.swap.max (swap alone); None = leave alone.

    Follows runc ConvertMemorySwapToCgroupV2Value; -1 means "max".
    """
    swap, memory = swap or 0, memory or 0
    if memory == -1 and swap == 0:
        return -1           # unlimited memory implies unlimited swap
    if swap in (-1, 0):
        return swap or None
    if memory in (0, -1):
        raise UsageError("cannot set a memory swap limit without a memory limit")
    if memory < 0:
        raise UsageError(f"invalid memory limit {memory}")
    if swap < memory:
        raise UsageError(f"memory+swap limit {swap} must be at least the memory limit {memory}")
    return swap - memory


def _num(value: int | None) -> str | None:
    """runc numToStr: 0/None unset, negative "max"."""
    if not value:
        return None
    return "max" if value < 0 else str(value)


def controllers_for(resources: Any) -> set[str]:
    """The v2 controllers a resources object asks for."""
    wanted = set()
    if attr(resources, "memory") is not None:
        wanted.add("memory")
    cpu = attr(resources, "cpu")
    if cpu is not None:
        wanted.add("cpu")
        if attr(cpu, "cpus") or attr(cpu, "mems"):
            wanted.add("cpuset")
    if attr(resources, "pids") is not None:
        wanted.add("pids")
    if attr(resources, "block_io") is not None:
        wanted.add("io")
    if attr(resources, "hugepage_limits"):
        wanted.add("hugetlb")
    for key in attr(resources, "unified") or {}:
        wanted.add(key.split(".", 1)[0])
    wanted.discard("cgroup")
    return wanted


def enable_controllers(mgr: ManagerBase, mount_point: str, path: str,
                       wanted: set[str] | None = None) -> None:
    """Enable controllers in ``cgroup.subtree_control`` from the root down to ``path``'s parent.

    ``wanted=None`` enables everything the root offers, like runc's
    fs2 CreateCgroupPath. Failures are ignored here (a level may hold
    processes and so refuse, "no internal processes" rule); a controller
    that ends up missing fails later, at the write that needs it.
    """
    chain = [mount_point, *levels(mount_point, path)][:-1]
    for level in chain:
        available = (mgr._read_opt(os.path.join(level, "cgroup.controllers")) or "").split()
        enabled = set((mgr._read_opt(os.path.join(level, "cgroup.subtree_control")) or "").split())
        todo = [c for c in available if (wanted is None or c in wanted) and c not in enabled]
        if not todo:
            continue
        target = os.path.join(level, "cgroup.subtree_control")
        try:
            mgr._write(target, " ".join("+" + c for c in todo))
        except KernelError:
            for c in todo:  # one by one, so one refusal doesn't block the rest
                try:
                    mgr._write(target, "+" + c)
                except KernelError as err:
                    log.debug("cannot enable controller %s: %s", c, err)


def _require(path: str, what: str) -> None:
    if not os.path.exists(path):
        ctrl = os.path.basename(path).split(".", 1)[0]
        raise UnsupportedError(
            f"cannot set {what}: {path} does not exist "
            f"(is the {ctrl} controller enabled in the parent's cgroup.subtree_control?)")


def set_memory(mgr: ManagerBase, d: str, mem: Any) -> None:
    limit, swap = attr(mem, "limit"), attr(mem, "swap")
    swap_v2 = swap_max(swap, limit)
    if swap_v2 is not None:  # 0 when memory == memory+swap: no swap at all
        swap_str = "max" if swap_v2 < 0 else str(swap_v2)
        path = os.path.join(d, "memory.swap.max")
        if os.path.exists(path):
            mgr._write(path, swap_str)
        elif swap_str not in ("max", "0"):  # no swap accounting: only a real limit matters
            _require(path, "the memory swap limit")
    if (value := _num(limit)) is not None:
        path = os.path.join(d, "memory.max")
        _require(path, "the memory limit")
        if attr(mem, "check_before_update") and limit > 0:
            usage = read_int(mgr._read_opt(os.path.join(d, "memory.current")))
            if usage is not None and usage > limit:
                raise UsageError(f"memory limit {limit} is below the current usage {usage} "
                                 "(checkBeforeUpdate is set)")
        mgr._write(path, value)
    if (value := _num(attr(mem, "reservation"))) is not None:
        path = os.path.join(d, "memory.low")
        _require(path, "the memory reservation")
        mgr._write(path, value)
    swappiness = attr(mem, "swappiness")
    if swappiness is not None and swappiness != -1:
        log.warning("memory swappiness is not supported on cgroup v2; ignored")
    if attr(mem, "disable_oom_killer"):
        log.warning("disabling the OOM killer is not supported on cgroup v2; ignored")
    if attr(mem, "kernel") or attr(mem, "kernel_tcp"):
        log.debug("kernel memory limits do not exist on cgroup v2; ignored")


def set_cpu(mgr: ManagerBase, d: str, cpu: Any) -> None:
    if attr(cpu, "realtime_runtime") or attr(cpu, "realtime_period"):
        raise UnsupportedError("real-time cpu limits (cpu.rt_*) are not supported on cgroup v2")
    shares, quota, period = attr(cpu, "shares"), attr(cpu, "quota"), attr(cpu, "period")
    burst, idle = attr(cpu, "burst"), attr(cpu, "idle")
    if shares:
        path = os.path.join(d, "cpu.weight")
        _require(path, "cpu shares")
        mgr._write(path, cpu_weight(shares))
    if idle is not None:
        mgr._write(os.path.join(d, "cpu.idle"), int(idle))
    burst_path = os.path.join(d, "cpu.max.burst")
    retry_burst = False
    if burst is not None:
        if not os.path.exists(burst_path):
            log.debug("cpu.max.burst is missing; cpu burst ignored (as runc does)")
        else:
            try:
                mgr._write(burst_path, burst)
            except KernelError as err:
                # A burst above the current quota is refused; the quota is
                # about to change, so retry after it (runc fs2/cpu.go).
                if err.errno != errno.EINVAL or not quota:
                    raise
                retry_burst = True
    if quota or period:
        value = str(quota) if quota and quota > 0 else "max"
        if period:
            value += f" {period}"
        path = os.path.join(d, "cpu.max")
        _require(path, "the cpu quota")
        mgr._write(path, value)
        if retry_burst:
            mgr._write(burst_path, burst)
    set_cpuset(mgr, d, cpu)


def set_cpuset(mgr: ManagerBase, d: str, cpu: Any) -> None:
    for name in ("cpus", "mems"):
        if value := attr(cpu, name):
            path = os.path.join(d, f"cpuset.{name}")
            _require(path, f"cpuset {name}")
            mgr._write(path, value)


def set_pids(mgr: ManagerBase, d: str, pids: Any) -> None:
    """pids.max; same file and values in v1 and v2.

    The spec says a limit <= 0 means "no limit": write "max", as crun and
    runc 1.2 do (runc PR #4023; runc 1.1 skipped 0, runc 1.4 writes it).
    """
    limit = attr(pids, "limit")
    if limit is not None:
        value = str(limit) if limit > 0 else "max"
        path = os.path.join(d, "pids.max")
        _require(path, "the pids limit")
        mgr._write(path, value)


def set_io(mgr: ManagerBase, d: str, bio: Any) -> None:
    weight, devices = attr(bio, "weight"), attr(bio, "weight_device") or ()
    bfq = os.path.join(d, "io.bfq.weight")
    has_bfq = os.path.exists(bfq)
    if weight:
        # BFQ takes blkio's own scale; io.weight needs the conversion (runc fs2/io.go).
        if has_bfq:
            mgr._write(bfq, weight)
        else:
            path = os.path.join(d, "io.weight")
            _require(path, "the block I/O weight")
            mgr._write(path, io_weight(weight))
    for dev in devices:
        if attr(dev, "weight"):
            if not has_bfq:
                raise UnsupportedError(f"cannot set a per-device block I/O weight: {bfq} does not exist")
            mgr._write(bfq, f"{dev.major}:{dev.minor} {dev.weight}")
    for field, key in (("throttle_read_bps_device", "rbps"), ("throttle_write_bps_device", "wbps"),
                       ("throttle_read_iops_device", "riops"), ("throttle_write_iops_device", "wiops")):
        for dev in attr(bio, field) or ():
            path = os.path.join(d, "io.max")
            _require(path, "block I/O throttling")
            mgr._write(path, f"{dev.major}:{dev.minor} {key}={dev.rate}")


def set_hugetlb(mgr: ManagerBase, d: str, limits: Any) -> None:
    for item in limits or ():
        path = os.path.join(d, f"hugetlb.{item.page_size}.max")
        _require(path, f"the {item.page_size} hugepage limit")
        mgr._write(path, item.limit)


def set_unified(mgr: ManagerBase, d: str, unified: dict[str, str]) -> None:
    """Write ``linux.resources.unified``: file name -> value, one line per write."""
    for key, value in (unified or {}).items():
        if "/" in key or key in (".", "..") or "." not in key:
            raise UsageError(f'unified resource "{key}" must be a file name like CONTROLLER.PARAMETER')
        path = os.path.join(d, key)
        if not os.path.exists(path):
            ctrl = key.split(".", 1)[0]
            available = (mgr._read_opt(os.path.join(d, "cgroup.controllers")) or "").split()
            if ctrl != "cgroup" and ctrl not in available:
                # runc's wording ("invalid configuration"), which its tests match.
                raise UnsupportedError(f'invalid configuration: unified resource "{key}" cannot be '
                                       f'set: controller "{ctrl}" is not available')
            raise UnsupportedError(f'unified resource "{key}" cannot be set: {path} does not exist')
        for line in str(value).splitlines() or [""]:
            mgr._write(path, line)


def warn_devices(devices: Any) -> None:
    """Warn when device rules beyond runc's defaults cannot be enforced (no eBPF)."""
    extra = []
    for rule in devices or ():
        kind = attr(rule, "type") or "a"
        key = (kind, attr(rule, "major"), attr(rule, "minor"))
        is_deny_all = not attr(rule, "allow") and kind == "a"
        if not is_deny_all and key not in _DEFAULT_DEVICES:
            extra.append(rule)
    if extra:
        log.warning("cgroup v2: %d device rule(s) beyond the defaults are not enforced "
                    "(device control on cgroup v2 needs eBPF, which is not supported)", len(extra))


class V2Manager(ManagerBase):
    """A container cgroup on the unified hierarchy mounted at ``mount_point``."""

    mode = "v2"

    def __init__(self, *, mount_point: str, path: str, **kw: Any):
        super().__init__(**kw)
        self._mount_point = mount_point
        self._path = path

    @classmethod
    def open(cls, mount: Mount, own: dict[str, str], inner: str, **kw: Any) -> "V2Manager":
        return cls(mount_point=mount.mount_point, path=cgroup_dir(mount, own.get(""), inner), **kw)

    def _dirs(self) -> list[str]:
        return [self._path]

    def _procs_dir(self) -> str:
        return self._path

    def create(self) -> None:
        with self._tolerated("create", disables=True):
            self._mkdir_p(self._mount_point, self._path)
            enable_controllers(self, self._mount_point, self._path)

    def add(self, pid: int) -> None:
        with self._tolerated("add", disables=True):
            self._write(os.path.join(self._path, "cgroup.procs"), pid)

    def apply_resources(self, resources: Any) -> None:
        if resources is None:
            return
        with self._tolerated("apply_resources"):
            d = self._path
            if (mem := attr(resources, "memory")) is not None:
                set_memory(self, d, mem)
            if (cpu := attr(resources, "cpu")) is not None:
                set_cpu(self, d, cpu)
            if (pids := attr(resources, "pids")) is not None:
                set_pids(self, d, pids)
            if (bio := attr(resources, "block_io")) is not None:
                set_io(self, d, bio)
            set_hugetlb(self, d, attr(resources, "hugepage_limits"))
            warn_devices(attr(resources, "devices"))
            if unified := attr(resources, "unified"):
                enable_controllers(self, self._mount_point, self._path, controllers_for(resources))
                set_unified(self, d, unified)

    # -- freezer: cgroup.freeze, settled when cgroup.events says "frozen 1"

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> None:
        what = "freeze" if frozen else "thaw"
        if not self._usable:
            raise UnsupportedError(f"cannot {what} the container: it has no usable cgroup")
        path = os.path.join(self._path, "cgroup.freeze")
        if not os.path.exists(path):
            raise UnsupportedError(f"cannot {what} the container: {path} does not exist (kernel older than 5.2?)")
        self._write(path, "1" if frozen else "0")
        want = 1 if frozen else 0
        try:
            self._wait_for(os.path.join(self._path, "cgroup.events"),
                           lambda text: flat_keyed(text).get("frozen") == want, what)
        except KernelError:
            if frozen:  # don't leave it half frozen
                self._write(path, "0")
            raise

    def is_frozen(self) -> bool:
        if not self._usable:
            return False
        return self._read_opt(os.path.join(self._path, "cgroup.freeze")) == "1"

    def kill_all(self, sig: int) -> None:
        # cgroup.kill (5.14) kills the whole subtree atomically: no freeze needed.
        kill = os.path.join(self._path, "cgroup.kill")
        if self._usable and sig == signal.SIGKILL and os.path.exists(kill):
            self._write(kill, "1")
            return
        super().kill_all(sig)

    def paths(self) -> dict[str, str]:
        return {"": self._path}

    def freezer_path(self) -> str:
        return self._path

    def to_state(self) -> dict:
        return {"version": STATE_VERSION, "mode": self.mode, "usable": self._usable,
                "paths": self.paths(), "mounts": {"": self._mount_point}}

    def stats(self) -> dict:
        return v2_stats(self, self._path)


def v2_stats(mgr: ManagerBase, d: str) -> dict:
    """Best-effort usage numbers from a v2 directory (missing files skipped)."""
    out: dict[str, dict] = {}
    mem = {k: read_int(mgr._read_opt(os.path.join(d, f)))
           for k, f in (("usage", "memory.current"), ("limit", "memory.max"),
                        ("max_usage", "memory.peak"), ("swap_usage", "memory.swap.current"))}
    if any(v is not None for v in mem.values()):
        out["memory"] = mem
    current = read_int(mgr._read_opt(os.path.join(d, "pids.current")))
    if current is not None:
        out["pids"] = {"current": current, "limit": read_int(mgr._read_opt(os.path.join(d, "pids.max")))}
    cpu = flat_keyed(mgr._read_opt(os.path.join(d, "cpu.stat")))
    if "usage_usec" in cpu:
        out["cpu"] = {"usage_ns": cpu["usage_usec"] * 1000,
                      "user_ns": cpu.get("user_usec", 0) * 1000,
                      "system_ns": cpu.get("system_usec", 0) * 1000}
    return out
