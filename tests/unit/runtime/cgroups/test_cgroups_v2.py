"""V2Manager (pure unified) on a fake cgroupfs tree, and the v1->v2 conversions."""

import errno
import json
import logging
import os
import signal
from types import SimpleNamespace as NS

import pytest

from migrate.errors import KernelError, UnsupportedError, UsageError
from migrate.runtime.cgroups import load_manager
from migrate.runtime.cgroups.v2 import cpu_weight, io_weight, swap_max


def res(**kw):
    base = dict(memory=None, cpu=None, pids=None, block_io=None, devices=(), hugepage_limits=(), unified={})
    base.update(kw)
    return NS(**base)


def read(path):
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def created(v2host):
    m = v2host.open()
    m.create()
    v2host.files.writes.clear()
    return v2host, m, m.paths()[""]


# -- conversions (values from runc's unit tests and formulas)

@pytest.mark.parametrize("shares,weight", [(0, 0), (2, 1), (1024, 39), (262144, 10000), (1, 1)])
def test_cpu_weight(shares, weight):
    assert cpu_weight(shares) == weight


@pytest.mark.parametrize("blkio,weight", [(0, 0), (10, 1), (500, 4950), (1000, 10000)])
def test_io_weight(blkio, weight):
    assert io_weight(blkio) == weight


@pytest.mark.parametrize("swap,memory,want", [
    (None, None, None), (0, 100, None), (-1, 100, -1), (None, -1, -1), (300, 100, 200), (100, 100, 0),
])
def test_swap_conversion(swap, memory, want):
    assert swap_max(swap, memory) == want


@pytest.mark.parametrize("swap,memory,msg", [
    (300, None, "without a memory limit"), (300, -1, "without a memory limit"), (50, 100, "at least"),
])
def test_swap_conversion_errors(swap, memory, msg):
    with pytest.raises(UsageError, match=msg):
        swap_max(swap, memory)


# -- create / add

def test_create_enables_controllers_down_the_path(v2host):
    m = v2host.open("/a/b/c")
    m.create()
    want = "cpuset cpu io memory hugetlb pids"
    for level in ("", "a", "a/b"):
        assert read(os.path.join(v2host.root, level, "cgroup.subtree_control")) == want
    leaf = os.path.join(v2host.root, "a/b/c")
    assert read(os.path.join(leaf, "cgroup.subtree_control")) == ""  # leaf holds processes
    assert os.path.exists(os.path.join(leaf, "memory.max"))


def test_create_enables_one_by_one_when_a_controller_is_refused(v2host):
    with open(os.path.join(v2host.root, "cgroup.controllers"), "w") as f:
        f.write("cpu memory bogus")  # "bogus" cannot be enabled: fails the batch write
    v2host.open().create()
    assert read(os.path.join(v2host.root, "cgroup.subtree_control")) == "cpu memory"
    assert v2host.files.written("cgroup.subtree_control")[:1] == ["+cpu +memory +bogus"]


def test_add_and_pids(created):
    host, m, d = created
    m.add(99)
    assert read(os.path.join(d, "cgroup.procs")) == "99"
    assert m.pids() == [99]


# -- resources

def test_memory(created):
    host, m, d = created
    m.apply_resources(res(memory=NS(limit=256 << 20, swap=384 << 20, reservation=64 << 20)))
    assert read(f"{d}/memory.max") == str(256 << 20)
    assert read(f"{d}/memory.swap.max") == str(128 << 20)
    assert read(f"{d}/memory.low") == str(64 << 20)
    m.apply_resources(res(memory=NS(limit=-1)))
    assert read(f"{d}/memory.max") == "max" and read(f"{d}/memory.swap.max") == "max"
    m.apply_resources(res(memory=NS(limit=100, swap=100)))
    assert read(f"{d}/memory.swap.max") == "0"


def test_memory_without_swap_accounting(created):
    host, m, d = created
    os.unlink(f"{d}/memory.swap.max")
    m.apply_resources(res(memory=NS(limit=-1)))           # implied "max": skipped
    m.apply_resources(res(memory=NS(limit=100, swap=100)))  # "no swap": skipped
    with pytest.raises(UnsupportedError, match="memory.swap.max does not exist"):
        m.apply_resources(res(memory=NS(limit=100, swap=200)))


