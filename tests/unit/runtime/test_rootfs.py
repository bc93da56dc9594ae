"""The plan of mount(2) calls that prepares a rootfs, checked on FakeSyscalls.

Nothing here mounts: FakeSyscalls records. ``os.statvfs`` (what the remount
of a bind mount reads to learn the flags the kernel locked) is replaced
where a test needs locked flags.
"""

import errno
import os
import types

import pytest

from migrate.errors import KernelError, MountError, UsageError
from migrate.oci import Device, Mount as OciMount
from migrate.runtime import rootfs
from migrate.runtime.rootfs import RootfsPlan, finalize_rootfs, mount_one, prepare_rootfs
from migrate.runtime.syscalls import MNT, MS
from migrate.testing import FakeSyscalls, Mknod, Mount, MountSetattr, PivotRoot, Umount

REMOUNT = MS.BIND | MS.REMOUNT


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "rootfs"
    r.mkdir()
    return r


@pytest.fixture
def src(tmp_path):
    s = tmp_path / "src"
    s.mkdir()
    (s / "file").write_text("data")
    return s


def _plan(root, mounts=(), **kw):
    base = dict(rootfs=str(root), mounts=tuple(mounts), devices=(), propagation=None,
                readonly=False, masked_paths=(), readonly_paths=(), in_userns=False,
                no_pivot=False, cgroup_paths={})
    base.update(kw)
    return RootfsPlan(**base)


@pytest.fixture
def statvfs(monkeypatch):
    """Set the ST_* flags os.statvfs reports; records the paths asked about."""
    state = types.SimpleNamespace(flags=0, paths=[])

    def fake(path):
        state.paths.append(str(path))
        return types.SimpleNamespace(f_flag=state.flags)

    monkeypatch.setattr(rootfs.os, "statvfs", fake)
    return state


def _no_statvfs(path):
    raise AssertionError(f"statvfs({path}) was not expected")


# -- bind mounts --------------------------------------------------------------

def test_bind_mount_with_flags_is_bind_then_remount(root, src, monkeypatch):
    monkeypatch.setattr(rootfs.os, "statvfs", _no_statvfs)
    sys = FakeSyscalls()
    m = OciMount(destination="/data", type="bind", source=str(src),
                 options=("rbind", "ro", "nosuid", "nodev"))
    mount_one(sys, m, _plan(root))
    target = str(root / "data")
    assert os.path.isdir(target)
    assert sys.calls == [
        Mount(str(src), target, None, MS.BIND | MS.REC, None),
        Mount(None, target, None, REMOUNT | MS.REC | MS.RDONLY | MS.NOSUID | MS.NODEV, None),
    ]


def test_plain_bind_needs_no_remount(root, src):
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/data", source=str(src), options=("bind",)),
              _plan(root))
    assert sys.calls == [Mount(str(src), str(root / "data"), None, MS.BIND, None)]


def test_bind_of_a_file_creates_a_file_mountpoint(root, src):
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/etc/hostname", type="bind",
                            source=str(src / "file"), options=("ro",)), _plan(root))
    target = root / "etc" / "hostname"
    assert target.is_file()
    assert [c.flags for c in sys.calls] == [MS.BIND, REMOUNT | MS.RDONLY]


def test_relative_bind_source_is_from_the_bundle(root, src, monkeypatch):
    monkeypatch.chdir(src.parent)
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/d", source="src", options=("bind",)), _plan(root))
    assert sys.calls[0].source == str(src)


def test_bind_with_propagation_and_recursive_attributes(root, src):
    sys = FakeSyscalls()
    m = OciMount(destination="/data", source=str(src), options=("rbind", "rprivate", "rro"))
    mount_one(sys, m, _plan(root))
    target = str(root / "data")
    assert sys.calls == [
        Mount(str(src), target, None, MS.BIND | MS.REC, None),
        Mount(None, target, None, MS.PRIVATE | MS.REC, None),
        MountSetattr(target, 0x1, 0, 0, True, 0),
    ]


def test_recursive_attributes_failure_says_what_is_needed(root, src):
    sys = FakeSyscalls()
    sys.fail_on(MountSetattr, errno=errno.ENOSYS)
    with pytest.raises(MountError, match="recursive mount attributes need Linux 5.12"):
        mount_one(sys, OciMount(destination="/d", source=str(src), options=("rbind", "rro")),
                  _plan(root))


