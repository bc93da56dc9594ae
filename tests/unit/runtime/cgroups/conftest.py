"""A fake cgroupfs on tmp_path: trees, mountinfo, /proc/self/cgroup, and a
``CgroupFiles`` subclass that plays the kernel's part (control files on
mkdir, cgroup.procs moves, freezer states, subtree_control, rmdir rules).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

import pytest

from migrate.runtime.cgroups import open_manager
from migrate.runtime.cgroups.base import CgroupFiles

V1_FILES = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000",
            "cpu.cfs_burst_us": "0", "cpu.rt_period_us": "1000000", "cpu.rt_runtime_us": "0",
            "cpu.idle": "0", "cpu.stat": "nr_periods 0\nnr_throttled 3\nthrottled_time 0\n"},
    "cpuacct": {"cpuacct.usage": "123456"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712", "memory.swappiness": "60",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n",
               "memory.kmem.limit_in_bytes": "9223372036854771712",
               "memory.kmem.tcp.limit_in_bytes": "9223372036854771712",
               "memory.usage_in_bytes": "4096", "memory.max_usage_in_bytes": "8192",
               "memory.memsw.usage_in_bytes": "4096"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "blkio": {"blkio.bfq.weight": "100", "blkio.bfq.weight_device": "",
              "blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.read_iops_device": "", "blkio.throttle.write_iops_device": ""},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED"},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": "0"},
    "name=systemd": {},
}

V2_FILES = {
    "memory": {"memory.max": "max", "memory.high": "max", "memory.swap.max": "max", "memory.low": "0",
               "memory.current": "4096", "memory.peak": "8192", "memory.swap.current": "0"},
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max", "pids.current": "2"},
    "io": {"io.weight": "default 100", "io.max": ""},
    "hugetlb": {"hugetlb.2MB.max": "max"},
}
V2_CORE = {"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.freeze": "0",
           "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "", "cgroup.type": "domain",
           "cpu.stat": "usage_usec 250\nuser_usec 200\nsystem_usec 50\n"}


class FakeCgroupFS(CgroupFiles):
    """Plays the kernel for the trees built by ``build``.

    Knobs: ``freezing_reads`` (how many reads of freezer.state say FREEZING
    after a FROZEN write; -1 forever), ``fail`` (file or dir basename ->
    errno, failing writes/mkdir/rmdir of it), ``busy_rmdirs`` (EBUSY count).
    Records: ``writes`` [(path, data)], ``kills`` [(pid, sig)], ``sleeps``.
    """

    def __init__(self) -> None:
        self.hierarchies: dict[str, tuple[str, tuple[str, ...]]] = {}  # mount point -> (fstype, ctrls)
        self.writes: list[tuple[str, str]] = []
        self.kills: list[tuple[int, int]] = []
        self.sleeps: list[float] = []
        self.fail: dict[str, int] = {}
        self.freezing_reads = 0
        self.busy_rmdirs = 0
        self.frozen_delay = 0          # v2: reads of cgroup.events before "frozen 1"
        self._pending: dict[str, int] = {}

    # -- helpers for tests

    def hierarchy_of(self, path: str) -> tuple[str, str, tuple[str, ...]]:
        for mp, (fstype, ctrls) in sorted(self.hierarchies.items(), key=lambda x: -len(x[0])):
            if path == mp or path.startswith(mp + "/"):
                return mp, fstype, ctrls
        raise AssertionError(f"{path} is in no fake hierarchy")

    def content(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def written(self, suffix: str) -> list[str]:
        return [d for p, d in self.writes if p.endswith(suffix)]

    def _check_fail(self, path: str) -> None:
        code = self.fail.get(os.path.basename(path))
        if code:
            raise OSError(code, os.strerror(code), path)

    # -- CgroupFiles

    def read(self, path: str) -> str:
        name = os.path.basename(path)
        if name == "freezer.state" and self._pending.get(path):
            if self._pending[path] > 0:
                self._pending[path] -= 1
            return "FREEZING\n"
        if name == "cgroup.events" and self._pending.get(path):
            self._pending[path] -= 1
            return self.content(path).replace("frozen 1", "frozen 0")
        return super().read(path)

    def write(self, path: str, data: str) -> None:
        self.writes.append((path, data))
        self._check_fail(path)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        name, d = os.path.basename(path), os.path.dirname(path)
        if name == "cgroup.procs":
            mp = self.hierarchy_of(d)[0]
            for dirpath, _, _ in os.walk(mp):  # a pid lives in one cgroup per hierarchy
                procs = os.path.join(dirpath, "cgroup.procs")
                pids = self.content(procs).split()
                if data in pids:
                    pids.remove(data)
                    self._put(procs, "\n".join(pids))
            self._put(path, self.content(path) + data + "\n")
        elif name == "freezer.state":
            self._put(path, data)
            if data != "FROZEN":
                self._pending.pop(path, None)
            elif path not in self._pending:  # re-writing FROZEN doesn't restart freezing
                self._pending[path] = self.freezing_reads
        elif name == "cgroup.freeze":
            self._put(path, data)
            self._put(os.path.join(d, "cgroup.events"), f"populated 1\nfrozen {data}\n")
            ev = os.path.join(d, "cgroup.events")
            self._pending[ev] = self.frozen_delay if data == "1" else 0
        elif name == "cgroup.subtree_control":
            enabled = self.content(path).split()
            available = self.content(os.path.join(d, "cgroup.controllers")).split()
            for token in data.split():
                c = token[1:]
                if c not in available or c not in V2_FILES:  # unknown to this "kernel"
                    raise OSError(errno.ENOENT, "No such file or directory", path)
                if token[0] == "+" and c not in enabled:
                    enabled.append(c)
                    # The controller's files appear in the existing children.
                    for child in os.listdir(d):
                        cd = os.path.join(d, child)
                        if os.path.isdir(cd):
                            ctl = os.path.join(cd, "cgroup.controllers")
                            self._put(ctl, (self.content(ctl) + " " + c).strip())
                            for fname, value in V2_FILES.get(c, {}).items():
                                self._put(os.path.join(cd, fname), value)
                elif token[0] == "-" and c in enabled:
                    enabled.remove(c)
            self._put(path, " ".join(enabled))
        elif name in ("devices.allow", "devices.deny", "io.max", "blkio.bfq.weight_device") \
                or name.startswith("blkio.throttle."):
            self._put(path, self.content(path) + data + "\n")
        elif name == "cgroup.kill":
            for dirpath, _, _ in os.walk(d):
                self._put(os.path.join(dirpath, "cgroup.procs"), "")
        elif name == "cpu.shares":
            self._put(path, str(min(max(int(data), 2), 262144)))
        else:
            self._put(path, data)

    def _put(self, path: str, data: str) -> None:
        with open(path, "w") as f:
            f.write(data)

    def mkdir(self, path: str) -> None:
        self._check_fail(path)
        os.mkdir(path)
        mp, fstype, ctrls = self.hierarchy_of(path)
        if fstype == "cgroup":
            files = {"cgroup.procs": "", "tasks": ""}
            for c in ctrls:
                files.update(V1_FILES.get(c, {}))
        else:
            parent = os.path.dirname(path)
            enabled = self.content(os.path.join(parent, "cgroup.subtree_control")).split()
            files = dict(V2_CORE, **{"cgroup.controllers": " ".join(enabled)})
            for c in enabled:
                files.update(V2_FILES.get(c, {}))
        for name, value in files.items():
            self._put(os.path.join(path, name), value)

    def rmdir(self, path: str) -> None:
        self._check_fail(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if any(os.path.isdir(os.path.join(path, e)) for e in os.listdir(path)):
            raise OSError(errno.ENOTEMPTY, "Directory not empty", path)
        if self.busy_rmdirs or self.content(os.path.join(path, "cgroup.procs")).strip():
            self.busy_rmdirs = max(0, self.busy_rmdirs - 1)
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        shutil.rmtree(path)

    def kill(self, pid: int, sig: int) -> None:
        self.kills.append((pid, sig))

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class FakeHost:
    """A machine layout: cgroup root, mountinfo and /proc/self/cgroup files."""

    def __init__(self, tmp_path, layout: str, *, own: str = "/", joined_cpu: bool = True,
                 v2_controllers: str = "cpuset cpu io memory hugetlb pids", extra_v1: tuple[str, ...] = ()):
        self.files = FakeCgroupFS()
        tmp_path = tempfile.mkdtemp(prefix=layout + "-", dir=tmp_path)  # several hosts per test
        self.root = os.path.join(tmp_path, "sys/fs/cgroup")
        os.makedirs(self.root)
        self.layout = layout
        mountinfo, proc = [], []
        mid = 30
        if layout in ("v1", "hybrid"):
            groups = [("cpu", "cpuacct")] if joined_cpu else [("cpu",), ("cpuacct",)]
            groups += [("cpuset",), ("memory",), ("devices",), ("freezer",), ("blkio",), ("pids",),
                       *((c,) for c in extra_v1), ("name=systemd",)]
            for n, ctrls in enumerate(groups, 1):
                name = ",".join(ctrls) if ctrls != ("name=systemd",) else "systemd"
                mp = os.path.join(self.root, name)
                self._root_dir(mp, "cgroup", ctrls)
                mid += 1
                mountinfo.append(f"{mid} 29 0:{mid} / {mp} rw,nosuid,nodev,noexec,relatime shared:{mid} - "
                                 f"cgroup cgroup rw,{','.join(ctrls)}")
                proc.append(f"{n}:{','.join(ctrls)}:{own}")
                if ctrls == ("cpu", "cpuacct"):
                    os.symlink(name, os.path.join(self.root, "cpu"))
        if layout in ("hybrid", "v2"):
            mp = self.root if layout == "v2" else os.path.join(self.root, "unified")
            self._root_dir(mp, "cgroup2", ())
            self.files._put(os.path.join(mp, "cgroup.controllers"), v2_controllers)
            mountinfo.append(f"99 29 0:99 / {mp} rw,nosuid,nodev,noexec,relatime shared:9 - "
                             "cgroup2 cgroup2 rw,nsdelegate")
            proc.append(f"0::{own}")
        # Unrelated lines the parser must skip.
        mountinfo.insert(0, "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw")
        mountinfo.append(f"100 22 0:50 / {tmp_path}/other rw - cgroup2 cgroup2 rw")
        self.mountinfo = os.path.join(tmp_path, "mountinfo")
        self.self_cgroup = os.path.join(tmp_path, "self_cgroup")
        with open(self.mountinfo, "w") as f:
            f.write("\n".join(mountinfo) + "\n")
        with open(self.self_cgroup, "w") as f:
            f.write("\n".join(reversed(proc)) + "\n")

    def _root_dir(self, mp: str, fstype: str, ctrls: tuple[str, ...]) -> None:
        os.makedirs(mp, exist_ok=True)
        self.files.hierarchies[mp] = (fstype, ctrls)
        files = {"cgroup.procs": "1\n"}
        if fstype == "cgroup" and "cpuset" in ctrls:
            files.update({"cpuset.cpus": "0-3", "cpuset.mems": "0"})
        if fstype == "cgroup2":
            files.update({"cgroup.subtree_control": "", "cgroup.procs": "1\n"})
        for name, value in files.items():
            self.files._put(os.path.join(mp, name), value)

    def make_own(self, path: str) -> None:
        """Create this process's own cgroup (for relative paths) in every hierarchy."""
        for mp, (fstype, _) in self.files.hierarchies.items():
            current = mp
            for part in path.strip("/").split("/"):
                current = os.path.join(current, part)
                if not os.path.isdir(current):
                    self.files.mkdir(current)

    def path(self, hierarchy: str, *parts: str) -> str:
        return os.path.join(self.root, hierarchy, *[p.strip("/") for p in parts])

    def open(self, cgroups_path: str | None = "/migrate/c1", **kw):
        kw.setdefault("container_id", "c1")
        return open_manager(cgroups_path=cgroups_path, cgroup_root=self.root,
                            mountinfo_path=self.mountinfo, self_cgroup_path=self.self_cgroup,
                            files=self.files, **kw)


@pytest.fixture
def v1host(tmp_path):
    return FakeHost(tmp_path, "v1")


@pytest.fixture
def hybrid(tmp_path):
    return FakeHost(tmp_path, "hybrid", v2_controllers="hugetlb")


@pytest.fixture
def v2host(tmp_path):
    return FakeHost(tmp_path, "v2")


@pytest.fixture
def make_host(tmp_path):
    return lambda layout, **kw: FakeHost(tmp_path, layout, **kw)
