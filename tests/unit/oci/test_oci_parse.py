"""Parsing config.json into models, and writing it back."""

import copy
import json
import os
from pathlib import Path

import pytest

from migrate.errors import KernelError, NotFoundError, UsageError
from migrate.oci import (
    BlockIO,
    Capabilities,
    ConfigError,
    ConsoleSize,
    Cpu,
    CpuAffinity,
    Device,
    DeviceRule,
    Hook,
    HugepageLimit,
    IdMapping,
    InterfacePriority,
    IOPriority,
    Memory,
    Mount,
    Namespace,
    NetDevice,
    Network,
    Pids,
    Process,
    Rdma,
    Rlimit,
    Root,
    Scheduler,
    Spec,
    ThrottleDevice,
    TimeOffset,
    User,
    WeightDevice,
    default_spec,
    load_config,
    parse_config,
    parse_process,
    process_to_dict,
    spec_to_dict,
)

DATA = Path(__file__).parent / "data"


def podman() -> dict:
    return json.loads((DATA / "podman-like.json").read_text())


def minimal() -> dict:
    return {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["true"], "cwd": "/"},
    }


def error_of(data, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kwargs)
    return str(info.value)


# -- the Podman-like config ---------------------------------------------------


def test_podman_config_round_trips_exactly():
    data = podman()
    spec = parse_config(data, bundle="/bundle")
    out = spec_to_dict(spec)
    assert out == data  # root.path is absolute already
    assert parse_config(out) == spec


def test_podman_config_process():
    p = parse_config(podman()).process
    assert p.terminal is False
    assert p.console_size == ConsoleSize(height=40, width=120)
    assert p.user == User(uid=1000, gid=1000, umask=0o22, additional_gids=(10, 1000))
    assert p.args == ("/bin/sh", "-c", "sleep 1000")
    assert "EMPTY=" in p.env
    assert p.cwd == "/srv"
    assert p.capabilities.inheritable == ("CAP_KILL",)
    assert p.capabilities.ambient == ("CAP_KILL",)
    assert len(p.capabilities.bounding) == 11
    assert p.rlimits[2] == Rlimit(type="RLIMIT_CORE", hard=2**64 - 1, soft=0)
    assert p.no_new_privileges is True
    assert p.apparmor_profile == "containers-default-0.50.1"
    assert p.oom_score_adj == 0
    assert p.scheduler == Scheduler(policy="SCHED_BATCH", nice=5,
                                    flags=("SCHED_FLAG_RESET_ON_FORK",))
    assert p.selinux_label.startswith("system_u:")
    assert p.io_priority == IOPriority(class_="IOPRIO_CLASS_BE", priority=4)
    assert p.exec_cpu_affinity == CpuAffinity(initial="0-1", final="1")


def test_podman_config_top_level_and_hooks():
    spec = parse_config(podman())
    assert spec.oci_version == "1.0.2-dev"
    assert spec.root == Root(path="/var/lib/containers/storage/overlay/abc/merged",
                             readonly=False)
    assert spec.hostname == "web"
    assert spec.domainname == "example.org"
    assert spec.annotations["io.container.manager"] == "libpod"
    assert len(spec.annotations) == 4
    h = spec.hooks
    assert h.prestart == (Hook(path="/usr/libexec/podman/hook", args=("hook", "prestart")),)
    assert h.create_runtime[0].timeout == 5
    assert h.create_runtime[0].env == ("DEBUG=1",)
    assert h.create_container == (Hook(path="/bin/true"),)
    assert h.start_container[0].args == ("true",)
    assert h.poststart[0].timeout == 2
    assert h.poststop[0].env == ("A=b",)
    assert h


def test_podman_config_mounts():
    mounts = parse_config(podman()).mounts
    assert mounts[0] == Mount(destination="/proc", type="proc", source="proc",
                              options=("nosuid", "noexec", "nodev"))
    assert mounts[4].uid_mappings == (IdMapping(container_id=0, host_id=100000, size=65536),)
    assert mounts[4].gid_mappings == mounts[4].uid_mappings
    assert mounts[5].type is None
    assert mounts[5].source == "/run/secrets"


