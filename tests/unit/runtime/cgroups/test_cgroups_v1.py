"""V1Manager (v1 and hybrid) on a fake cgroupfs tree."""

import errno
import logging
import os
import signal
from types import SimpleNamespace as NS

import pytest

from migrate.errors import KernelError, UnsupportedError, UsageError
from migrate.runtime.cgroups import load_manager
from migrate.runtime.cgroups.v1 import device_rule


def res(**kw):
    base = dict(memory=None, cpu=None, pids=None, block_io=None, devices=(), hugepage_limits=(), unified={})
    base.update(kw)
    return NS(**base)


def mem(**kw):
    base = dict(limit=None, reservation=None, swap=None, kernel=None, kernel_tcp=None,
                swappiness=None, disable_oom_killer=None)
    base.update(kw)
    return NS(**base)


def cpu(**kw):
    base = dict(shares=None, quota=None, burst=None, period=None, realtime_runtime=None,
                realtime_period=None, cpus=None, mems=None, idle=None)
    base.update(kw)
    return NS(**base)


@pytest.fixture
def created(v1host):
    m = v1host.open()
    m.create()
    v1host.files.writes.clear()
    return v1host, m


def read(path):
    with open(path) as f:
        return f.read().strip()


# -- create / add / pids

def test_create_makes_every_hierarchy(created):
    host, m = created
    for d in set(m.paths().values()):
        assert os.path.isdir(d)
    assert m.exists()
    # cpu,cpuacct share one directory: created once.
    mkdirs = [p for p in m.paths().values() if "cpu,cpuacct" in p]
    assert len(set(mkdirs)) == 1


def test_cpuset_copied_down_each_new_level(v1host):
    m = v1host.open("/a/b/c")
    m.create()
    for level in ("a", "a/b", "a/b/c"):
        assert read(v1host.path("cpuset", level, "cpuset.cpus")) == "0-3"
        assert read(v1host.path("cpuset", level, "cpuset.mems")) == "0"


def test_cpuset_existing_level_with_values_is_left_alone(v1host):
    v1host.files.mkdir(v1host.path("cpuset", "a"))
    v1host.files._put(v1host.path("cpuset", "a", "cpuset.cpus"), "1")
    v1host.open("/a/b").create()
    assert read(v1host.path("cpuset", "a", "cpuset.cpus")) == "1"
    assert read(v1host.path("cpuset", "a/b", "cpuset.cpus")) == "1"
    assert read(v1host.path("cpuset", "a", "cpuset.mems")) == "0"  # empty: was filled


def test_add_joins_every_hierarchy_and_pids(created, hybrid):
    host, m = created
    m.add(4242)
    for d in set(m.paths().values()):
        assert read(os.path.join(d, "cgroup.procs")) == "4242"
    assert read(host.path("memory", "cgroup.procs")) == "1"  # moved, not copied
    assert m.pids() == [4242]
    hm = hybrid.open()
    hm.create()
    hm.add(7)
    assert read(hybrid.path("unified", "migrate/c1", "cgroup.procs")) == "7"
    assert read(hybrid.path("systemd", "migrate/c1", "cgroup.procs")) == "7"


def test_procs_files_are_what_add_writes(created, hybrid):
    """exec's fast path joins by itself through these files (runtime/spawn.py)."""
    host, m = created
    m.add(4242)
    written = [f for f in m.procs_files() if read(f) == "4242"]
    assert written == m.procs_files()
    assert sorted(m.procs_files()) == sorted(
        os.path.join(d, "cgroup.procs") for d in set(m.paths().values()))
    hm = hybrid.open()
    assert hybrid.path("unified", "migrate/c1", "cgroup.procs") in hm.procs_files()


def test_pids_recursive(created):
    host, m = created
    m.add(10)
    sub = os.path.join(m.paths()["freezer"], "inner")
    host.files.mkdir(sub)
    host.files.write(os.path.join(sub, "cgroup.procs"), "11")
    assert m.pids() == [10, 11]


def test_create_error_names_the_file(v1host):
    v1host.files.fail["c1"] = errno.EACCES
    with pytest.raises(KernelError, match=r"mkdir .*/migrate/c1: Permission denied"):
        v1host.open().create()


