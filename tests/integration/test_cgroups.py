"""cgroup managers on this machine's real cgroupfs, with real processes.

Every test uses its own /migrate-test/<random> cgroup and removes it (and
kills what it started) even when it fails.
"""

import errno
import os
import signal
import subprocess
import time
import uuid

import pytest

from migrate.errors import KernelError
from migrate.runtime.cgroups import load_manager, open_manager
from migrate.runtime.cgroups.base import cgroup_mounts

requires = pytest.mark.requires
PARENT = "/migrate-test"


def _mounts():
    with open("/proc/self/mountinfo") as f:
        return cgroup_mounts(f.read())


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _wait_state(pid, states, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _proc_state(pid)
        if state in states:
            return state
        time.sleep(0.01)
    return _proc_state(pid)


def _rmdir_all(path):
    """Remove ``path`` (and sub-cgroups) in every mounted hierarchy; parents too when empty."""
    for m in _mounts():
        top = m.mount_point + path
        if os.path.isdir(top):
            for dirpath, _, _ in os.walk(top, topdown=False):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass
        try:
            os.rmdir(m.mount_point + PARENT)  # shared by tests: fine to fail
        except OSError:
            pass


def _left_behind(path):
    return [m.mount_point + path for m in _mounts() if os.path.exists(m.mount_point + path)]


@pytest.fixture
def cgpath():
    path = f"{PARENT}/{uuid.uuid4().hex[:12]}"
    yield path
    _rmdir_all(path)


@pytest.fixture
def procs():
    started = []

    def start(*argv, cgroup=None):
        """Start argv (default: sleep 300) in its own process group.

        With ``cgroup``, the child joins it between fork and exec, as a
        container's init does, so nothing it forks can escape.
        """
        join = (lambda: cgroup.add(os.getpid())) if cgroup is not None else None
        p = subprocess.Popen(argv or ("sleep", "300"), stdin=subprocess.DEVNULL, preexec_fn=join,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(p)
        return p

    yield start
    for p in started:
        # The leader may be gone while its children live on: always signal the group.
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def manager(cgpath, procs):  # after procs: thaw and kill before procs' own clean-up
    """A manager of the real layout; thaws and destroys on the way out."""
    made = []

    def make(**kw):
        m = open_manager(container_id="unused", cgroups_path=cgpath, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        try:
            if m.is_frozen():
                m.thaw()
            m.kill_all(signal.SIGKILL)
        except Exception:
            pass


def _wait_gone(p, timeout=10):
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pid {p.pid} survived kill_all")


@requires("root", "cgroup_v1")
def test_v1_lifecycle_on_this_machine(manager, procs, cgpath):
    m = manager()
    assert m.to_state()["mode"] in ("v1", "hybrid")
    m.create()
    assert m.exists()
    p = procs()
    m.add(p.pid)
    own = _read(f"/proc/{p.pid}/cgroup")
    assert f":memory:{cgpath}" in own and f":freezer:{cgpath}" in own
    if "name=systemd" in m.paths():
        assert f":name=systemd:{cgpath}" in own
    if "" in m.paths():  # hybrid: the unified hierarchy too
        assert f"0::{cgpath}" in own.splitlines()
    assert m.pids() == [p.pid]

    paths = m.paths()
    memsw = os.path.exists(os.path.join(paths["memory"], "memory.memsw.limit_in_bytes"))
    from types import SimpleNamespace as NS
    m.apply_resources(NS(
        memory=NS(limit=64 << 20, reservation=32 << 20, swap=(128 << 20) if memsw else None),
        cpu=NS(shares=512, quota=50000, period=100000, cpus="0", mems="0"),
        pids=NS(limit=16), block_io=None, devices=(), hugepage_limits=(), unified={}))
    assert _read(os.path.join(paths["memory"], "memory.limit_in_bytes")) == str(64 << 20)
    assert _read(os.path.join(paths["memory"], "memory.soft_limit_in_bytes")) == str(32 << 20)
    if memsw:
        assert _read(os.path.join(paths["memory"], "memory.memsw.limit_in_bytes")) == str(128 << 20)
    assert _read(os.path.join(paths["pids"], "pids.max")) == "16"
    assert _read(os.path.join(paths["cpu"], "cpu.shares")) == "512"
    assert _read(os.path.join(paths["cpu"], "cpu.cfs_quota_us")) == "50000"
    assert _read(os.path.join(paths["cpu"], "cpu.cfs_period_us")) == "100000"
    assert _read(os.path.join(paths["cpuset"], "cpuset.cpus")) == "0"
    stats = m.stats()
    assert stats["pids"]["current"] == 1 and stats["memory"]["limit"] == 64 << 20

    m.freeze()
    assert m.is_frozen()
    assert _read(os.path.join(m.freezer_path(), "freezer.state")) == "FROZEN"
    # A frozen task sleeps uninterruptibly in the freezer ("D").
    assert _wait_state(p.pid, ("D",)) == "D"
    m.thaw()
    assert not m.is_frozen()
    assert _wait_state(p.pid, ("S",)) == "S"

    again = load_manager(m.to_state())
    again.kill_all(signal.SIGKILL)
    _wait_gone(p)
    assert m.pids() == []
    m.destroy()
    assert not m.exists()
    assert _left_behind(cgpath) == []


@requires("root", "cgroup_v1")
def test_v1_devices_rules_are_enforced(manager, procs):
    from types import SimpleNamespace as NS
    m = manager()
    m.create()
    rules = (NS(allow=False, type=None, major=None, minor=None, access="rwm"),
             NS(allow=True, type="c", major=1, minor=3, access="rwm"),   # /dev/null
             NS(allow=True, type="c", major=1, minor=5, access="r"))     # /dev/zero, read only
    m.apply_resources(NS(memory=None, cpu=None, pids=None, block_io=None, devices=rules,
                         hugepage_limits=(), unified={}))
    assert _read(os.path.join(m.paths()["devices"], "devices.list")).splitlines() == ["c 1:3 rwm", "c 1:5 r"]
    script = ("cat /dev/null || exit 2; head -c1 /dev/zero >/dev/null || exit 3; "
              "(: >/dev/zero) 2>/dev/null && exit 4; (: </dev/full) 2>/dev/null && exit 5; exit 0")
    p = procs("sh", "-c", script, cgroup=m)
    assert p.wait(timeout=10) == 0
    m.destroy()


@requires("root", "cgroup_v1")
def test_kill_all_catches_forking_children(manager, procs, cgpath):
    m = manager()
    m.create()
    p = procs("sh", "-c", "sleep 300 & sleep 300 & while :; do sleep 300 & wait; done", cgroup=m)
    # Children forked after add() inherit the cgroup.
    deadline = time.monotonic() + 5
    while len(m.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(m.pids()) >= 3
    m.kill_all(signal.SIGKILL)
    _wait_gone(p)
    deadline = time.monotonic() + 5
    while m.pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert m.pids() == []
    m.destroy()
    assert _left_behind(cgpath) == []


@requires("root", "cgroup_v1")
def test_destroy_refuses_a_populated_cgroup(manager, procs):
    m = manager()
    m.create()
    p = procs()
    m.add(p.pid)
    with pytest.raises(KernelError) as exc:
        m.destroy()
    assert exc.value.errno == errno.EBUSY and exc.value.op == "rmdir"
    m.kill_all(signal.SIGKILL)
    _wait_gone(p)
    m.destroy()
    assert not m.exists()


def _unified_mount():
    return next((m for m in _mounts() if m.fstype == "cgroup2"), None)


@requires("root")
def test_v2_manager_on_the_unified_hierarchy(manager, procs, cgpath, tmp_path):
    """Pure-v2 code path on the real cgroup2 mount (here /sys/fs/cgroup/unified).

    A mountinfo holding only that mount makes open_manager pick V2Manager.
    """
    mount = _unified_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy is mounted")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"41 31 0:38 / {mount.mount_point} rw - cgroup2 cgroup2 rw\n")
    m = manager(cgroup_root=mount.mount_point, mountinfo_path=str(mountinfo))
    assert m.to_state()["mode"] == "v2"
    m.create()
    d = m.paths()[""]
    assert os.path.isdir(d)
    p = procs()
    m.add(p.pid)
    assert f"0::{cgpath}" in _read(f"/proc/{p.pid}/cgroup").splitlines()
    assert m.pids() == [p.pid]

    available = _read(os.path.join(mount.mount_point, "cgroup.controllers")).split()
    from types import SimpleNamespace as NS
    r = NS(memory=NS(limit=64 << 20) if "memory" in available else None,
           pids=NS(limit=16) if "pids" in available else None,
           cpu=NS(shares=1024, quota=20000, period=100000) if "cpu" in available else None,
           block_io=None, devices=(), hugepage_limits=(), unified={})
    m.apply_resources(r)
    if "memory" in available:
        assert _read(os.path.join(d, "memory.max")) == str(64 << 20)
    if "pids" in available:
        assert _read(os.path.join(d, "pids.max")) == "16"
    if "cpu" in available:
        assert _read(os.path.join(d, "cpu.weight")) == "39"
        assert _read(os.path.join(d, "cpu.max")) == "20000 100000"

    m.freeze()
    assert m.is_frozen() and "frozen 1" in _read(os.path.join(d, "cgroup.events"))
    assert _wait_state(p.pid, ("D", "S")) in ("D", "S")  # v2 freezes in do_signal_stop-like sleep
    m.thaw()
    assert not m.is_frozen() and "frozen 0" in _read(os.path.join(d, "cgroup.events"))

    m.kill_all(signal.SIGTERM)  # freeze, signal, thaw
    _wait_gone(p)
    q = procs()
    m.add(q.pid)
    m.kill_all(signal.SIGKILL)  # cgroup.kill when the kernel has it
    _wait_gone(q)
    m.destroy()
    assert not os.path.exists(d)
    assert _left_behind(cgpath) == []


@requires("root", "cgroup_v1")
def test_relative_path_resolves_under_own_cgroup(tmp_path):
    """Relative paths land below this process's own cgroup (nothing is created)."""
    m = open_manager(container_id="x", cgroups_path="rel/ctr")
    with open("/proc/self/cgroup") as f:
        own = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in f.read().splitlines()}
    mem_mount = next(x for x in _mounts() if "memory" in x.controllers)
    assert m.paths()["memory"] == os.path.normpath(
        mem_mount.mount_point + own["memory"].rstrip("/") + "/rel/ctr")