def test_podman_config_linux():
    linux = parse_config(podman()).linux
    assert [n.type for n in linux.namespaces] == [
        "pid", "network", "ipc", "uts", "mount", "user", "cgroup", "time"]
    assert linux.namespace("network") == Namespace(type="network", path="/run/netns/cni-1234")
    assert linux.has_namespace("time")
    assert linux.creates_namespace("pid")
    assert not linux.creates_namespace("network")
    assert linux.uid_mappings == (IdMapping(container_id=0, host_id=100000, size=65536),)
    assert linux.sysctl["kernel.shmmax"] == "68719476736"
    assert linux.cgroups_path == "machine.slice:libpod:abc"
    assert linux.devices == (
        Device(type="c", path="/dev/fuse", major=10, minor=229, file_mode=0o666, uid=0, gid=0),
        Device(type="b", path="/dev/sda", major=8, minor=0),
        Device(type="p", path="/dev/fifo"),  # major/minor 0 as Go writes them
    )
    assert linux.net_devices == {"eth1": NetDevice(name="net1"), "dummy0": NetDevice()}
    assert linux.rootfs_propagation == "rslave"
    assert linux.masked_paths == ("/proc/acpi", "/proc/kcore", "/sys/firmware")
    assert linux.readonly_paths == ("/proc/bus", "/proc/sys")
    assert linux.mount_label.endswith("c1,c2")
    assert linux.intel_rdt == {"closID": "guaranteed_group", "l3CacheSchema": "L3:0=7f0;1=1f"}
    assert linux.memory_policy == {"mode": "MPOL_BIND", "nodes": "0"}
    assert linux.personality == {"domain": "LINUX"}
    assert linux.time_offsets == {"monotonic": TimeOffset(secs=172800),
                                  "boottime": TimeOffset(secs=-3600, nanosecs=500)}


def test_podman_config_seccomp_is_kept_raw():
    data = podman()
    spec = parse_config(data)
    assert spec.linux.seccomp == data["linux"]["seccomp"]
    assert spec.linux.seccomp["syscalls"][2]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"


def test_podman_config_resources_every_field():
    r = parse_config(podman()).linux.resources
    assert r.devices == (
        DeviceRule(allow=False, access="rwm"),
        DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm"),
        DeviceRule(allow=True, type="c", major=136, access="rwm"),
        DeviceRule(allow=True, type="b", minor=0, access="r"),
    )
    assert r.memory == Memory(limit=536870912, reservation=268435456, swap=1073741824,
                              kernel=-1, kernel_tcp=0, swappiness=0, disable_oom_killer=False,
                              use_hierarchy=True, check_before_update=False)
    assert r.cpu == Cpu(shares=1024, quota=50000, burst=10000, period=100000,
                        realtime_runtime=950000, realtime_period=1000000, cpus="0-1",
                        mems="0", idle=0)
    assert r.pids == Pids(limit=2048)
    assert r.block_io == BlockIO(
        weight=500, leaf_weight=300,
        weight_device=(WeightDevice(major=8, minor=0, weight=600, leaf_weight=200),
                       WeightDevice(major=8, minor=16)),
        throttle_read_bps_device=(ThrottleDevice(major=8, minor=0, rate=104857600),),
        throttle_write_bps_device=(ThrottleDevice(major=8, minor=0, rate=52428800),),
        throttle_read_iops_device=(ThrottleDevice(major=8, minor=0, rate=1000),),
        throttle_write_iops_device=(ThrottleDevice(major=8, minor=0, rate=500),),
    )
    assert r.hugepage_limits == (HugepageLimit(page_size="2MB", limit=209715200),
                                 HugepageLimit(page_size="1GB", limit=0))
    assert r.network == Network(class_id=1048577, priorities=(
        InterfacePriority(name="eth0", priority=500), InterfacePriority(name="lo", priority=1000)))
    assert r.rdma == {"mlx5_1": Rdma(hca_handles=3, hca_objects=10000),
                      "mlx4_0": Rdma(hca_handles=1)}
    assert r.unified == {"memory.high": "1073741824", "io.weight": "default 100"}


def test_podman_config_loads_from_bundle(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(podman()))
    assert load_config(str(tmp_path)) == parse_config(podman())


# -- Go's decoding rules ------------------------------------------------------


def test_minimal_config_defaults():
    spec = parse_config(minimal(), bundle="/b")
    assert spec == Spec(oci_version="1.2.0", root=Root(path="/b/rootfs"),
                        process=Process(args=("true",), cwd="/"))
    assert spec.mounts == ()
    assert not spec.hooks
    assert spec.annotations == {}
    assert spec.linux.namespaces == ()
    assert spec.linux.resources is None
    assert spec.namespace("pid") is None
    assert spec_to_dict(spec) == {"ociVersion": "1.2.0",
                                  "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"],
                                              "cwd": "/"},
                                  "root": {"path": "/b/rootfs"}}