def test_missing_bind_source(root, tmp_path):
    sys = FakeSyscalls()
    with pytest.raises(MountError) as info:
        mount_one(sys, OciMount(destination="/d", source=str(tmp_path / "nope"),
                                options=("bind",)), _plan(root))
    assert "the source does not exist" in str(info.value)
    assert info.value.errno == errno.ENOENT
    assert sys.calls == []


def test_failed_bind_names_source_target_and_flags(root, src):
    sys = FakeSyscalls()
    sys.fail_on(Mount, errno=errno.EACCES)
    with pytest.raises(MountError) as info:
        mount_one(sys, OciMount(destination="/d", source=str(src), options=("bind", "ro")),
                  _plan(root))
    err = info.value
    assert isinstance(err, KernelError)
    assert (err.op, err.source, err.target, err.flags, err.errno) == \
        ("bind mount", str(src), str(root / "d"), "ro", errno.EACCES)
    assert str(err) == f"bind mount {src} on {root}/d (ro): Permission denied"


# -- the remount of a bind mount in a user namespace --------------------------

def test_remount_retry_keeps_locked_flags(root, src, statvfs):
    statvfs.flags = os.ST_NOSUID | os.ST_NODEV | os.ST_RELATIME
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2, errno=errno.EPERM)
    mount_one(sys, OciMount(destination="/data", source=str(src), options=("bind", "ro")),
              _plan(root))
    target = str(root / "data")
    assert statvfs.paths == [target]
    assert sys.calls == [
        Mount(str(src), target, None, MS.BIND, None),
        Mount(None, target, None, REMOUNT | MS.RDONLY, None),               # EPERM
        Mount(None, target, None,
              REMOUNT | MS.RDONLY | MS.NOSUID | MS.NODEV | MS.RELATIME, None),  # retry
    ]


def test_remount_retry_keeps_a_strictatime_lock(root, src, statvfs):
    statvfs.flags = os.ST_NOEXEC             # neither noatime nor relatime: strictatime
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2)
    mount_one(sys, OciMount(destination="/d", source=str(src), options=("bind", "nodev")),
              _plan(root))
    assert sys.calls[-1].flags == REMOUNT | MS.NODEV | MS.NOEXEC | MS.STRICTATIME


def test_remount_retry_when_the_asked_atime_mode_is_the_locked_one(root, src, statvfs):
    statvfs.flags = os.ST_RELATIME | os.ST_NOSUID
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2)
    mount_one(sys, OciMount(destination="/d", source=str(src),
                            options=("bind", "ro", "relatime")), _plan(root))
    assert sys.calls[-1].flags == REMOUNT | MS.RDONLY | MS.RELATIME | MS.NOSUID


def test_locked_ro_with_rw_asked_names_the_mount_and_flag(root, src, statvfs):
    statvfs.flags = os.ST_RDONLY | os.ST_NOSUID
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2, errno=errno.EPERM)
    with pytest.raises(MountError) as info:
        mount_one(sys, OciMount(destination="/data", source=str(src),
                                options=("bind", "rw", "nodev")), _plan(root))
    err = info.value
    assert err.op == "remount" and err.errno == errno.EPERM
    assert err.source == str(src) and err.target == str(root / "data")
    assert str(err) == (f"remount {src} on {root}/data (nodev): Operation not permitted: "
                        f"the source is locked ro and rw was asked for")
    assert len(sys.of(Mount)) == 2           # no retry that would silently keep ro


def test_locked_nosuid_with_suid_asked(root, src, statvfs):
    statvfs.flags = os.ST_NOSUID | os.ST_RELATIME
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2)
    with pytest.raises(MountError, match="the source is locked nosuid"):
        mount_one(sys, OciMount(destination="/d", source=str(src), options=("bind", "suid")),
                  _plan(root))


def test_locked_atime_mode_differs_from_the_asked_one(root, src, statvfs):
    statvfs.flags = os.ST_RELATIME
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2)
    with pytest.raises(MountError, match="atime mode is locked to relatime"):
        mount_one(sys, OciMount(destination="/d", source=str(src),
                                options=("bind", "noatime")), _plan(root))


def test_remount_error_other_than_eperm_is_not_retried(root, src, monkeypatch):
    monkeypatch.setattr(rootfs.os, "statvfs", _no_statvfs)
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2, errno=errno.EINVAL)
    with pytest.raises(MountError) as info:
        mount_one(sys, OciMount(destination="/d", source=str(src), options=("bind", "ro")),
                  _plan(root))
    assert info.value.errno == errno.EINVAL and info.value.flags == "ro"