def test_memory_unsupported_v1_knobs_warn(created, caplog):
    host, m, d = created
    with caplog.at_level(logging.WARNING):
        m.apply_resources(res(memory=NS(swappiness=10, disable_oom_killer=True, kernel=1, kernel_tcp=1)))
    assert "swappiness" in caplog.text and "OOM killer" in caplog.text
    assert host.files.writes == []


def test_memory_check_before_update(created):
    host, m, d = created  # memory.current is 4096 in the fake
    with pytest.raises(UsageError, match="below the current usage 4096"):
        m.apply_resources(res(memory=NS(limit=1000, check_before_update=True)))
    m.apply_resources(res(memory=NS(limit=1000)))
    assert read(f"{d}/memory.max") == "1000"


def test_cpu(created):
    host, m, d = created
    m.apply_resources(res(cpu=NS(shares=1024, quota=50000, period=100000, burst=10000, idle=0,
                                 cpus="0-1", mems="0")))
    assert read(f"{d}/cpu.weight") == "39"
    assert read(f"{d}/cpu.max") == "50000 100000"
    assert read(f"{d}/cpu.max.burst") == "10000"
    assert read(f"{d}/cpu.idle") == "0"
    assert read(f"{d}/cpuset.cpus") == "0-1" and read(f"{d}/cpuset.mems") == "0"
    m.apply_resources(res(cpu=NS(quota=-1)))
    assert read(f"{d}/cpu.max") == "max"
    m.apply_resources(res(cpu=NS(period=20000)))
    assert read(f"{d}/cpu.max") == "max 20000"


def test_cpu_realtime_unsupported(created):
    host, m, d = created
    with pytest.raises(UnsupportedError, match="real-time"):
        m.apply_resources(res(cpu=NS(realtime_runtime=1000)))


def test_cpu_burst_missing_is_ignored(created):
    host, m, d = created
    os.unlink(f"{d}/cpu.max.burst")
    m.apply_resources(res(cpu=NS(burst=5)))
    assert host.files.writes == []


def test_pids(created):
    host, m, d = created
    m.apply_resources(res(pids=NS(limit=64)))
    assert read(f"{d}/pids.max") == "64"
    m.apply_resources(res(pids=NS(limit=-1)))
    assert read(f"{d}/pids.max") == "max"


def test_io(created):
    host, m, d = created
    bio = NS(weight=500, weight_device=(), throttle_read_bps_device=(NS(major=8, minor=0, rate=100),),
             throttle_write_bps_device=(), throttle_read_iops_device=(),
             throttle_write_iops_device=(NS(major=8, minor=0, rate=7),))
    m.apply_resources(res(block_io=bio))
    assert read(f"{d}/io.weight") == "4950"
    assert read(f"{d}/io.max").splitlines() == ["8:0 rbps=100", "8:0 wiops=7"]
    with pytest.raises(UnsupportedError, match="io.bfq.weight does not exist"):
        m.apply_resources(res(block_io=NS(weight_device=(NS(major=8, minor=0, weight=5),))))
    host.files._put(f"{d}/io.bfq.weight", "default 100")
    m.apply_resources(res(block_io=NS(weight=500)))
    assert read(f"{d}/io.bfq.weight") == "500"  # BFQ takes the blkio scale as is


def test_hugetlb_and_unified(created):
    host, m, d = created
    m.apply_resources(res(hugepage_limits=(NS(page_size="2MB", limit=2 << 21),),
                          unified={"memory.high": "1000000", "io.max": "8:0 rbps=1\n8:16 wbps=2"}))
    assert read(f"{d}/hugetlb.2MB.max") == str(2 << 21)
    assert read(f"{d}/memory.high") == "1000000"
    assert host.files.written("io.max") == ["8:0 rbps=1", "8:16 wbps=2"]


def test_unified_errors(created):
    host, m, d = created
    with pytest.raises(UsageError, match="must be a file name"):
        m.apply_resources(res(unified={"../x.max": "1"}))
    with pytest.raises(UnsupportedError, match='controller "rdma" is not available'):
        m.apply_resources(res(unified={"rdma.max": "1"}))
    with pytest.raises(UnsupportedError, match="memory.nonexistent does not exist"):
        m.apply_resources(res(unified={"memory.nonexistent": "1"}))