def test_null_is_absent():
    data = minimal()
    data.update(hostname=None, mounts=None, hooks=None, annotations=None, linux=None)
    data["process"].update(env=None, capabilities=None, oomScoreAdj=None, terminal=None)
    assert parse_config(data) == parse_config(minimal())


def test_empty_optional_strings_are_absent():
    data = minimal()
    data.update(hostname="", domainname="")
    data["process"]["apparmorProfile"] = ""
    data["linux"] = {"cgroupsPath": "", "rootfsPropagation": "", "mountLabel": ""}
    spec = parse_config(data)
    assert spec.hostname is None and spec.domainname is None
    assert spec.process.apparmor_profile is None
    assert spec.linux.cgroups_path is None
    assert spec.linux.rootfs_propagation is None


def test_unknown_keys_are_ignored():
    data = minimal()
    data["windows"] = {"layerFolders": []}
    data["vm"] = {"kernel": {"path": "/k"}}
    data["process"]["commandLine"] = "cmd.exe"
    data["linux"] = {"futureThing": 1}
    assert parse_config(data) == parse_config(minimal())


def test_non_canonical_input_is_written_canonically():
    data = minimal()
    data["process"]["terminal"] = False
    data["root"]["readonly"] = False
    data["linux"] = {"timeOffsets": {"boottime": {"secs": 0, "nanosecs": 0}}, "namespaces": [{"type": "time"}]}
    data["hooks"] = {}
    out = spec_to_dict(parse_config(data, bundle="/b"))
    assert "terminal" not in out["process"]
    assert out["root"] == {"path": "/b/rootfs"}
    assert out["linux"]["timeOffsets"] == {"boottime": {}}
    assert "hooks" not in out
    assert parse_config(out) == parse_config(data, bundle="/b")


def test_pointer_fields_keep_zero_and_false():
    data = minimal()
    data["process"]["oomScoreAdj"] = 0
    data["process"]["user"] = {"uid": 0, "gid": 0, "umask": 0}
    data["linux"] = {"resources": {"memory": {"swappiness": 0, "disableOOMKiller": False},
                                   "cpu": {"quota": 0}, "pids": {"limit": 0}}}
    out = spec_to_dict(parse_config(data))
    assert out["process"]["oomScoreAdj"] == 0
    assert out["process"]["user"]["umask"] == 0
    assert out["linux"]["resources"] == data["linux"]["resources"]


def test_missing_user_means_root():
    data = minimal()
    assert "user" not in data["process"]
    assert parse_config(data).process.user == User(uid=0, gid=0)
    data["process"]["user"] = {"uid": 5}
    assert parse_config(data).process.user == User(uid=5, gid=0)


def test_empty_sections_round_trip():
    data = minimal()
    data["linux"] = {"resources": {"memory": {}, "cpu": {}, "blockIO": {}, "network": {}},
                     "seccomp": {}, "personality": {}}
    spec = parse_config(data)
    assert spec.linux.resources.memory == Memory()
    out = spec_to_dict(spec)
    assert out["linux"] == data["linux"]


# -- root.path ----------------------------------------------------------------


def test_root_path_is_resolved_against_the_bundle(tmp_path, monkeypatch):
    data = minimal()
    assert parse_config(data, bundle="/x/b").root.path == "/x/b/rootfs"
    data["root"]["path"] = "../other/./rootfs/"
    assert parse_config(data, bundle="/x/b").root.path == "/x/other/rootfs"
    data["root"]["path"] = "/abs/rootfs"
    assert parse_config(data, bundle="/x/b").root.path == "/abs/rootfs"
    monkeypatch.chdir(tmp_path)
    data["root"]["path"] = "rootfs"
    assert parse_config(data, bundle="rel").root.path == str(tmp_path / "rel" / "rootfs")
    assert parse_config(data).root.path == str(tmp_path / "rootfs")


def test_root_path_existence_is_not_checked(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(minimal()))
    assert load_config(str(tmp_path)).root.path == str(tmp_path / "rootfs")


# -- load_config --------------------------------------------------------------