def test_retry_failure_names_the_flags_it_tried(root, src, statvfs):
    statvfs.flags = os.ST_NODEV | os.ST_RELATIME
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2)
    sys.fail_on(Mount, nth=3, errno=errno.EACCES)
    with pytest.raises(MountError) as info:
        mount_one(sys, OciMount(destination="/d", source=str(src), options=("bind", "ro")),
                  _plan(root))
    assert info.value.flags == "ro,nodev,relatime"


# -- other file systems -------------------------------------------------------

def test_tmpfs_with_data_and_flags(root):
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/dev/shm", type="tmpfs", source="shm",
                            options=("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
              _plan(root))
    assert sys.calls == [Mount("shm", str(root / "dev" / "shm"), "tmpfs",
                               MS.NOSUID | MS.NOEXEC | MS.NODEV, "mode=1777,size=65536k")]


def test_mount_label_goes_into_tmpfs_data(root):
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/tmp", type="tmpfs", source="tmpfs"),
              _plan(root, mount_label="system_u:object_r:container_file_t:s0"))
    assert sys.calls[0].data == 'context="system_u:object_r:container_file_t:s0"'


def test_proc_source_defaults_to_type(root):
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/proc", type="proc"), _plan(root))
    assert sys.calls == [Mount("proc", str(root / "proc"), "proc", 0, None)]


def test_sysfs_in_a_user_namespace_falls_back_to_a_read_only_bind(root, statvfs):
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=1, errno=errno.EPERM)
    mount_one(sys, OciMount(destination="/sys", type="sysfs", source="sysfs",
                            options=("nosuid", "noexec", "nodev", "ro")),
              _plan(root, in_userns=True))
    target = str(root / "sys")
    assert sys.calls == [
        Mount("sysfs", target, "sysfs", MS.NOSUID | MS.NOEXEC | MS.NODEV | MS.RDONLY, None),
        Mount("/sys", target, None, MS.BIND | MS.REC, None),
        Mount(None, target, None,
              REMOUNT | MS.REC | MS.NOSUID | MS.NOEXEC | MS.NODEV | MS.RDONLY, None),
    ]


def test_sysfs_eperm_outside_a_user_namespace_is_an_error(root):
    sys = FakeSyscalls()
    sys.fail_on(Mount, errno=errno.EPERM)
    with pytest.raises(MountError, match=r"mount sysfs \(sysfs\) on .*/sys"):
        mount_one(sys, OciMount(destination="/sys", type="sysfs", source="sysfs"), _plan(root))


def test_idmapped_mounts_are_refused(root, src):
    with pytest.raises(UsageError, match="/d: idmapped mounts are not supported"):
        mount_one(FakeSyscalls(), OciMount(destination="/d", source=str(src),
                                           options=("bind", "idmap")), _plan(root))


def test_mount_destination_symlink_stays_in_the_rootfs(root, tmp_path):
    os.symlink(str(tmp_path / "host"), root / "evil")
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/evil", type="tmpfs", source="tmpfs"), _plan(root))
    assert sys.calls[0].target.startswith(str(root) + "/")
    assert not (tmp_path / "host").exists()


# -- cgroup mounts ------------------------------------------------------------

def test_cgroup_mount_on_a_hybrid_host(root, monkeypatch):
    monkeypatch.setattr(rootfs, "_cgroup_hierarchies", lambda: [
        ("/sys/fs/cgroup/memory", "cgroup"),
        ("/sys/fs/cgroup/cpu,cpuacct", "cgroup"),
        ("/sys/fs/cgroup/unified", "cgroup2"),
    ])
    paths = {"memory": "/sys/fs/cgroup/memory/web", "cpu": "/sys/fs/cgroup/cpu,cpuacct/web",
             "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/web", "": "/sys/fs/cgroup/unified/web"}
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/sys/fs/cgroup", type="cgroup", source="cgroup",
                            options=("nosuid", "noexec", "nodev", "relatime", "ro")),
              _plan(root, cgroup_paths=paths))
    cg = root / "sys" / "fs" / "cgroup"
    ro = MS.NOSUID | MS.NOEXEC | MS.NODEV | MS.RDONLY
    assert sys.calls == [
        Mount("tmpfs", str(cg), "tmpfs", MS.NOSUID | MS.NODEV | MS.NOEXEC, "mode=755"),
        Mount("/sys/fs/cgroup/memory/web", str(cg / "memory"), None, MS.BIND | MS.REC, None),
        Mount(None, str(cg / "memory"), None, REMOUNT | MS.REC | ro, None),
        Mount("/sys/fs/cgroup/cpu,cpuacct/web", str(cg / "cpu,cpuacct"), None,
              MS.BIND | MS.REC, None),
        Mount(None, str(cg / "cpu,cpuacct"), None, REMOUNT | MS.REC | ro, None),
        Mount("/sys/fs/cgroup/unified/web", str(cg / "unified"), None, MS.BIND | MS.REC, None),
        Mount(None, str(cg / "unified"), None, REMOUNT | MS.REC | ro, None),
        Mount(None, str(cg), None, REMOUNT | ro, None),
    ]
    assert os.readlink(cg / "cpu") == "cpu,cpuacct"
    assert os.readlink(cg / "cpuacct") == "cpu,cpuacct"