# -- resources

def test_memory_limits(created):
    host, m = created
    m.apply_resources(res(memory=mem(limit=256 << 20, reservation=128 << 20, swap=512 << 20,
                                     swappiness=10, disable_oom_killer=True, kernel_tcp=1 << 20)))
    d = m.paths()["memory"]
    assert read(f"{d}/memory.limit_in_bytes") == str(256 << 20)
    assert read(f"{d}/memory.memsw.limit_in_bytes") == str(512 << 20)
    assert read(f"{d}/memory.soft_limit_in_bytes") == str(128 << 20)
    assert read(f"{d}/memory.swappiness") == "10"
    assert read(f"{d}/memory.oom_control") == "1"
    assert read(f"{d}/memory.kmem.tcp.limit_in_bytes") == str(1 << 20)


def test_memory_write_order_depends_on_growth(created):
    host, m = created
    d = m.paths()["memory"]
    names = lambda: [os.path.basename(p) for p, _ in host.files.writes if "limit_in_bytes" in p]
    # Current limit (huge) >= new swap: memory first, then memsw.
    m.apply_resources(res(memory=mem(limit=100, swap=200)))
    assert names() == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    host.files.writes.clear()
    # Current limit 100 < new swap 400: memsw first (it must stay >= memory).
    m.apply_resources(res(memory=mem(limit=300, swap=400)))
    assert names() == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    assert read(f"{d}/memory.limit_in_bytes") == "300"


def test_unlimited_memory_implies_unlimited_swap(created):
    host, m = created
    m.apply_resources(res(memory=mem(limit=-1)))
    assert host.files.written("memory.memsw.limit_in_bytes") == ["-1"]
    assert host.files.written("memory.limit_in_bytes") == ["-1"]


def test_swap_without_memsw_file(created):
    host, m = created
    os.unlink(os.path.join(m.paths()["memory"], "memory.memsw.limit_in_bytes"))
    m.apply_resources(res(memory=mem(limit=100)))  # not asked: fine
    m.apply_resources(res(memory=mem(limit=-1)))   # no implied swap either
    with pytest.raises(UnsupportedError, match=r"memory.memsw.limit_in_bytes does not exist .*swapaccount"):
        m.apply_resources(res(memory=mem(limit=100, swap=200)))


def test_memory_busy_error_says_usage(created):
    host, m = created
    host.files.fail["memory.limit_in_bytes"] = errno.EBUSY
    with pytest.raises(KernelError) as exc:
        m.apply_resources(res(memory=mem(limit=1)))
    assert str(exc.value).startswith(f"write {m.paths()['memory']}/memory.limit_in_bytes: Device or resource busy")
    assert "current usage: 4096, peak usage: 8192" in str(exc.value)


def test_memory_bad_swappiness_and_ignored_kernel(created, caplog):
    host, m = created
    with pytest.raises(UsageError, match="swappiness 101"):
        m.apply_resources(res(memory=mem(swappiness=101)))
    m.apply_resources(res(memory=mem(swappiness=-1)))
    assert host.files.written("memory.swappiness") == []
    with caplog.at_level(logging.WARNING):
        m.apply_resources(res(memory=mem(kernel=1 << 20)))
    assert host.files.written("memory.kmem.limit_in_bytes") == []
    assert "kernel memory" in caplog.text


def test_cpu_limits(created):
    host, m = created
    m.apply_resources(res(cpu=cpu(shares=512, quota=50000, period=100000, burst=1000, idle=1,
                                  realtime_period=1000000, realtime_runtime=950000, cpus="0-1", mems="0")))
    d = m.paths()["cpu"]
    assert read(f"{d}/cpu.shares") == "512"
    assert read(f"{d}/cpu.cfs_quota_us") == "50000"
    assert read(f"{d}/cpu.cfs_period_us") == "100000"
    assert read(f"{d}/cpu.cfs_burst_us") == "1000"
    assert read(f"{d}/cpu.idle") == "1"
    assert read(f"{d}/cpu.rt_period_us") == "1000000"
    assert read(f"{d}/cpu.rt_runtime_us") == "950000"
    assert read(f"{m.paths()['cpuset']}/cpuset.cpus") == "0-1"
    assert read(f"{m.paths()['cpuset']}/cpuset.mems") == "0"