def test_load_config_missing(tmp_path):
    with pytest.raises(NotFoundError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == f'bundle "{tmp_path}": config.json not found'


def test_load_config_bad_json(tmp_path):
    (tmp_path / "config.json").write_text('{"ociVersion": "1.2.0",\n "root": }')
    with pytest.raises(UsageError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == "config.json: invalid json: expecting value at line 2 column 10"
    assert info.value.exit_code == 2


def test_load_config_empty_file(tmp_path):
    (tmp_path / "config.json").write_text("")
    with pytest.raises(UsageError, match="^config.json: invalid json: expecting value"):
        load_config(str(tmp_path))


def test_load_config_not_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == "config.json: must be a json object"


def test_load_config_is_a_directory(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(KernelError) as info:
        load_config(str(tmp_path))
    assert "config.json" in str(info.value)


def test_load_config_invalid_config(tmp_path):
    data = minimal()
    data["process"]["args"] = []
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(UsageError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == "config.json: process.args: must be a non-empty list of strings"


# -- shape errors -------------------------------------------------------------


def _set(path: str, value):
    """Return data = minimal() with the dotted ``path`` set to ``value``."""
    data = minimal()
    data["linux"] = {"namespaces": [{"type": "mount"}, {"type": "uts"}]}
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {}) if not key.isdigit() else node[int(key)]
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize("path, value, message", [
    ("ociVersion", None, "config.json: ociVersion: is required"),
    ("ociVersion", 1, "config.json: ociVersion: must be a string"),
    ("ociVersion", "", "config.json: ociVersion: must not be empty"),
    ("root", None, "config.json: root: is required"),
    ("root", "rootfs", "config.json: root: must be an object"),
    ("root.path", None, "config.json: root.path: is required"),
    ("root.path", "", "config.json: root.path: must not be empty"),
    ("root.readonly", "yes", "config.json: root.readonly: must be true or false"),
    ("process", [], "config.json: process: must be an object"),
    ("process.args", None, "config.json: process.args: must be a non-empty list of strings"),
    ("process.args", [], "config.json: process.args: must be a non-empty list of strings"),
    ("process.args", "sh", "config.json: process.args: must be a list"),
    ("process.args", ["sh", 1], "config.json: process.args[1]: must be a string"),
    ("process.cwd", None, "config.json: process.cwd: is required"),
    ("process.terminal", 1, "config.json: process.terminal: must be true or false"),
    ("process.user.uid", -1, "config.json: process.user.uid: must be from 0 to 4294967295, got -1"),
    ("process.user.uid", 2**32, "config.json: process.user.uid: must be from 0 to 4294967295, got 4294967296"),
    ("process.user.gid", "0", "config.json: process.user.gid: must be an integer"),
    ("process.user.gid", 1.0, "config.json: process.user.gid: must be an integer"),
    ("process.user.uid", True, "config.json: process.user.uid: must be an integer"),
    ("process.user.additionalGids", [1, "2"], "config.json: process.user.additionalGids[1]: must be an integer"),
    ("process.env", ["A=1", None], "config.json: process.env[1]: must be a string"),
    ("process.consoleSize", {"height": 1}, "config.json: process.consoleSize.width: is required"),
    ("process.capabilities", ["CAP_KILL"], "config.json: process.capabilities: must be an object"),
    ("process.capabilities", {"bounding": "CAP_KILL"}, "config.json: process.capabilities.bounding: must be a list"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "hard": 1}], "config.json: process.rlimits[0].soft: is required"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "hard": -1, "soft": 1}], "config.json: process.rlimits[0].hard: must be from 0 to 18446744073709551615, got -1"),
    ("process.rlimits", [{"hard": 1, "soft": 1}], "config.json: process.rlimits[0].type: is required"),
    ("process.oomScoreAdj", "5", "config.json: process.oomScoreAdj: must be an integer"),
    ("process.scheduler", {"nice": 1}, "config.json: process.scheduler.policy: is required"),
    ("process.ioPriority", {"priority": 1}, "config.json: process.ioPriority.class: is required"),
    ("hostname", 5, "config.json: hostname: must be a string"),
    ("mounts", {}, "config.json: mounts: must be a list"),
    ("mounts", ["/proc"], "config.json: mounts[0]: must be an object"),
    ("mounts", [{"type": "proc"}], "config.json: mounts[0].destination: is required"),
    ("mounts", [{"destination": "/a", "options": "ro"}], "config.json: mounts[0].options: must be a list"),
    ("mounts", [{"destination": "/a", "uidMappings": [{"containerID": 0, "hostID": 0}]}], "config.json: mounts[0].uidMappings[0].size: is required"),
    ("hooks", [], "config.json: hooks: must be an object"),
    ("hooks.poststop", [{"args": ["x"]}], "config.json: hooks.poststop[0].path: is required"),
    ("hooks.prestart", [{"path": "/x", "timeout": "5"}], "config.json: hooks.prestart[0].timeout: must be an integer"),
    ("annotations", [], "config.json: annotations: must be an object"),
    ("annotations", {"a": 1}, 'config.json: annotations["a"]: must be a string'),
    ("linux", "x", "config.json: linux: must be an object"),
    ("linux.namespaces", [{"path": "/x"}], "config.json: linux.namespaces[0].type: is required"),
    ("linux.namespaces", [{"type": "pid", "path": 3}], "config.json: linux.namespaces[0].path: must be a string"),
    ("linux.uidMappings", [{"containerID": 0, "hostID": "0", "size": 1}], "config.json: linux.uidMappings[0].hostID: must be an integer"),
    ("linux.sysctl", {"net.x": 1}, 'config.json: linux.sysctl["net.x"]: must be a string'),
    ("linux.timeOffsets", {"boottime": 5}, 'config.json: linux.timeOffsets["boottime"]: must be an object'),
    ("linux.timeOffsets", {"boottime": {"nanosecs": -1}}, 'config.json: linux.timeOffsets["boottime"].nanosecs: must be from 0 to 4294967295, got -1'),
    ("linux.devices", [{"type": "c"}], "config.json: linux.devices[0].path: is required"),
    ("linux.devices", [{"path": "/dev/x"}], "config.json: linux.devices[0].type: is required"),
    ("linux.devices", [{"path": "/dev/x", "type": "c", "fileMode": -1}], "config.json: linux.devices[0].fileMode: must be from 0 to 4294967295, got -1"),
    ("linux.netDevices", {"eth0": []}, 'config.json: linux.netDevices["eth0"]: must be an object'),
    ("linux.seccomp", [], "config.json: linux.seccomp: must be an object"),
    ("linux.personality", "LINUX", "config.json: linux.personality: must be an object"),
    ("linux.intelRdt", 1, "config.json: linux.intelRdt: must be an object"),
    ("linux.memoryPolicy", [], "config.json: linux.memoryPolicy: must be an object"),
    ("linux.maskedPaths", "/proc/kcore", "config.json: linux.maskedPaths: must be a list"),
    ("linux.resources", [], "config.json: linux.resources: must be an object"),
    ("linux.resources.devices", [{"access": "rwm"}], "config.json: linux.resources.devices[0].allow: is required"),
    ("linux.resources.devices", [{"allow": "no"}], "config.json: linux.resources.devices[0].allow: must be true or false"),
    ("linux.resources.devices", [{"allow": True, "major": "1"}], "config.json: linux.resources.devices[0].major: must be an integer"),
    ("linux.resources.memory", {"limit": "1g"}, "config.json: linux.resources.memory.limit: must be an integer"),
    ("linux.resources.memory", {"limit": 2**63}, "config.json: linux.resources.memory.limit: must be from -9223372036854775808 to 9223372036854775807, got 9223372036854775808"),
    ("linux.resources.memory", {"swappiness": -1}, "config.json: linux.resources.memory.swappiness: must be from 0 to 18446744073709551615, got -1"),
    ("linux.resources.memory", {"useHierarchy": 1}, "config.json: linux.resources.memory.useHierarchy: must be true or false"),
    ("linux.resources.cpu", {"shares": -2}, "config.json: linux.resources.cpu.shares: must be from 0 to 18446744073709551615, got -2"),
    ("linux.resources.cpu", {"cpus": 0}, "config.json: linux.resources.cpu.cpus: must be a string"),
    ("linux.resources.pids", {}, "config.json: linux.resources.pids.limit: is required"),
    ("linux.resources.blockIO", {"weight": 70000}, "config.json: linux.resources.blockIO.weight: must be from 0 to 65535, got 70000"),
    ("linux.resources.blockIO", {"weightDevice": [{"major": 8}]}, "config.json: linux.resources.blockIO.weightDevice[0].minor: is required"),
    ("linux.resources.blockIO", {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}, "config.json: linux.resources.blockIO.throttleReadBpsDevice[0].rate: is required"),
    ("linux.resources.hugepageLimits", [{"limit": 1}], "config.json: linux.resources.hugepageLimits[0].pageSize: is required"),
    ("linux.resources.network", {"classID": -1}, "config.json: linux.resources.network.classID: must be from 0 to 4294967295, got -1"),
    ("linux.resources.network", {"priorities": [{"name": "eth0"}]}, "config.json: linux.resources.network.priorities[0].priority: is required"),
    ("linux.resources.rdma", {"mlx": {"hcaHandles": "3"}}, 'config.json: linux.resources.rdma["mlx"].hcaHandles: must be an integer'),
    ("linux.resources.unified", {"memory.max": 5}, 'config.json: linux.resources.unified["memory.max"]: must be a string'),
])
def test_shape_errors(path, value, message):
    assert error_of(_set(path, value)) == message


