"""default_spec against what runc 1.1.5 prints (files in data/, captured here).

The differences are deliberate and listed in migrate/oci/defaults.py; each
one is undone here before comparing, so any other drift fails.
"""

import copy
import json
import os
from pathlib import Path

import pytest

from migrate.oci import (
    default_spec,
    parse_config,
    spec_to_dict,
)

DATA = Path(__file__).parent / "data"


def runc_spec(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def undo_our_changes(spec: dict) -> dict:
    """Turn our default spec into what runc 1.1.5 prints (on a v1 host)."""
    spec = copy.deepcopy(spec)
    spec["ociVersion"] = "1.0.2-dev"
    spec["hostname"] = "runc"
    caps = spec["process"]["capabilities"]
    caps["ambient"] = list(caps["bounding"])
    return spec


def test_default_spec_is_runc_spec_apart_from_documented_changes():
    ours = default_spec(cgroup_namespace=False)
    assert undo_our_changes(ours) == runc_spec("runc-1.1.5-spec.json")


def test_default_spec_key_order_follows_runc():
    # `migrate spec` and `runc spec` outputs should diff line by line.
    ours = json.dumps(undo_our_changes(default_spec(cgroup_namespace=False)), indent="\t")
    theirs = json.dumps(runc_spec("runc-1.1.5-spec.json"), indent="\t")
    # ambient is re-added at the end of capabilities by undo_our_changes,
    # which is where runc has it as well.
    assert ours == theirs


def test_rootless_spec_is_runc_rootless_apart_from_documented_changes():
    # The fixture was captured as root, so runc mapped container 0 to 0.
    ours = default_spec(rootless=True, uid=0, gid=0, cgroup_namespace=False)
    assert undo_our_changes(ours) == runc_spec("runc-1.1.5-spec-rootless.json")
    theirs = json.dumps(runc_spec("runc-1.1.5-spec-rootless.json"), indent="\t")
    assert json.dumps(undo_our_changes(ours), indent="\t") == theirs


def test_default_spec_contents():
    spec = default_spec()
    assert spec["ociVersion"] == "1.2.0"
    assert spec["hostname"] == "migrate"
    process = spec["process"]
    assert process["terminal"] is True
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["args"] == ["sh"]
    assert process["cwd"] == "/"
    assert process["noNewPrivileges"] is True
    assert set(process["capabilities"]) == {"bounding", "effective", "permitted"}
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert [ns["type"] for ns in spec["linux"]["namespaces"]] == [
        "pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert spec["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert [m["destination"] for m in spec["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]


def test_rootless_spec_contents():
    spec = default_spec(rootless=True, uid=1000, gid=1001)
    linux = spec["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 1001, "size": 1}]
    types = [ns["type"] for ns in linux["namespaces"]]
    assert "network" not in types
    assert types[-1] == "user"
    assert "resources" not in linux
    sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert sys_mount == {"destination": "/sys", "type": "none", "source": "/sys",
                         "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    for m in spec["mounts"]:
        assert not any(o.startswith(("gid=", "uid=")) for o in m.get("options", ()))
    cgroup = next(m for m in spec["mounts"] if m["destination"] == "/sys/fs/cgroup")
    assert cgroup["type"] == "cgroup"


def test_rootless_ids_default_to_effective_ids():
    linux = default_spec(rootless=True)["linux"]
    assert linux["uidMappings"][0]["hostID"] == os.geteuid()
    assert linux["gidMappings"][0]["hostID"] == os.getegid()


def test_uid_gid_ignored_without_rootless():
    assert default_spec(uid=1000, gid=1000) == default_spec()


def test_each_call_returns_a_fresh_dict():
    a = default_spec()
    a["process"]["args"].append("-c")
    a["mounts"][1]["options"].append("x")
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    assert default_spec() == default_spec()
    assert default_spec()["process"]["args"] == ["sh"]
    assert "x" not in default_spec()["mounts"][1]["options"]
    assert default_spec()["process"]["capabilities"]["bounding"] == [
        "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def test_rootless_does_not_share_lists_with_the_plain_spec():
    r = default_spec(rootless=True, uid=5, gid=5)
    r["mounts"][0]["destination"] = "/changed"
    assert default_spec()["mounts"][0]["destination"] == "/proc"


@pytest.mark.parametrize("kwargs", [
    {},
    {"cgroup_namespace": False},
    {"rootless": True, "uid": 1000, "gid": 1000},
    {"rootless": True, "uid": 0, "gid": 0, "cgroup_namespace": False},
])
def test_default_spec_round_trips(kwargs, tmp_path):
    data = default_spec(**kwargs)
    spec = parse_config(data, bundle=str(tmp_path))
    assert spec.root.path == str(tmp_path / "rootfs")
    out = spec_to_dict(spec)
    expected = copy.deepcopy(data)
    expected["root"]["path"] = str(tmp_path / "rootfs")
    assert out == expected
    # and key order too, so stored configs stay readable
    assert json.dumps(out) == json.dumps(expected)
    assert parse_config(out, bundle="/elsewhere") == spec


def test_default_spec_parses_to_expected_model(tmp_path):
    spec = parse_config(default_spec(), bundle=str(tmp_path))
    assert spec.process.capabilities.bounding == (
        "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert spec.process.capabilities.ambient == ()
    assert spec.linux.has_namespace("cgroup")
    assert not spec.linux.has_namespace("user")
    assert spec.linux.resources.devices[0].allow is False
    assert spec.linux.resources.devices[0].access == "rwm"
    assert spec.hostname == "migrate"
    rootless = parse_config(default_spec(rootless=True, uid=7, gid=8), bundle=str(tmp_path))
    assert rootless.namespace("user").path is None
    assert rootless.linux.uid_mappings[0].host_id == 7
    assert rootless.linux.resources is None