def test_cpu_zero_means_unset_but_burst_zero_is_written(created):
    host, m = created
    m.apply_resources(res(cpu=cpu(shares=0, quota=0, period=0, burst=0)))
    assert [os.path.basename(p) for p, _ in host.files.writes] == ["cpu.cfs_burst_us"]


def test_cpu_shares_clamped_by_kernel(created):
    host, m = created
    with pytest.raises(UsageError, match="maximum allowed is 262144"):
        m.apply_resources(res(cpu=cpu(shares=500000)))
    with pytest.raises(UsageError, match="minimum allowed is 2"):
        m.apply_resources(res(cpu=cpu(shares=1)))


def test_cpu_period_einval_retried_after_quota(created):
    host, m = created

    real_write = type(host.files).write
    calls = []

    def write(self, path, data):
        calls.append(os.path.basename(path))
        if path.endswith("cpu.cfs_period_us") and calls.count("cpu.cfs_period_us") == 1:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_write(self, path, data)

    host.files.write = write.__get__(host.files)
    m.apply_resources(res(cpu=cpu(quota=20000, period=50000)))
    assert calls == ["cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.cfs_period_us"]
    # Without a quota to set, the EINVAL stands.
    calls.clear()
    with pytest.raises(KernelError, match="cpu.cfs_period_us: Invalid argument"):
        m.apply_resources(res(cpu=cpu(period=50000)))


def test_pids_limit(created):
    host, m = created
    for given, want in ((100, "100"), (-1, "max"), (0, "max")):
        m.apply_resources(res(pids=NS(limit=given)))
        assert read(f"{m.paths()['pids']}/pids.max") == want


def test_blkio_falls_back_to_bfq(created):
    host, m = created
    m.apply_resources(res(block_io=NS(weight=300, leaf_weight=None,
                                      weight_device=(NS(major=8, minor=0, weight=200, leaf_weight=None),),
                                      throttle_read_bps_device=(NS(major=8, minor=0, rate=1048576),),
                                      throttle_write_bps_device=(), throttle_read_iops_device=(),
                                      throttle_write_iops_device=(NS(major=8, minor=16, rate=100),))))
    d = m.paths()["blkio"]
    assert read(f"{d}/blkio.bfq.weight") == "300"
    assert read(f"{d}/blkio.bfq.weight_device") == "8:0 200"
    assert read(f"{d}/blkio.throttle.read_bps_device") == "8:0 1048576"
    assert read(f"{d}/blkio.throttle.write_iops_device") == "8:16 100"


def test_blkio_weight_prefers_cfq_file_and_errors_when_neither(created):
    host, m = created
    d = m.paths()["blkio"]
    host.files._put(f"{d}/blkio.weight", "500")
    m.apply_resources(res(block_io=NS(weight=100)))
    assert read(f"{d}/blkio.weight") == "100"
    os.unlink(f"{d}/blkio.weight")
    os.unlink(f"{d}/blkio.bfq.weight")
    m.apply_resources(res(block_io=NS(weight=None)))  # nothing asked: fine
    with pytest.raises(UnsupportedError, match="neither blkio.weight nor blkio.bfq.weight"):
        m.apply_resources(res(block_io=NS(weight=100)))
    with pytest.raises(UnsupportedError, match="blkio.leaf_weight does not exist"):
        m.apply_resources(res(block_io=NS(leaf_weight=100)))


def test_device_rules(created):
    host, m = created
    rules = (NS(allow=False, type=None, major=None, minor=None, access="rwm"),
             NS(allow=True, type="c", major=1, minor=3, access="rwm"),
             NS(allow=True, type="c", major=136, minor=None, access=None),
             NS(allow=False, type="b", major=8, minor=-1, access="w"))
    m.apply_resources(res(devices=rules))
    d = m.paths()["devices"]
    assert read(f"{d}/devices.deny").splitlines() == ["a", "b 8:* w"]
    assert read(f"{d}/devices.allow").splitlines() == ["c 1:3 rwm", "c 136:* rwm"]
    assert [os.path.basename(p) for p, _ in host.files.writes][0] == "devices.deny"


