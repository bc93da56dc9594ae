"""update's rules (runc 1.1 update.go) and events' statistics, on plain files."""

import json
import os

from migrate.oci.resources import Cpu, Memory, Pids, Resources, DeviceRule
from migrate.runtime.cgroups.events import OomWatch, collect_stats
from migrate.runtime.lifecycle.update import merge_resources, plan_patch

SAVED = Resources(memory=Memory(limit=32 << 20, reservation=24 << 20),
                  cpu=Cpu(shares=100, quota=500000, period=1000000), pids=Pids(limit=20),
                  devices=(DeviceRule(allow=False, access="rwm"),))


def test_period_alone_keeps_the_saved_quota():
    plan = plan_patch(Resources(cpu=Cpu(period=900000)), SAVED)
    assert (plan.cpu.quota, plan.cpu.period) == (500000, 900000)


def test_quota_alone_keeps_the_saved_period():
    plan = plan_patch(Resources(cpu=Cpu(quota=600000)), SAVED)
    assert (plan.cpu.quota, plan.cpu.period) == (600000, 1000000)


def test_neither_quota_nor_period_writes_neither():
    plan = plan_patch(Resources(cpu=Cpu(shares=200)), SAVED)
    assert plan.cpu.quota is None and plan.cpu.period is None


def test_unlimited_memory_lifts_swap_too():
    plan = plan_patch(Resources(memory=Memory(limit=-1)), SAVED)
    assert plan.memory.swap == -1
    assert plan_patch(Resources(memory=Memory(limit=-1, swap=64 << 20)), SAVED).memory.swap == 64 << 20


def test_update_never_rewrites_device_rules():
    plan = plan_patch(Resources(devices=(DeviceRule(allow=True),), pids=Pids(limit=5)), SAVED)
    assert plan.devices == ()


def test_merge_keeps_what_the_patch_leaves_alone():
    merged = merge_resources(SAVED, plan_patch(Resources(memory=Memory(limit=64 << 20),
                                                         pids=Pids(limit=-1)), SAVED))
    assert merged.memory == Memory(limit=64 << 20, reservation=24 << 20)
    assert merged.cpu == SAVED.cpu
    assert merged.pids.limit == -1
    assert merged.devices == SAVED.devices


def test_merge_without_saved_resources():
    patch = Resources(pids=Pids(limit=3))
    assert merge_resources(None, patch) is patch


def _files(d, **files):
    os.makedirs(d, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(d, name.replace("__", ".")), "w") as f:
            f.write(text)
    return str(d)


def test_v1_stats_in_runcs_shape(tmp_path):
    paths = {
        "memory": _files(tmp_path / "memory", memory__stat="cache 4096\nrss 8192\n",
                         memory__limit_in_bytes="33554432\n", memory__usage_in_bytes="12288\n",
                         memory__max_usage_in_bytes="20000\n", memory__failcnt="0\n"),
        "pids": _files(tmp_path / "pids", pids__current="3\n", pids__max="max\n"),
        "cpuacct": _files(tmp_path / "cpuacct", cpuacct__usage="1500\n",
                          cpuacct__usage_percpu="1000 500 \n", cpuacct__stat="user 2\nsystem 1\n"),
        "cpu": _files(tmp_path / "cpu", cpu__stat="nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"),
        "cpuset": _files(tmp_path / "cpuset", cpuset__cpus="0-2,4\n", cpuset__mems="0\n"),
    }
    event = {"type": "stats", "id": "c", "data": collect_stats(paths)}
    text = json.dumps(event, separators=(",", ":"))
    assert text.startswith('{"type":"stats","id":"c","data":{"cpu":')
    data = event["data"]
    assert data["memory"]["cache"] == 4096 and data["memory"]["raw"]["rss"] == 8192
    assert data["memory"]["usage"] == {"limit": 33554432, "usage": 12288, "max": 20000, "failcnt": 0}
    assert data["pids"] == {"current": 3}          # "max": omitted as Go's zero
    assert data["cpu"]["usage"]["total"] == 1500 and data["cpu"]["usage"]["percpu"] == [1000, 500]
    assert data["cpu"]["throttling"] == {}
    assert data["cpuset"]["cpus"] == [0, 1, 2, 4]
    assert data["network_interfaces"] is None and data["intel_rdt"] == {}


def test_oom_watch_without_memory_cgroup_counts_v2_kills(tmp_path):
    d = _files(tmp_path / "c", memory__events="low 0\noom 1\noom_kill 1\n")
    watch = OomWatch({"": d})
    assert watch.fd == -1 and watch.read() == 0
    _files(tmp_path / "c", memory__events="oom 3\noom_kill 3\n")
    assert watch.read() == 2
    assert not watch.gone()