def test_top_level_must_be_an_object():
    assert error_of([minimal()]) == "config.json: must be a json object"


def test_source_names_the_document():
    data = minimal()
    data["process"]["args"] = []
    assert error_of(data, source="state.json") == (
        "state.json: process.args: must be a non-empty list of strings")


def test_config_error_fields():
    data = minimal()
    data["process"]["cwd"] = "rel"
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    err = info.value
    assert isinstance(err, UsageError)
    assert (err.source, err.where, err.reason) == (
        "config.json", "process.cwd", 'must be an absolute path, got "rel"')


# -- exec process.json --------------------------------------------------------


def podman_exec_process() -> dict:
    return {
        "terminal": True,
        "consoleSize": {"height": 24, "width": 80},
        "user": {"uid": 0, "gid": 0, "additionalGids": [0]},
        "args": ["/bin/sh"],
        "env": ["PATH=/usr/bin:/bin", "TERM=xterm", "HOME=/root"],
        "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                         "permitted": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
        "noNewPrivileges": True,
        "apparmorProfile": "unconfined",
        "oomScoreAdj": 100,
        "selinuxLabel": "system_u:system_r:container_t:s0",
    }


def test_parse_process_round_trips():
    data = podman_exec_process()
    process = parse_process(data)
    assert process.terminal
    assert process.capabilities == Capabilities(bounding=("CAP_KILL",), effective=("CAP_KILL",),
                                                permitted=("CAP_KILL",))
    assert process.oom_score_adj == 100
    assert process_to_dict(process) == data
    assert parse_process(process_to_dict(process)) == process


