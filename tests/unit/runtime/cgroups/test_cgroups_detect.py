"""Layout detection, mountinfo and /proc/self/cgroup parsing, cgroups-path rules."""

import os

import pytest

import migrate.runtime.cgroups as cgroups
from migrate.errors import KernelError, UnsupportedError, UsageError
from migrate.runtime.cgroups.base import (
    Mount, cgroup_dir, normalize_cgroups_path, cgroup_mounts, parse_proc_cgroup,
)

# This machine's own lines (kernel 6.18, hybrid), verbatim.
HOST_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_public_names():
    assert sorted(cgroups.__all__) == ["CgroupFiles", "CgroupManager", "current_paths", "load_manager",
                                      "open_manager", "sub_manager"]
    for name in cgroups.__all__:
        assert getattr(cgroups, name)


def test_parse_mountinfo_host_lines():
    mounts = cgroup_mounts(HOST_MOUNTINFO)
    assert [m.mount_point for m in mounts] == [
        "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]
    assert mounts[3].controllers == ("name=systemd",)
    assert mounts[4] == Mount("/sys/fs/cgroup/unified", "/", "cgroup2", ())


def test_parse_mountinfo_joined_options_escapes_and_optional_fields():
    text = ("50 31 0:40 /sub /sys/fs/cgroup/cpu,cpuacct rw shared:5 master:2 - cgroup cgroup "
            "rw,cpu,cpuacct,xattr,release_agent=/x,clone_children\n"
            "51 31 0:41 / /mnt/my\\040cg rw - cgroup2 none rw,nsdelegate\n"
            "52 31 0:42 / /x rw - cgroup cgroup rw,name=foo,none\n"
            "garbage\n")
    a, b, c = cgroup_mounts(text)
    assert a == Mount("/sys/fs/cgroup/cpu,cpuacct", "/sub", "cgroup", ("cpu", "cpuacct"))
    assert b.mount_point == "/mnt/my cg"
    assert c.controllers == ("name=foo",)


def test_parse_proc_cgroup():
    own = parse_proc_cgroup("9:name=systemd:/\n2:cpu,cpuacct:/a b\n4:memory:/process_api/x\n0::/u\n")
    assert own == {"name=systemd": "/", "cpu": "/a b", "cpuacct": "/a b",
                   "memory": "/process_api/x", "": "/u"}


@pytest.mark.parametrize("given,want", [
    (None, "/migrate/c1"), ("", "/migrate/c1"), ("/a/b", "/a/b"), ("/a//./b/", "/a/b"),
    ("a/b", "a/b"), ("a/../b", "b"), ("/a/b/../c", "/a/c"),
])
def test_cgroups_path_rules(given, want):
    assert normalize_cgroups_path(given, "c1") == want


@pytest.mark.parametrize("bad", ["..", "/..", "/a/../../b", "../x", "a/../../x", "/", ".", "/a/.."])
def test_cgroups_path_escape_rejected(bad):
    with pytest.raises(UsageError, match="cgroups path"):
        normalize_cgroups_path(bad, "c1")


@pytest.mark.parametrize("bad_id", ["", "a/b", ".."])
def test_default_path_needs_a_sane_id(bad_id):
    with pytest.raises(UsageError):
        normalize_cgroups_path(None, bad_id)


def test_cgroup_dir_relative_to_own_cgroup_and_mount_root():
    m = Mount("/cg/memory", "/", "cgroup", ("memory",))
    assert cgroup_dir(m, "/process_api/x", "/migrate/c") == "/cg/memory/migrate/c"
    assert cgroup_dir(m, "/process_api/x", "ctr") == "/cg/memory/process_api/x/ctr"
    # Only /kube is mounted (a container's view): paths below it shift up.
    sub = Mount("/cg/memory", "/kube", "cgroup", ("memory",))
    assert cgroup_dir(sub, "/kube/pod1", "ctr") == "/cg/memory/pod1/ctr"
    # Own cgroup outside the mounted part: fall back to the mount point.
    assert cgroup_dir(sub, "/elsewhere", "ctr") == "/cg/memory/ctr"


def test_detect_v1(v1host):
    m = v1host.open()
    assert m.to_state()["mode"] == "v1"
    paths = m.paths()
    assert paths["cpu"] == paths["cpuacct"] == v1host.path("cpu,cpuacct", "migrate/c1")
    assert paths["name=systemd"] == v1host.path("systemd", "migrate/c1")
    assert "" not in paths
    assert m.freezer_path() == v1host.path("freezer", "migrate/c1")


def test_detect_hybrid(hybrid):
    m = hybrid.open()
    assert m.to_state()["mode"] == "hybrid"
    assert m.paths()[""] == hybrid.path("unified", "migrate/c1")
    assert m.paths()["memory"] == hybrid.path("memory", "migrate/c1")
    assert m.freezer_path() == hybrid.path("freezer", "migrate/c1")


def test_detect_pure_v2(v2host):
    m = v2host.open()
    assert m.to_state()["mode"] == "v2"
    assert m.paths() == {"": os.path.join(v2host.root, "migrate/c1")}
    assert m.freezer_path() == os.path.join(v2host.root, "migrate/c1")


def test_detect_separate_cpu_and_cpuacct(make_host):
    host = make_host("v1", joined_cpu=False)
    paths = host.open().paths()
    assert paths["cpu"] == host.path("cpu", "migrate/c1")
    assert paths["cpuacct"] == host.path("cpuacct", "migrate/c1")


def test_mounts_outside_cgroup_root_are_ignored(tmp_path, v2host):
    # The fake mountinfo also has a cgroup2 mount at tmp_path/other.
    assert not any("other" in p for p in v2host.open().paths().values())


def test_no_cgroups_mounted(tmp_path):
    mi, sc = tmp_path / "mi", tmp_path / "sc"
    mi.write_text("22 1 8:1 / / rw - ext4 /dev/vda1 rw\n")
    sc.write_text("0::/\n")
    kw = dict(container_id="c", cgroups_path=None, cgroup_root=str(tmp_path),
              mountinfo_path=str(mi), self_cgroup_path=str(sc))
    with pytest.raises(UnsupportedError, match="no cgroup hierarchy"):
        cgroups.open_manager(**kw)
    m = cgroups.open_manager(rootless=True, **kw)
    assert not m.is_usable() and m.to_state()["mode"] == "none"
    m.create(); m.add(1); m.destroy()
    assert m.pids() == [] and not m.exists() and m.paths() == {}
    with pytest.raises(UnsupportedError):
        m.freeze()


def test_unreadable_mountinfo(tmp_path):
    kw = dict(container_id="c", cgroups_path=None, cgroup_root=str(tmp_path),
              mountinfo_path=str(tmp_path / "missing"), self_cgroup_path=str(tmp_path / "missing"))
    with pytest.raises(KernelError, match="read .*missing: No such file"):
        cgroups.open_manager(**kw)
    assert not cgroups.open_manager(rootless=True, **kw).is_usable()


def test_systemd_driver_rejected(v1host):
    with pytest.raises(UnsupportedError, match="systemd cgroup driver is not supported; drop --systemd-cgroup"):
        v1host.open(systemd=True)


def test_escape_rejected_by_open_manager(v1host):
    with pytest.raises(UsageError):
        v1host.open("/../../etc")


def test_default_and_relative_paths(make_host):
    host = make_host("hybrid", own="/process_api/abc")
    assert host.open(None).paths()["memory"] == host.path("memory", "migrate/c1")
    assert host.open("").paths()["pids"] == host.path("pids", "migrate/c1")
    rel = host.open("sub/ctr").paths()
    assert rel["memory"] == host.path("memory", "process_api/abc/sub/ctr")
    assert rel[""] == host.path("unified", "process_api/abc/sub/ctr")
    assert host.open("/abs/ctr").paths()["freezer"] == host.path("freezer", "abs/ctr")


def test_relative_path_uses_each_hierarchys_own_cgroup(make_host, tmp_path):
    host = make_host("v1")
    with open(host.self_cgroup) as f:
        text = f.read().replace(":memory:/", ":memory:/sandbox")
    with open(host.self_cgroup, "w") as f:
        f.write(text)
    paths = host.open("ctr").paths()
    assert paths["memory"] == host.path("memory", "sandbox/ctr")
    assert paths["pids"] == host.path("pids", "ctr")


def test_duplicate_hierarchy_mount_is_joined_once(make_host):
    host = make_host("v1")
    with open(host.mountinfo, "a") as f:
        f.write(f"200 29 0:35 / {host.root}/memory2 rw - cgroup cgroup rw,memory\n")
    assert host.open().paths()["memory"] == host.path("memory", "migrate/c1")


def test_managers_implement_the_protocol():
    from migrate.runtime.cgroups.protocol import CgroupManager
    from migrate.runtime.cgroups.v1 import V1Manager
    from migrate.runtime.cgroups.v2 import V2Manager

    methods = [n for n in vars(CgroupManager) if not n.startswith("_")]
    assert "kill_all" in methods and "is_usable" in methods
    for cls in (V1Manager, V2Manager):
        assert all(callable(getattr(cls, n, None)) for n in methods), cls


def test_hot_path_import_stays_light():
    import subprocess
    import sys
    import migrate
    repo = os.path.dirname(os.path.dirname(migrate.__file__))
    code = (f"import sys; sys.path.insert(0, {repo!r}); import migrate.runtime.cgroups.v1; "
            "print(' '.join(m for m in ('typing', 'dataclasses', 'click', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