def test_devices_warn_only_beyond_defaults(created, caplog):
    host, m, d = created
    default = (NS(allow=False, type=None, major=None, minor=None, access="rwm"),
               NS(allow=True, type="c", major=1, minor=3, access="rwm"),
               NS(allow=True, type="c", major=136, minor=None, access="rwm"))
    with caplog.at_level(logging.WARNING):
        m.apply_resources(res(devices=default))
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):
        m.apply_resources(res(devices=(*default, NS(allow=True, type="b", major=8, minor=0, access="r"))))
    assert "not enforced" in caplog.text and "eBPF" in caplog.text
    assert host.files.writes == []


def test_missing_controller_file_is_a_clear_error(v2host):
    with open(os.path.join(v2host.root, "cgroup.controllers"), "w") as f:
        f.write("cpu")
    m = v2host.open()
    m.create()
    with pytest.raises(UnsupportedError, match=r"memory.max does not exist .*subtree_control"):
        m.apply_resources(res(memory=NS(limit=100)))


def test_write_error_names_the_file(created):
    host, m, d = created
    host.files.fail["pids.max"] = errno.EINVAL
    with pytest.raises(KernelError, match=rf"^write {d}/pids.max: Invalid argument$"):
        m.apply_resources(res(pids=NS(limit=5)))


# -- freezer, kill, destroy

def test_freeze_waits_for_events(created):
    host, m, d = created
    host.files.frozen_delay = 3
    m.freeze()
    assert m.is_frozen() and read(f"{d}/cgroup.freeze") == "1"
    assert len(host.files.sleeps) == 3
    m.thaw()
    assert not m.is_frozen()


def test_freeze_timeout_thaws_back(created):
    host, m, d = created
    host.files.frozen_delay = 10 ** 6
    m.freeze_retries = 20
    with pytest.raises(KernelError, match="freeze .*cgroup.events: Device or resource busy"):
        m.freeze()
    assert read(f"{d}/cgroup.freeze") == "0"


def test_freeze_unsupported_without_cgroup_freeze(created):
    host, m, d = created
    os.unlink(f"{d}/cgroup.freeze")
    with pytest.raises(UnsupportedError, match="cgroup.freeze does not exist"):
        m.freeze()


def test_kill_all_sigkill_uses_cgroup_kill(created):
    host, m, d = created
    m.add(10)
    m.kill_all(signal.SIGKILL)
    assert host.files.written("cgroup.kill") == ["1"] and host.files.kills == []
    assert m.pids() == []


def test_kill_all_other_signals_and_old_kernels(created):
    host, m, d = created
    m.add(10)
    m.kill_all(signal.SIGTERM)
    assert host.files.kills == [(10, signal.SIGTERM)]
    assert host.files.written("cgroup.freeze") == ["1", "0"]
    os.unlink(f"{d}/cgroup.kill")
    m.kill_all(signal.SIGKILL)
    assert host.files.kills[-1] == (10, signal.SIGKILL)


def test_destroy(created):
    host, m, d = created
    host.files.mkdir(os.path.join(d, "sub"))
    m.destroy()
    # The runtime's own parent goes with its last container (it leaked
    # after checkpoints and failed restores when only `delete` removed it).
    assert not m.exists() and not os.path.exists(os.path.join(host.root, "migrate"))


def test_destroy_keeps_a_parent_another_container_uses(created):
    host, m, d = created
    host.files.mkdir(os.path.join(host.root, "migrate", "other"))
    m.destroy()
    assert not m.exists() and os.path.isdir(os.path.join(host.root, "migrate", "other"))


def test_state_round_trip_and_stats(created):
    host, m, d = created
    state = json.loads(json.dumps(m.to_state()))
    assert state == {"version": 1, "mode": "v2", "usable": True, "paths": {"": d}, "mounts": {"": host.root}}
    again = load_manager(state, files=host.files)
    assert again.paths() == m.paths() and again.freezer_path() == d
    assert again.stats() == {
        "memory": {"usage": 4096, "limit": None, "max_usage": 8192, "swap_usage": 0},
        "pids": {"current": 2, "limit": None},
        "cpu": {"usage_ns": 250000, "user_ns": 200000, "system_ns": 50000}}


def test_rootless_v2(v2host):
    v2host.files.fail["cgroup.procs"] = errno.EACCES
    m = v2host.open(rootless=True)
    m.create()
    assert m.is_usable()
    m.add(5)
    assert not m.is_usable() and m.pids() == [] and not m.is_frozen()