def test_parse_process_errors_name_process_json():
    data = podman_exec_process()
    data["args"] = []
    with pytest.raises(ConfigError) as info:
        parse_process(data)
    assert str(info.value) == "process.json: args: must be a non-empty list of strings"
    data = podman_exec_process()
    data["capabilities"]["effective"] = ["CAP_FLY"]
    with pytest.raises(ConfigError) as info:
        parse_process(data, source="/run/p.json")
    assert str(info.value) == '/run/p.json: capabilities.effective[0]: unknown capability "CAP_FLY"'
    with pytest.raises(ConfigError) as info:
        parse_process(["sh"])
    assert str(info.value) == "process.json: must be a json object"


def test_process_from_spec_equals_process_from_process_json():
    data = default_spec()
    from_spec = parse_config(data).process
    assert parse_process(copy.deepcopy(data["process"])) == from_spec
    assert process_to_dict(from_spec) == data["process"]


def test_process_dict_for_exec_merging():
    # exec builds a process from the container's own and the user's flags;
    # the models are frozen, so it uses dataclasses.replace.
    from migrate import _record as dataclasses
    base = parse_config(default_spec()).process
    merged = dataclasses.replace(base, args=("ls", "-l"), terminal=False,
                                 env=base.env + ("X=1",))
    out = process_to_dict(merged)
    assert out["args"] == ["ls", "-l"]
    assert "terminal" not in out
    assert out["env"][-1] == "X=1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        merged.args = ("x",)


def test_models_are_keyword_only_and_slotted():
    with pytest.raises(TypeError):
        Root("/r")
    assert not hasattr(Root(path="/r"), "__dict__")


def test_rlimit_infinity_and_big_values():
    data = minimal()
    data["process"]["rlimits"] = [{"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 2**64 - 1}]
    assert parse_config(data).process.rlimits[0].hard == 2**64 - 1


def test_spec_to_dict_is_json_serialisable():
    json.dumps(spec_to_dict(parse_config(podman())))