def test_device_rule_strings():
    assert device_rule(NS(type="a", major=1, minor=2, access="r")) == "a"
    assert device_rule(NS(type="b", major=None, minor=None, access="m")) == "b *:* m"
    # Letters the kernel does not know are dropped (runc's emulator keeps r/w/m
    # only), and the order is the kernel's.
    assert device_rule(NS(type="c", major=1, minor=11, access="rwa")) == "c 1:11 rw"
    assert device_rule(NS(type="c", major=1, minor=3, access="mr")) == "c 1:3 rm"
    assert device_rule(NS(type="c", major=1, minor=3, access=None)) == "c 1:3 rwm"


def test_hugetlb_not_mounted(created):
    host, m = created
    with pytest.raises(UnsupportedError, match="hugetlb cgroup controller is not mounted"):
        m.apply_resources(res(hugepage_limits=(NS(page_size="2MB", limit=1 << 21),)))


def test_hugetlb_v1_mounted(make_host):
    host = make_host("v1", extra_v1=("hugetlb",))
    m = host.open()
    m.create()
    m.apply_resources(res(hugepage_limits=(NS(page_size="2MB", limit=4 << 21),)))
    assert read(host.path("hugetlb", "migrate/c1", "hugetlb.2MB.limit_in_bytes")) == str(4 << 21)


def test_hybrid_hugetlb_goes_to_unified(hybrid):
    # This machine: hugetlb is bound to the v2 hierarchy only.
    m = hybrid.open()
    m.create()
    m.apply_resources(res(hugepage_limits=(NS(page_size="2MB", limit=1 << 21),)))
    assert read(hybrid.path("unified", "cgroup.subtree_control")) == "hugetlb"
    assert read(hybrid.path("unified", "migrate", "cgroup.subtree_control")) == "hugetlb"
    assert read(hybrid.path("unified", "migrate/c1", "hugetlb.2MB.max")) == str(1 << 21)


def test_unified_resources(hybrid, v1host):
    m = hybrid.open()
    m.create()
    m.apply_resources(res(unified={"hugetlb.2MB.max": "4194304"}))
    assert read(hybrid.path("unified", "migrate/c1", "hugetlb.2MB.max")) == "4194304"
    with pytest.raises(UnsupportedError, match='controller "memory" is not available'):
        m.apply_resources(res(unified={"memory.max": "1"}))
    pure = v1host.open()
    pure.create()
    with pytest.raises(UnsupportedError, match="unified .* resources need a cgroup v2"):
        pure.apply_resources(res(unified={"memory.max": "1"}))


def test_none_resources_and_empty_objects_do_nothing(created):
    host, m = created
    m.apply_resources(None)
    m.apply_resources(res())
    m.apply_resources(res(memory=mem(), cpu=cpu(), block_io=NS()))
    assert host.files.writes == []


def test_missing_controller_only_fails_when_asked(make_host):
    host = make_host("v1")
    os.rename(host.mountinfo, host.mountinfo + ".orig")
    with open(host.mountinfo + ".orig") as src, open(host.mountinfo, "w") as dst:
        dst.write("".join(l for l in src if "rw,pids" not in l))
    m = host.open()
    m.create()
    m.apply_resources(res(memory=mem(limit=100)))
    with pytest.raises(UnsupportedError, match="pids cgroup controller is not mounted"):
        m.apply_resources(res(pids=NS(limit=10)))


# -- freezer

def test_freeze_waits_through_freezing(created):
    host, m = created
    host.files.freezing_reads = 3
    m.freeze()
    assert m.is_frozen()
    assert host.files.written("freezer.state") == ["FROZEN"] * 4
    m.thaw()
    assert not m.is_frozen()
    assert read(f"{m.freezer_path()}/freezer.state") == "THAWED"


def test_freeze_gives_up_and_thaws(created):
    host, m = created
    host.files.freezing_reads = -1
    m.freeze_retries = 100
    with pytest.raises(KernelError, match=r"freeze .*freezer.state: Device or resource busy: the cgroup stayed FREEZING"):
        m.freeze()
    states = host.files.written("freezer.state")
    assert states[-1] == "THAWED" and states.count("THAWED") == 3  # two periodic + the final one
    assert not m.is_frozen()