def test_cgroup_mount_on_a_v2_host(root, monkeypatch):
    monkeypatch.setattr(rootfs, "_cgroup_hierarchies", lambda: [("/sys/fs/cgroup", "cgroup2")])
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/sys/fs/cgroup", type="cgroup2", source="cgroup2",
                            options=("nosuid",)),
              _plan(root, cgroup_paths={"": "/sys/fs/cgroup/system.slice/web"}))
    cg = str(root / "sys" / "fs" / "cgroup")
    assert sys.calls == [
        Mount("/sys/fs/cgroup/system.slice/web", cg, None, MS.BIND | MS.REC, None),
        Mount(None, cg, None, REMOUNT | MS.REC | MS.NOSUID, None),
    ]


def test_cgroup_hierarchies_parse_mountinfo(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n"
        "31 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"
        "32 31 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw\n"
        "35 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct\n")
    assert rootfs._cgroup_hierarchies(str(mountinfo)) == [
        ("/sys/fs/cgroup/unified", "cgroup2"), ("/sys/fs/cgroup/cpu,cpuacct", "cgroup")]


# -- the whole rootfs ---------------------------------------------------------

def test_prepare_rootfs_plan(root, src, monkeypatch):
    monkeypatch.chdir(root.parent)          # pivot_root steps chdir; restore afterwards
    sys = FakeSyscalls()
    order = []
    plan = _plan(root, mounts=(
        OciMount(destination="/proc", type="proc", source="proc"),
        OciMount(destination="/data", type="bind", source=str(src), options=("rbind",)),
    ), devices=(Device(type="c", path="/dev/fuse", major=10, minor=229, file_mode=0o600,
                       uid=0, gid=5),))
    prepare_rootfs(sys, plan, before_pivot=lambda: order.append(len(sys.calls)))
    mounts = [c for c in sys.calls if isinstance(c, Mount)]
    assert mounts[:4] == [
        Mount(None, "/", None, MS.SLAVE | MS.REC, None),
        Mount(str(root), str(root), None, MS.BIND | MS.REC, None),
        Mount("proc", str(root / "proc"), "proc", 0, None),
        Mount(str(src), str(root / "data"), None, MS.BIND | MS.REC, None),
    ]
    nodes = {c.path: c for c in sys.of(Mknod)}
    assert set(nodes) == {str(root / "dev" / n) for n in
                          ("null", "zero", "full", "random", "urandom", "tty", "fuse")}
    assert nodes[str(root / "dev" / "null")].device == os.makedev(1, 3)
    assert nodes[str(root / "dev" / "fuse")].mode & 0o7777 == 0o600
    assert [c for c in sys.calls if type(c).__name__ == "Chown"][0].gid == 5
    assert os.readlink(root / "dev" / "ptmx") == "pts/ptmx"
    assert os.readlink(root / "dev" / "stdin") == "/proc/self/fd/0"
    # Hooks run after every mount and device, right before pivot_root.
    assert order == [sys.calls.index(sys.of(PivotRoot)[0])]
    assert sys.calls[-3:] == [PivotRoot(".", "."), Mount(None, ".", None, MS.SLAVE | MS.REC, None),
                              Umount(".", MNT.DETACH)]


