"""cgroup v1, alone or "hybrid" (v1 controllers plus a unified v2 hierarchy).

One directory per mounted v1 hierarchy (joined hierarchies such as
``cpu,cpuacct`` share one), plus the ``name=systemd`` named hierarchy and,
on hybrid machines, the unified hierarchy under the ``""`` key. The
container joins all of them, as runc's cgroupfs driver does.

On hybrid machines a controller that is bound to the unified hierarchy
instead of a v1 one (``hugetlb`` on some kernels, everything under
systemd's hybrid mode) is set there with the v2 writers, and
``linux.resources.unified`` goes there too.

Values and write orders follow runc's ``libcontainer/cgroups/fs/*.go``.
"""

from __future__ import annotations

import errno
import os
import _signal as signal  # not signal.py: its enums cost start-up time (migrate/_light.py)

from migrate.errors import KernelError, MigrateError, UnsupportedError, UsageError

from .base import (
    STATE_VERSION, ManagerBase, Mount, attr, cgroup_dir, flat_keyed, levels, log, read_int,
    read_limit,
)

TYPE_CHECKING = False  # annotations only: typing stays off the hot path
if TYPE_CHECKING:
    from typing import Any

    from . import v2

# The hierarchy whose cgroup.procs lists the container's processes, by
# preference (any of them would do; freezer is the one CRIU looks at).
_PROCS_PREFERENCE = ("freezer", "pids", "memory", "devices", "name=systemd", "cpu")

# v1 controller -> its v2 name, for the hybrid fallback.
_V2_NAME = {"memory": "memory", "cpu": "cpu", "cpuset": "cpuset", "pids": "pids",
            "blkio": "io", "hugetlb": "hugetlb"}


def _asks(obj: Any, *fields: str) -> bool:
    """True when any field carries a value (None, False, 0, "" and () do not)."""
    return any(attr(obj, f) not in (None, False, 0, "", ()) for f in fields)


def device_rule(rule: Any) -> str:
    """An OCI device rule as a devices.allow/deny line ("c 1:3 rwm", "a")."""
    kind = attr(rule, "type") or "a"
    if kind == "a":
        return "a"
    major, minor = attr(rule, "major"), attr(rule, "minor")
    maj = "*" if major is None or major < 0 else str(major)
    mnr = "*" if minor is None or minor < 0 else str(minor)
    access = "".join(c for c in "rwm" if c in (attr(rule, "access") or "rwm"))
    return f"{kind} {maj}:{mnr} {access}"