def test_hybrid_without_v1_freezer_uses_unified(make_host):
    host = make_host("hybrid")
    with open(host.mountinfo) as f:
        lines = [l for l in f if "rw,freezer" not in l]
    with open(host.mountinfo, "w") as f:
        f.write("".join(lines))
    m = host.open()
    m.create()
    assert m.freezer_path() == host.path("unified", "migrate/c1")
    m.freeze()
    assert m.is_frozen()
    m.thaw()
    assert not m.is_frozen()


# -- kill_all / destroy

def test_kill_all_freezes_signals_thaws(created):
    host, m = created
    m.add(10)
    m.add(11)
    m.kill_all(signal.SIGTERM)
    assert host.files.kills == [(10, signal.SIGTERM), (11, signal.SIGTERM)]
    assert host.files.written("freezer.state") == ["FROZEN", "THAWED"]


def test_kill_all_keeps_a_paused_container_paused_except_for_sigkill(created):
    host, m = created
    m.add(10)
    m.freeze()
    host.files.writes.clear()
    m.kill_all(signal.SIGTERM)
    assert host.files.written("freezer.state") == [] and m.is_frozen()
    m.kill_all(signal.SIGKILL)
    assert host.files.written("freezer.state") == ["THAWED"]


def test_kill_all_hybrid_sigkill_uses_cgroup_kill(hybrid):
    m = hybrid.open()
    m.create()
    m.add(10)
    m.kill_all(signal.SIGKILL)
    assert hybrid.files.written("cgroup.kill") == ["1"]
    assert hybrid.files.kills == []


def test_kill_all_ignores_vanished_processes(created):
    host, m = created
    m.add(10)

    def kill(pid, sig):
        raise ProcessLookupError(errno.ESRCH, "No such process")

    host.files.kill = kill
    m.kill_all(signal.SIGKILL)


def test_destroy_retries_ebusy_and_removes_subcgroups(created):
    host, m = created
    host.files.mkdir(os.path.join(m.paths()["memory"], "inner"))
    host.files.busy_rmdirs = 2
    m.destroy()
    assert not m.exists()
    assert not os.path.exists(host.path("memory", "migrate"))  # our empty parent goes too
    assert host.files.sleeps == [0.01]  # one round of retries for all hierarchies
    m.destroy()  # idempotent


def test_destroy_keeps_a_parent_another_container_uses(created):
    host, m = created
    host.files.mkdir(host.path("memory", "migrate", "other"))
    m.destroy()
    assert not m.exists() and os.path.isdir(host.path("memory", "migrate", "other"))


def test_destroy_gives_up_on_a_populated_cgroup(created):
    host, m = created
    m.add(10)
    with pytest.raises(KernelError, match="rmdir .*: Device or resource busy") as exc:
        m.destroy()
    dirs = set(m.paths().values())  # 8: cpu,cpuacct is one
    assert host.files.sleeps == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]  # all retried together
    assert len(exc.value.__notes__) == len(dirs) - 1


# -- state, stats, rootless

def test_state_round_trip(created):
    host, m = created
    state = m.to_state()
    import json
    again = load_manager(json.loads(json.dumps(state)), files=host.files)
    assert again.paths() == m.paths()
    assert again.to_state() == state
    again.add(5)
    assert m.pids() == [5]


@pytest.mark.parametrize("bad", [{}, {"version": 1, "mode": "v9", "paths": {}, "mounts": {}},
                                 {"version": 1, "mode": "v1", "paths": {"memory": "rel"}, "mounts": {"memory": "/x"}},
                                 {"version": 1, "mode": "v2", "paths": {}, "mounts": {}}, "nope"])
def test_load_rejects_bad_state(bad):
    with pytest.raises(UsageError, match="invalid cgroup state"):
        load_manager(bad)


def test_stats(created):
    host, m = created
    s = m.stats()
    assert s["memory"]["usage"] == 4096 and s["memory"]["max_usage"] == 8192
    assert s["pids"] == {"current": 0, "limit": None}
    assert s["cpu"] == {"usage_ns": 123456, "throttled_periods": 3}