def test_prepare_rootfs_in_a_user_namespace_binds_devices(root, monkeypatch):
    monkeypatch.chdir(root.parent)
    sys = FakeSyscalls()
    prepare_rootfs(sys, _plan(root, in_userns=True))
    binds = [c for c in sys.of(Mount) if c.source == "/dev/null"]
    assert binds == [Mount("/dev/null", str(root / "dev" / "null"), None, MS.BIND, None)]
    assert sys.of(Mknod) == []
    assert (root / "dev" / "null").is_file()


def test_dev_bound_from_the_host_gets_no_devices(root, monkeypatch):
    monkeypatch.chdir(root.parent)
    sys = FakeSyscalls()
    prepare_rootfs(sys, _plan(root, mounts=(
        OciMount(destination="/dev", source="/dev", options=("rbind",)),)))
    assert sys.of(Mknod) == []


def test_prepare_rootfs_shared_propagation_is_restored_after_pivot(root, monkeypatch):
    monkeypatch.chdir(root.parent)
    sys = FakeSyscalls()
    prepare_rootfs(sys, _plan(root, propagation="rshared"))
    assert sys.of(Mount)[0] == Mount(None, "/", None, MS.SLAVE | MS.REC, None)
    assert sys.calls[-1] == Mount(None, "/", None, MS.SHARED | MS.REC, None)


def test_prepare_rootfs_private_propagation(root, monkeypatch):
    monkeypatch.chdir(root.parent)
    sys = FakeSyscalls()
    prepare_rootfs(sys, _plan(root, propagation="private"))
    assert sys.of(Mount)[0] == Mount(None, "/", None, MS.PRIVATE, None)


def test_prepare_rootfs_bad_propagation(root):
    with pytest.raises(UsageError, match="invalid rootfsPropagation 'sideways'"):
        prepare_rootfs(FakeSyscalls(), _plan(root, propagation="sideways"))


def test_pivot_root_failure_suggests_no_pivot(root, monkeypatch):
    monkeypatch.chdir(root.parent)
    sys = FakeSyscalls()
    sys.fail_on(PivotRoot, errno=errno.EINVAL)
    with pytest.raises(MountError, match="use --no-pivot"):
        prepare_rootfs(sys, _plan(root))


def test_no_pivot_moves_and_chroots(root, monkeypatch):
    monkeypatch.chdir(root.parent)
    chroots = []
    monkeypatch.setattr(rootfs.os, "chroot", chroots.append)   # never chroot the test run
    sys = FakeSyscalls()
    prepare_rootfs(sys, _plan(root, no_pivot=True))
    assert sys.of(PivotRoot) == []
    assert sys.of(Mount)[-1] == Mount(str(root), "/", None, MS.MOVE, None)
    assert chroots == ["."]


# -- after pivot_root ---------------------------------------------------------

def test_finalize_rootfs_plan(tmp_path, statvfs):
    statvfs.flags = os.ST_NOSUID | os.ST_RELATIME
    ro_dir = tmp_path / "proc-sys"
    ro_dir.mkdir()
    masked_dir = tmp_path / "acpi"
    masked_dir.mkdir()
    masked_file = tmp_path / "kcore"
    masked_file.write_text("")
    missing = str(tmp_path / "missing")
    plan = _plan(tmp_path, readonly=True, readonly_paths=(str(ro_dir), missing),
                 masked_paths=(str(masked_dir), str(masked_file), missing))
    sys = FakeSyscalls()
    finalize_rootfs(sys, plan)
    kept = MS.NOSUID | MS.RELATIME
    assert sys.calls == [
        Mount(str(ro_dir), str(ro_dir), None, MS.BIND | MS.REC, None),
        Mount(None, str(ro_dir), None, REMOUNT | MS.RDONLY | kept | MS.REC, None),
        Mount(str(missing), missing, None, MS.BIND | MS.REC, None),       # ENOENT: skipped
        Mount("tmpfs", str(masked_dir), "tmpfs", MS.RDONLY, None),
        Mount("/dev/null", str(masked_file), None, MS.BIND, None),
        Mount(None, "/", None, REMOUNT | MS.RDONLY | kept, None),
    ]


def test_finalize_rootfs_readonly_path_error(tmp_path, statvfs):
    sys = FakeSyscalls()
    sys.fail_on(Mount, errno=errno.EACCES)
    with pytest.raises(MountError, match=r"readonly path .* \(ro\): Permission denied"):
        finalize_rootfs(sys, _plan(tmp_path, readonly_paths=(str(tmp_path),)))