class V1Manager(ManagerBase):
    """A container cgroup spread over v1 hierarchies (and the unified one on hybrid).

    ``paths`` maps a controller (``"cpu"``, ``"name=systemd"``, ``""`` for
    unified) to the container's directory; ``mounts`` maps the same keys to
    the hierarchy's mount point.
    """

    def __init__(self, *, paths: dict[str, str], mounts: dict[str, str], **kw: Any):
        super().__init__(**kw)
        self._paths = dict(paths)
        self._mounts = dict(mounts)
        if not paths:
            self.mode = "none"
        else:
            self.mode = "hybrid" if "" in paths else "v1"

    @classmethod
    def open(cls, mounts: list[Mount], unified: Mount | None, own: dict[str, str],
             inner: str, **kw: Any) -> "V1Manager":
        paths: dict[str, str] = {}
        mount_points: dict[str, str] = {}
        for m in mounts:
            # Other named hierarchies belong to other tools; name=systemd is
            # joined like runc does, so systemd-aware tools see the container.
            keys = [c for c in m.controllers if not c.startswith("name=") or c == "name=systemd"]
            if not keys or any(k in paths for k in keys):
                continue  # an extra bind mount of a hierarchy we already have
            d = cgroup_dir(m, own.get(keys[0]), inner)
            for k in keys:
                paths[k], mount_points[k] = d, m.mount_point
        if unified is not None:
            paths[""] = cgroup_dir(unified, own.get(""), inner)
            mount_points[""] = unified.mount_point
        return cls(paths=paths, mounts=mount_points, **kw)

    def _dirs(self) -> list[str]:
        out: list[str] = []
        for key in (*_PROCS_PREFERENCE, *self._paths):
            d = self._paths.get(key)
            if d and d not in out:
                out.append(d)
        return out

    def _procs_dir(self) -> str:
        dirs = self._dirs()
        return dirs[0] if dirs else ""

    def _keys_of(self, d: str) -> list[str]:
        return [k for k, v in self._paths.items() if v == d]

    # -- create / add

    def create(self) -> None:
        self._each_dir("create", self._create_dir)

    def _create_dir(self, d: str) -> None:
        keys = self._keys_of(d)
        mount_point = self._mounts[keys[0]]
        self._mkdir_p(mount_point, d)
        if "cpuset" in keys:
            self._copy_cpuset_down(mount_point, d)

    def _each_dir(self, what: str, op) -> None:
        """Run ``op`` on every directory; rootless, drop the ones that fail.

        A rootless user usually owns a delegated subtree in some hierarchies
        only (typically the unified one, from systemd's Delegate=yes): keep
        what works, so ps/pause/kill --all can use it, rather than give up
        on every hierarchy because the root-owned v1 ones refuse.
        """
        if not self._rootless:
            for d in self._dirs():
                op(d)
            return
        for d in self._dirs():
            try:
                op(d)
            except MigrateError as err:
                log.debug("rootless: ignoring cgroup error during %s of %s, not using it: %s",
                          what, d, err)
                self._drop(d)
        if not self._paths:
            self._usable = False

    def _drop(self, d: str) -> None:
        for key in self._keys_of(d):
            del self._paths[key]
            del self._mounts[key]
        self.mode = "none" if not self._paths else ("hybrid" if "" in self._paths else "v1")

    def _copy_cpuset_down(self, mount_point: str, d: str) -> None:
        # A new v1 cpuset starts with empty cpuset.cpus/mems and no task can
        # join it until both are set (cgroup-v1/cpusets.rst); copy each empty
        # level from its parent, top down (runc fs/cpuset.go ensureParent).
        parent = mount_point
        for level in levels(mount_point, d):
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not self._read(os.path.join(level, name)):
                    self._write(os.path.join(level, name), self._read(os.path.join(parent, name)))
            parent = level

    def add(self, pid: int) -> None:
        self._each_dir("add", lambda d: self._write(os.path.join(d, "cgroup.procs"), pid))

    # -- resources

    def _target(self, v1_name: str, what: str, asked: bool) -> tuple[str, str] | None:
        """Where to write a controller's values: ("v1"|"v2", dir), or None to skip."""
        from . import v2   # on use: joining and freezer checks need none of it

        if not asked:
            return None
        if v1_name in self._paths:
            return "v1", self._paths[v1_name]
        unified = self._paths.get("")
        v2_name = _V2_NAME.get(v1_name)
        if unified and v2_name:
            available = (self._read_opt(os.path.join(self._mounts[""], "cgroup.controllers")) or "").split()
            if v2_name in available:
                v2.enable_controllers(self, self._mounts[""], unified, {v2_name})
                return "v2", unified
        raise UnsupportedError(f"cannot set {what}: the {v1_name} cgroup controller is not mounted")

    def apply_resources(self, resources: Any) -> None:
        if resources is None:
            return
        with self._tolerated("apply_resources"):
            self._apply(resources)

    def _apply(self, r: Any) -> None:
        from . import v2

        mem, cpu, pids, bio = (attr(r, n) for n in ("memory", "cpu", "pids", "block_io"))
        # 0 means "unset" for most values (runc), but not for burst and idle.
        cpu_asked = (_asks(cpu, "shares", "quota", "period", "realtime_runtime", "realtime_period")
                     or attr(cpu, "burst") is not None or attr(cpu, "idle") is not None)
        if t := self._target("cpu", "cpu limits", cpu_asked):
            if t[0] == "v1":
                self._set_cpu(t[1], cpu)
            else:
                v2.set_cpu(self, t[1], _without(cpu, "cpus", "mems"))
        if t := self._target("cpuset", "cpuset cpus/mems", _asks(cpu, "cpus", "mems")):
            v2.set_cpuset(self, t[1], cpu)  # same file names in v1 and v2
        mem_fields = ("limit", "reservation", "swap", "kernel", "kernel_tcp", "swappiness",
                      "disable_oom_killer")
        if t := self._target("memory", "memory limits", _asks(mem, *mem_fields) or attr(mem, "swappiness") == 0):
            (self._set_memory if t[0] == "v1" else lambda d, m: v2.set_memory(self, d, m))(t[1], mem)
        if t := self._target("pids", "the pids limit", attr(pids, "limit") is not None):
            v2.set_pids(self, t[1], pids)  # pids.max, same values in v1 and v2
        bio_fields = ("weight", "leaf_weight", "weight_device", "throttle_read_bps_device",
                      "throttle_write_bps_device", "throttle_read_iops_device", "throttle_write_iops_device")
        if t := self._target("blkio", "block I/O limits", _asks(bio, *bio_fields)):
            (self._set_blkio if t[0] == "v1" else lambda d, b: v2.set_io(self, d, b))(t[1], bio)
        huge = attr(r, "hugepage_limits")
        if t := self._target("hugetlb", "hugepage limits", bool(huge)):
            if t[0] == "v1":
                for item in huge:
                    self._write_required(t[1], f"hugetlb.{item.page_size}.limit_in_bytes", item.limit,
                                         f"the {item.page_size} hugepage limit")
            else:
                v2.set_hugetlb(self, t[1], huge)
        if devices := attr(r, "devices"):
            if "devices" in self._paths:
                self._set_devices(self._paths["devices"], devices)
            else:
                v2.warn_devices(devices)
        if unified := attr(r, "unified"):
            if "" not in self._paths:
                # "invalid configuration": runc's words, which its tests match.
                raise UnsupportedError("invalid configuration: unified (cgroup v2) resources "
                                       "need a cgroup v2 hierarchy, and this machine has only "
                                       "cgroup v1")
            v2.enable_controllers(self, self._mounts[""], self._paths[""], v2.controllers_for(r))
            v2.set_unified(self, self._paths[""], unified)

    def _write_required(self, d: str, name: str, value: Any, what: str) -> None:
        path = os.path.join(d, name)
        if not os.path.exists(path):
            raise UnsupportedError(f"cannot set {what}: {path} does not exist")
        self._write(path, value)

    def _set_cpu(self, d: str, cpu: Any) -> None:
        shares, quota, period = attr(cpu, "shares"), attr(cpu, "quota"), attr(cpu, "period")
        burst, idle = attr(cpu, "burst"), attr(cpu, "idle")
        if shares:
            path = os.path.join(d, "cpu.shares")
            self._write(path, shares)
            # The kernel clamps to [2, 262144] silently; say so (runc fs/cpu.go).
            got = read_int(self._read(path))
            if got is not None and got != shares:
                bound = "maximum" if shares > got else "minimum"
                raise UsageError(f"cpu shares {shares} out of range: the {bound} allowed is {got}")
        # A new period or burst can be refused (EINVAL) against the old quota
        # when the quota is about to change too: retry them after the quota.
        retry = []
        # period 0 means "unset" (runc); burst 0 is a real value.
        for name, value in (("cpu.cfs_period_us", period or None), ("cpu.cfs_burst_us", burst)):
            if value is None:
                continue
            try:
                self._write_required(d, name, value, name)
            except KernelError as err:
                if err.errno != errno.EINVAL or not quota:
                    raise
                retry.append((name, value))
        if quota:
            self._write(os.path.join(d, "cpu.cfs_quota_us"), quota)
            for name, value in retry:
                self._write(os.path.join(d, name), value)
        if idle is not None:
            self._write_required(d, "cpu.idle", int(idle), "cpu idle")
        # Needed before an SCHED_RR/FIFO task can join (runc fs/cpu.go Apply).
        if rt_period := attr(cpu, "realtime_period"):
            self._write_required(d, "cpu.rt_period_us", rt_period, "the real-time period")
        if rt_runtime := attr(cpu, "realtime_runtime"):
            self._write_required(d, "cpu.rt_runtime_us", rt_runtime, "the real-time runtime")

    def _set_memory(self, d: str, mem: Any) -> None:
        limit, swap = attr(mem, "limit") or 0, attr(mem, "swap") or 0
        memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw)
        if limit == -1 and swap == 0 and has_memsw:
            swap = -1  # unlimited memory means unlimited memory+swap (runc)
        if swap and not has_memsw:
            raise UnsupportedError(f"cannot set the memory+swap limit: {memsw} does not exist "
                                   "(swap accounting is off; boot with swapaccount=1)")
        # memory.memsw.limit_in_bytes must stay >= memory.limit_in_bytes, so
        # the order depends on whether the limits grow or shrink.
        swap_first = False
        if limit and swap:
            current = read_int(self._read(os.path.join(d, "memory.limit_in_bytes")))
            swap_first = swap == -1 or (current is not None and current < swap)
        if swap_first:
            self._write(memsw, swap)
        if limit:
            self._set_memory_limit(d, limit)
        if swap and not swap_first:
            self._write(memsw, swap)
        if reservation := attr(mem, "reservation"):
            self._write(os.path.join(d, "memory.soft_limit_in_bytes"), reservation)
        if attr(mem, "kernel"):
            log.warning("kernel memory limits are deprecated by the kernel and ignored (as runc does)")
        if kernel_tcp := attr(mem, "kernel_tcp"):
            self._write_required(d, "memory.kmem.tcp.limit_in_bytes", kernel_tcp, "the kernel TCP memory limit")
        swappiness = attr(mem, "swappiness")
        if swappiness is not None and swappiness != -1:
            if not 0 <= swappiness <= 100:
                raise UsageError(f"invalid memory swappiness {swappiness}: the valid range is 0-100")
            self._write(os.path.join(d, "memory.swappiness"), swappiness)
        if attr(mem, "disable_oom_killer"):
            self._write(os.path.join(d, "memory.oom_control"), 1)

    def _set_memory_limit(self, d: str, limit: int) -> None:
        path = os.path.join(d, "memory.limit_in_bytes")
        try:
            self._files.write(path, str(limit))
        except OSError as err:
            detail = ""
            if err.errno == errno.EBUSY:  # below what the cgroup already uses
                usage = self._read_opt(os.path.join(d, "memory.usage_in_bytes"))
                peak = self._read_opt(os.path.join(d, "memory.max_usage_in_bytes"))
                detail = f"unable to set memory limit to {limit} (current usage: {usage}, peak usage: {peak})"
            raise KernelError("write", path, err.errno or errno.EIO, detail) from err

    def _set_blkio(self, d: str, bio: Any) -> None:
        # Without CFQ there is no blkio.weight; BFQ offers blkio.bfq.weight
        # with the same scale (runc fs/blkio.go).
        prefix = "blkio." if os.path.exists(os.path.join(d, "blkio.weight")) else "blkio.bfq."
        if weight := attr(bio, "weight"):
            path = os.path.join(d, prefix + "weight")
            if not os.path.exists(path):
                raise UnsupportedError(f"cannot set the block I/O weight: neither blkio.weight nor "
                                       f"blkio.bfq.weight exists in {d} (no CFQ or BFQ I/O scheduler)")
            self._write(path, weight)
        if leaf := attr(bio, "leaf_weight"):
            self._write_required(d, "blkio.leaf_weight", leaf, "the block I/O leaf weight")
        for dev in attr(bio, "weight_device") or ():
            if w := attr(dev, "weight"):
                self._write_required(d, prefix + "weight_device", f"{dev.major}:{dev.minor} {w}",
                                     "a per-device block I/O weight")
            if lw := attr(dev, "leaf_weight"):
                self._write_required(d, "blkio.leaf_weight_device", f"{dev.major}:{dev.minor} {lw}",
                                     "a per-device block I/O leaf weight")
        for field in ("read_bps_device", "write_bps_device", "read_iops_device", "write_iops_device"):
            for dev in attr(bio, "throttle_" + field) or ():
                self._write_required(d, "blkio.throttle." + field, f"{dev.major}:{dev.minor} {dev.rate}",
                                     "block I/O throttling")

    def _set_devices(self, d: str, rules: Any) -> None:
        # Rules apply in order; "a" on devices.deny resets the list to
        # deny-all, so the usual spec (deny all, then allows) is exact. On a
        # running container that briefly denies everything: runc 1.1 diffs
        # against devices.list instead; we apply rules before the init runs.
        for rule in rules:
            name = "devices.allow" if attr(rule, "allow") else "devices.deny"
            self._write(os.path.join(d, name), device_rule(rule))

    # -- freezer

    def _freezer(self) -> tuple[str, str]:
        """("v1", freezer dir) or ("v2", unified dir); UnsupportedError when neither."""
        if not self._usable:
            raise UnsupportedError("the container has no usable cgroup to freeze")
        if "freezer" in self._paths:
            return "v1", self._paths["freezer"]
        unified = self._paths.get("")
        if unified and os.path.exists(os.path.join(unified, "cgroup.freeze")):
            return "v2", unified
        raise UnsupportedError("cannot freeze the container: no freezer cgroup is mounted")

    def freeze(self) -> None:
        kind, d = self._freezer()
        if kind == "v2":
            return self._unified().freeze()
        path = os.path.join(d, "freezer.state")
        # Old kernels may report FREEZING for as long as tasks keep forking;
        # retry, with an occasional thaw and sleep (runc fs/freezer.go).
        for i in range(self.freeze_retries):
            if i % 50 == 49:
                self._write(path, "THAWED")
                self._files.sleep(0.01)
            self._write(path, "FROZEN")
            if i % 25 == 24:
                self._files.sleep(0.0001)
            state = self._read(path)
            if state == "FROZEN":
                return
            if state != "FREEZING":
                raise KernelError("freeze", path, errno.EINVAL, f"unexpected freezer state {state}")
        self._write(path, "THAWED")  # don't leave it half frozen
        raise KernelError("freeze", path, errno.EBUSY, "the cgroup stayed FREEZING")

    def thaw(self) -> None:
        kind, d = self._freezer()
        if kind == "v2":
            return self._unified().thaw()
        path = os.path.join(d, "freezer.state")
        self._write(path, "THAWED")
        self._wait_for(path, lambda s: s.strip() == "THAWED", "thaw")

    def is_frozen(self) -> bool:
        try:
            kind, d = self._freezer()
        except UnsupportedError:
            return False
        if kind == "v2":
            return self._unified().is_frozen()
        return self._read_opt(os.path.join(d, "freezer.state")) == "FROZEN"

    def kill_all(self, sig: int) -> None:
        # On hybrid machines the unified directory holds every process too,
        # and its cgroup.kill (5.14) kills them all at once, forks included.
        unified = self._paths.get("")
        if (self._usable and sig == signal.SIGKILL and unified
                and os.path.exists(os.path.join(unified, "cgroup.kill"))):
            self._write(os.path.join(unified, "cgroup.kill"), "1")
            if self.is_frozen():  # v1-frozen tasks die only once thawed
                self.thaw()
            return
        super().kill_all(sig)

    def _unified(self) -> v2.V2Manager:
        from . import v2

        m = v2.V2Manager(mount_point=self._mounts[""], path=self._paths[""],
                         rootless=self._rootless, usable=self._usable, files=self._files)
        m.freeze_retries = self.freeze_retries
        return m

    # -- the rest

    def paths(self) -> dict[str, str]:
        return dict(self._paths)

    def freezer_path(self) -> str:
        if "freezer" in self._paths:
            return self._paths["freezer"]
        return self._paths.get("", "")

    def to_state(self) -> dict:
        return {"version": STATE_VERSION, "mode": self.mode, "usable": self._usable,
                "paths": dict(self._paths), "mounts": dict(self._mounts)}

    def stats(self) -> dict:
        from . import v2

        out = v2.v2_stats(self, self._paths[""]) if "" in self._paths else {}
        p = self._paths
        if "memory" in p:
            out["memory"] = {k: read_int(self._read_opt(os.path.join(p["memory"], f)))
                             for k, f in (("usage", "memory.usage_in_bytes"), ("max_usage", "memory.max_usage_in_bytes"),
                                          ("swap_usage", "memory.memsw.usage_in_bytes"))}
            out["memory"]["limit"] = read_limit(self._read_opt(os.path.join(p["memory"], "memory.limit_in_bytes")))
        if "pids" in p:
            out["pids"] = {"current": read_int(self._read_opt(os.path.join(p["pids"], "pids.current"))),
                           "limit": read_int(self._read_opt(os.path.join(p["pids"], "pids.max")))}
        if "cpuacct" in p:
            usage = read_int(self._read_opt(os.path.join(p["cpuacct"], "cpuacct.usage")))
            if usage is not None:
                out["cpu"] = {"usage_ns": usage}
        if "cpu" in p and (throttled := flat_keyed(self._read_opt(os.path.join(p["cpu"], "cpu.stat")))):
            out.setdefault("cpu", {})["throttled_periods"] = throttled.get("nr_throttled", 0)
        return out


class _Without:
    """A view of a resources object with some attributes hidden."""

    def __init__(self, obj: Any, hidden: tuple[str, ...]):
        self._obj, self._hidden = obj, hidden

    def __getattr__(self, name: str) -> Any:
        return None if name in self._hidden else getattr(self._obj, name, None)


def _without(obj: Any, *hidden: str) -> Any:
    return _Without(obj, hidden)