def test_rootless_tolerates_everything(v1host, caplog):
    v1host.files.fail["c1"] = errno.EACCES
    v1host.files.fail["memory.limit_in_bytes"] = errno.EACCES
    m = v1host.open(rootless=True)
    with caplog.at_level(logging.DEBUG, logger="migrate.runtime.cgroups"):
        m.create()
        m.add(1)
        m.apply_resources(res(memory=mem(limit=100), hugepage_limits=(NS(page_size="2MB", limit=1),)))
        m.destroy()
    assert not m.is_usable()
    assert m.pids() == []
    m.kill_all(signal.SIGKILL)  # nothing to do, no error
    assert "rootless: ignoring cgroup error during create" in caplog.text
    with pytest.raises(UnsupportedError):
        m.freeze()
    assert load_manager(m.to_state(), rootless=True).is_usable() is False


def test_rootless_usable_when_delegated(v1host):
    m = v1host.open(rootless=True)
    m.create()
    m.add(3)
    v1host.files.fail["pids.max"] = errno.EACCES
    m.apply_resources(res(pids=NS(limit=5)))  # a refused limit doesn't disable the cgroup
    assert m.is_usable() and m.pids() == [3]


def test_kill_all_signals_even_when_freezing_fails(created, caplog):
    host, m = created
    m.add(10)
    host.files.fail["freezer.state"] = errno.EACCES
    with caplog.at_level(logging.WARNING):
        m.kill_all(signal.SIGTERM)
    assert host.files.kills == [(10, signal.SIGTERM)]
    assert "cannot freeze before signalling" in caplog.text  # and no thaw attempted


def test_stats_unlimited_memory_is_none(created):
    host, m = created
    assert m.stats()["memory"]["limit"] is None
    m.apply_resources(res(memory=mem(limit=1 << 30)))
    assert m.stats()["memory"]["limit"] == 1 << 30


def test_rootless_keeps_a_delegated_unified_hierarchy(make_host):
    # The user owns its cgroup in the unified hierarchy only (systemd's
    # Delegate=yes on a hybrid machine): keep that one, drop the v1 ones.
    host = make_host("hybrid", own="/user", v2_controllers="")
    host.make_own("/user")
    unified = os.path.join(host.root, "unified")
    real_mkdir = host.files.mkdir

    def mkdir(path):
        if not path.startswith(unified + "/"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        real_mkdir(path)

    host.files.mkdir = mkdir
    m = host.open(None, rootless=True)      # default path: below our own cgroup
    m.create()
    m.add(7)
    assert m.is_usable()
    assert m.paths() == {"": os.path.join(unified, "user/migrate/c1")}
    m.freeze()
    assert m.is_frozen()
    m.thaw()
    assert m.pids() == [7]
    state = m.to_state()
    assert state["mode"] == "hybrid" and load_manager(state, rootless=True).paths() == m.paths()


def test_rootless_default_path_is_below_our_own_cgroup(make_host):
    host = make_host("v1", own="/user")
    assert host.open(None, rootless=True).paths()["memory"] == host.path("memory", "user/migrate/c1")
    assert host.open(None).paths()["memory"] == host.path("memory", "migrate/c1")


def test_sub_manager_for_exec_cgroup(created):
    from migrate.errors import UsageError
    from migrate.runtime.cgroups import sub_manager

    _, m = created
    paths = m.paths()
    every = sub_manager(m, {"": "sub"}).paths()
    assert every == {k: os.path.join(v, "sub") for k, v in paths.items()}
    assert sub_manager(m, {"": "/"}).paths() == paths
    one = sub_manager(m, {"memory": "a/b"}).paths()
    assert one["memory"] == os.path.join(paths["memory"], "a/b")
    assert all(one[k] == v for k, v in paths.items() if k != "memory")
    with pytest.raises(UsageError, match=r"^\.\. is not a sub cgroup path"):
        sub_manager(m, {"": ".."})
    with pytest.raises(UsageError, match="^unknown controller whaaat"):
        sub_manager(m, {"whaaat": "/"})
