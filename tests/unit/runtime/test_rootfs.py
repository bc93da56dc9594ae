"""The plan of mount(2) calls that prepares a rootfs, checked on FakeSyscalls.

Nothing here mounts: FakeSyscalls records. ``os.statvfs`` (what the remount
of a bind mount reads to learn the flags the kernel locked, and reads back
to check the result) is modelled by the ``kernel`` fixture.
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
from migrate.testing import (FakeSyscalls, Mknod, MoveMount, Mount, MountSetattr, PivotRoot,
                             Umount)

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


_ST_OF_MS = ((MS.RDONLY, os.ST_RDONLY), (MS.NOSUID, os.ST_NOSUID), (MS.NODEV, os.ST_NODEV),
             (MS.NOEXEC, os.ST_NOEXEC), (MS.NOATIME, os.ST_NOATIME),
             (MS.NODIRATIME, os.ST_NODIRATIME), (MS.RELATIME, os.ST_RELATIME))
_ST_ATIME = os.ST_NOATIME | os.ST_NODIRATIME | os.ST_RELATIME


class Kernel(FakeSyscalls):
    """FakeSyscalls plus what ``os.statvfs`` reports: ``st`` (ST_* flags) for
    any path, ``st_at`` per path, ``sb`` always added (the superblock). A bind
    remount that succeeds changes what a path reports, as in the kernel (no
    atime flag keeps the atime group)."""

    def __init__(self):
        super().__init__()
        self.st = os.ST_RELATIME
        self.st_at: dict[str, int] = {}
        self.sb = 0
        self.statvfs_paths: list[str] = []

    def mount(self, source, target, fstype, flags, data):
        super().mount(source, target, fstype, flags, data)
        if flags & MS.REMOUNT and flags & MS.BIND:
            old = self.st_at.get(target, self.st)
            new = sum(st for ms, st in _ST_OF_MS if flags & ms)
            if not flags & (MS.NOATIME | MS.RELATIME | MS.STRICTATIME | MS.NODIRATIME):
                new |= old & _ST_ATIME
            self.st_at[target] = new

    def statvfs(self, path):
        self.statvfs_paths.append(str(path))
        return types.SimpleNamespace(f_flag=self.st_at.get(str(path), self.st) | self.sb)


@pytest.fixture
def kernel(monkeypatch):
    k = Kernel()
    monkeypatch.setattr(rootfs.os, "statvfs", k.statvfs)
    return k


@pytest.fixture
def statvfs(kernel):
    """For the tests after pivot_root: ``flags`` is what every path reports."""
    class _State:
        @property
        def flags(self):
            return kernel.st

        @flags.setter
        def flags(self, value):
            kernel.st = value

        @property
        def paths(self):
            return kernel.statvfs_paths

    return _State()


# -- bind mounts --------------------------------------------------------------

def test_bind_mount_with_flags_is_bind_then_remount(root, src, kernel):
    m = OciMount(destination="/data", type="bind", source=str(src),
                 options=("bind", "ro", "nosuid", "nodev"))
    mount_one(kernel, m, _plan(root))
    target = str(root / "data")
    assert os.path.isdir(target)
    assert kernel.calls == [
        Mount(str(src), target, None, MS.BIND, None),
        Mount(None, target, None, REMOUNT | MS.RDONLY | MS.NOSUID | MS.NODEV, None),
    ]
    assert kernel.statvfs_paths == [target, target]      # before, and read back after


def test_rbind_remounts_only_the_top_mount(root, src, kernel, monkeypatch):
    # runc: "rbind,ro" is read-only but not recursively ("rro" is).
    target = str(root / "data")
    monkeypatch.setattr(rootfs, "_submounts", lambda path: [f"{path}/a", f"{path}/a/b"])
    kernel.check_paths = False               # the submounts exist only in the model
    mount_one(kernel, OciMount(destination="/data", source=str(src),
                               options=("rbind", "ro", "nosuid")), _plan(root))
    assert kernel.calls == [
        Mount(str(src), target, None, MS.BIND | MS.REC, None),
        Mount(None, target, None, REMOUNT | MS.RDONLY | MS.NOSUID, None),
    ]


def test_plain_bind_needs_no_remount(root, src, kernel):
    mount_one(kernel, OciMount(destination="/data", source=str(src), options=("bind",)),
              _plan(root))
    assert kernel.calls == [Mount(str(src), str(root / "data"), None, MS.BIND, None)]
    assert kernel.statvfs_paths == []


def test_bind_of_a_file_creates_a_file_mountpoint(root, src, kernel):
    mount_one(kernel, OciMount(destination="/etc/hostname", type="bind",
                               source=str(src / "file"), options=("ro",)), _plan(root))
    target = root / "etc" / "hostname"
    assert target.is_file()
    assert [c.flags for c in kernel.calls] == [MS.BIND, REMOUNT | MS.RDONLY]


def test_relative_bind_source_is_from_the_bundle(root, src, monkeypatch):
    monkeypatch.chdir(src.parent)
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/d", source="src", options=("bind",)), _plan(root))
    assert sys.calls[0].source == str(src)


def test_bind_with_propagation_and_recursive_attributes(root, src, kernel, monkeypatch):
    monkeypatch.setattr(rootfs, "_submounts", lambda path: [])
    m = OciMount(destination="/data", source=str(src), options=("rbind", "rprivate", "rro"))
    mount_one(kernel, m, _plan(root))
    target = str(root / "data")
    assert kernel.calls == [
        Mount(str(src), target, None, MS.BIND | MS.REC, None),
        Mount(None, target, None, MS.PRIVATE | MS.REC, None),
        MountSetattr(target, 0x1, 0, 0, True, 0),
    ]


def test_recursive_attributes_failure_says_what_is_needed(root, src):
    sys = FakeSyscalls()
    sys.fail_on(MountSetattr, errno=errno.ENOSYS)
    with pytest.raises(MountError, match=r"/d \(rro\): .*recursive mount attributes need "
                                         r"Linux 5.12"):
        mount_one(sys, OciMount(destination="/d", source=str(src), options=("rbind", "rro")),
                  _plan(root))


def test_recursive_attributes_on_a_locked_tree_name_the_word(root, src, kernel, monkeypatch):
    target = str(root / "d")
    monkeypatch.setattr(rootfs, "_submounts", lambda path: [f"{path}/sub"])
    kernel.st_at[f"{target}/sub"] = os.ST_RDONLY | os.ST_NOATIME
    kernel.fail_on(MountSetattr, errno=errno.EPERM)
    with pytest.raises(MountError) as info:
        mount_one(kernel, OciMount(destination="/d", source=str(src),
                                   options=("rbind", "rrw", "rnosuid")), _plan(root))
    assert str(info.value) == (f"mount_setattr {src} on /d (rrw,rnosuid): Operation not "
                               f"permitted: the source is locked ro in this user namespace and "
                               f"rrw was asked for")


def test_recursive_rw_on_a_read_only_file_system_fails(root, src, kernel, monkeypatch):
    monkeypatch.setattr(rootfs, "_submounts", lambda path: [])
    kernel.sb = os.ST_RDONLY                # the superblock: no mount flag clears it
    with pytest.raises(MountError) as info:
        mount_one(kernel, OciMount(destination="/d", source=str(src), options=("rbind", "rrw")),
                  _plan(root))
    assert info.value.errno == errno.EROFS
    assert "the source file system is ro and rrw was asked for" in str(info.value)


def test_missing_bind_source(root, tmp_path):
    sys = FakeSyscalls()
    with pytest.raises(MountError) as info:
        mount_one(sys, OciMount(destination="/d", source=str(tmp_path / "nope"),
                                options=("bind",)), _plan(root))
    assert "the source does not exist" in str(info.value)
    assert info.value.errno == errno.ENOENT
    assert sys.calls == []


def test_failed_bind_names_source_destination_and_flags(root, src):
    sys = FakeSyscalls()
    sys.fail_on(Mount, errno=errno.EACCES)
    with pytest.raises(MountError) as info:
        mount_one(sys, OciMount(destination="/d", source=str(src), options=("bind", "ro")),
                  _plan(root))
    err = info.value
    assert isinstance(err, KernelError)
    assert (err.op, err.source, err.target, err.flags, err.errno) == \
        ("bind mount", str(src), "/d", "ro", errno.EACCES)
    assert str(err) == f"bind mount {src} on /d (ro): Permission denied"


def test_rw_asked_on_a_read_only_file_system_fails_loudly(root, src, kernel):
    # As root the remount succeeds, but a read-only superblock keeps the
    # bind read-only: statvfs says so and the mount fails instead.
    kernel.sb = os.ST_RDONLY
    with pytest.raises(MountError) as info:
        mount_one(kernel, OciMount(destination="/data", source=str(src),
                                   options=("bind", "rw", "nosuid")), _plan(root))
    assert str(info.value) == (f"remount {src} on /data (rw): Read-only file system: the source "
                               f"file system is ro and rw was asked for")


def test_unmentioned_flags_of_the_file_system_are_fine(root, src, kernel):
    kernel.sb = os.ST_RDONLY
    mount_one(kernel, OciMount(destination="/data", source=str(src), options=("bind", "nosuid")),
              _plan(root))


def test_superblock_flags_are_checked_on_binds(root, src, kernel, monkeypatch):
    sb = {}
    monkeypatch.setattr(rootfs, "_sb_flags", lambda path: sb.get(path, 0))
    with pytest.raises(MountError, match=r"/d \(dirsync\): Invalid argument: the source file "
                                         r"system is nodirsync and dirsync was asked for"):
        mount_one(kernel, OciMount(destination="/d", source=str(src), options=("bind", "dirsync")),
                  _plan(root))
    sb[str(root / "e")] = MS.DIRSYNC
    mount_one(kernel, OciMount(destination="/e", source=str(src), options=("bind", "dirsync")),
              _plan(root))


# -- the remount of a bind mount in a user namespace --------------------------

def test_remount_retry_keeps_locked_flags(root, src, kernel):
    kernel.st = os.ST_NOSUID | os.ST_NODEV | os.ST_RELATIME
    kernel.fail_on(Mount, nth=2, errno=errno.EPERM)
    mount_one(kernel, OciMount(destination="/data", source=str(src), options=("bind", "ro")),
              _plan(root))
    target = str(root / "data")
    assert kernel.calls == [
        Mount(str(src), target, None, MS.BIND, None),
        Mount(None, target, None, REMOUNT | MS.RDONLY, None),               # EPERM
        Mount(None, target, None, REMOUNT | MS.RDONLY | MS.NOSUID | MS.NODEV, None),  # retry
    ]


def test_remount_retry_keeps_a_strictatime_lock(root, src, kernel):
    kernel.st = os.ST_NOEXEC                 # neither noatime nor relatime: strictatime
    kernel.fail_on(Mount, nth=2)
    mount_one(kernel, OciMount(destination="/d", source=str(src),
                               options=("bind", "nodev", "atime")), _plan(root))
    assert [c.flags for c in kernel.calls[1:]] == [
        REMOUNT | MS.NODEV | MS.RELATIME,    # "atime": the kernel default, relatime
        REMOUNT | MS.NODEV | MS.NOEXEC | MS.STRICTATIME,   # strictatime is not noatime: fine
    ]


def test_remount_retry_when_the_asked_atime_mode_is_the_locked_one(root, src, kernel):
    kernel.st = os.ST_RELATIME | os.ST_NOSUID
    kernel.fail_on(Mount, nth=2)
    mount_one(kernel, OciMount(destination="/d", source=str(src),
                               options=("bind", "ro", "relatime")), _plan(root))
    assert kernel.calls[-1].flags == REMOUNT | MS.RDONLY | MS.RELATIME | MS.NOSUID


@pytest.mark.parametrize("st,words,detail", [
    (os.ST_RDONLY | os.ST_NOSUID, ("rw", "nodev"), "locked ro in this user namespace and rw"),
    (os.ST_NOSUID | os.ST_RELATIME, ("suid",), "locked nosuid in this user namespace and suid"),
    (os.ST_NODEV, ("dev", "ro"), "locked nodev in this user namespace and dev"),
    (os.ST_NOEXEC, ("exec",), "locked noexec in this user namespace and exec"),
    (os.ST_RELATIME, ("noatime",), "locked relatime in this user namespace and noatime"),
    (os.ST_NOATIME, ("strictatime",), "locked noatime in this user namespace and strictatime"),
    (os.ST_NOATIME, ("atime",), "locked noatime in this user namespace and atime"),
    (os.ST_RELATIME, ("nodiratime",), "locked diratime in this user namespace and nodiratime"),
])
def test_locked_flag_asked_otherwise_names_mount_and_flag(root, src, kernel, st, words, detail):
    kernel.st = st
    kernel.fail_on(Mount, nth=2, errno=errno.EPERM)
    with pytest.raises(MountError) as info:
        mount_one(kernel, OciMount(destination="/data", source=str(src),
                                   options=("bind",) + words), _plan(root))
    err = info.value
    assert err.op == "remount" and err.errno == errno.EPERM
    assert err.source == str(src) and err.target == "/data"
    assert str(err).startswith(f"remount {src} on /data ({err.flags}): Operation not permitted: "
                               f"the source is {detail} was asked for")
    assert len(kernel.of(Mount)) == 2        # no retry that would silently keep the flag


def test_locked_ro_with_rw_asked_exact_message(root, src, kernel):
    kernel.st = os.ST_RDONLY | os.ST_NOSUID
    kernel.fail_on(Mount, nth=2, errno=errno.EPERM)
    with pytest.raises(MountError) as info:
        mount_one(kernel, OciMount(destination="/data", source=str(src),
                                   options=("bind", "rw", "nodev")), _plan(root))
    assert str(info.value) == (f"remount {src} on /data (rw): Operation not permitted: the "
                               f"source is locked ro in this user namespace and rw was asked for")


def test_eperm_that_no_lock_explains_is_not_retried(root, src, kernel):
    kernel.st = os.ST_NOSUID
    kernel.fail_on(Mount, nth=2, errno=errno.EPERM)
    with pytest.raises(MountError) as info:
        mount_one(kernel, OciMount(destination="/d", source=str(src),
                                   options=("bind", "nosuid", "ro")), _plan(root))
    assert info.value.errno == errno.EPERM and len(kernel.of(Mount)) == 2


def test_remount_error_other_than_eperm_is_not_retried(root, src, kernel):
    kernel.fail_on(Mount, nth=2, errno=errno.EINVAL)
    with pytest.raises(MountError) as info:
        mount_one(kernel, OciMount(destination="/d", source=str(src), options=("bind", "ro")),
                  _plan(root))
    assert info.value.errno == errno.EINVAL and info.value.flags == "ro"


def test_retry_failure_names_the_flags_it_tried(root, src, kernel):
    kernel.st = os.ST_NODEV | os.ST_RELATIME
    kernel.fail_on(Mount, nth=2)
    kernel.fail_on(Mount, nth=3, errno=errno.EACCES)
    with pytest.raises(MountError) as info:
        mount_one(kernel, OciMount(destination="/d", source=str(src),
                                   options=("bind", "ro", "relatime")), _plan(root))
    assert info.value.flags == "ro,nodev,relatime"
    assert "after keeping the locked nodev,relatime" in str(info.value)


# -- idmapped mounts ------------------------------------------------------------

def test_idmapped_bind_attaches_the_prepared_tree(root, src, kernel):
    mount_one(kernel, OciMount(destination="/d", source=str(src),
                               options=("bind", "idmap", "nosuid")), _plan(root), tree_fd=1234)
    target = str(root / "d")
    assert kernel.calls == [MoveMount(1234, target),
                            Mount(None, target, None, REMOUNT | MS.NOSUID, None)]


def test_idmapped_bind_in_a_user_namespace_keeps_the_source_flags(root, src, kernel):
    # The kernel locks nothing on a tree the runtime attached, so the rule is
    # applied here: the same flags as a plain bind would get.
    kernel.st = os.ST_RDONLY | os.ST_NODEV | os.ST_NOATIME
    mount_one(kernel, OciMount(destination="/d", source=str(src),
                               options=("bind", "idmap", "nosuid")),
              _plan(root, in_userns=True), tree_fd=7)
    assert kernel.calls[1:] == [Mount(None, str(root / "d"), None,
                                      REMOUNT | MS.NOSUID | MS.RDONLY | MS.NODEV, None)]
    kernel.clear()
    with pytest.raises(MountError, match="/e .*locked ro in this user namespace and rw"):
        mount_one(kernel, OciMount(destination="/e", source=str(src),
                                   options=("bind", "idmap", "rw")),
                  _plan(root, in_userns=True), tree_fd=8)
    assert kernel.calls == [MoveMount(8, str(root / "e"))]


def test_idmap_needs_a_prepared_tree_and_a_bind(root, src):
    with pytest.raises(UsageError, match="mount /d: the idmapped mount was not prepared"):
        mount_one(FakeSyscalls(), OciMount(destination="/d", source=str(src),
                                           options=("bind", "idmap")), _plan(root))
    with pytest.raises(UsageError, match="mount /t: idmap and ridmap need a bind mount"):
        mount_one(FakeSyscalls(), OciMount(destination="/t", type="tmpfs", source="tmpfs",
                                           options=("idmap",)), _plan(root))


def test_prepare_rootfs_gives_each_idmapped_mount_its_tree(root, src, monkeypatch):
    monkeypatch.chdir(root.parent)
    sys = FakeSyscalls()
    plan = _plan(root, mounts=(
        OciMount(destination="/a", source=str(src), options=("bind",)),
        OciMount(destination="/b", source=str(src), options=("bind", "idmap")),
    ), idmapped=((1, 55),))
    prepare_rootfs(sys, plan)
    assert sys.of(MoveMount) == [MoveMount(55, str(root / "b"))]


# -- other file systems -------------------------------------------------------

def test_tmpfs_with_data_and_flags(root):
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/dev/shm", type="tmpfs", source="shm",
                            options=("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
              _plan(root))
    assert sys.calls == [Mount("shm", str(root / "dev" / "shm"), "tmpfs",
                               MS.NOSUID | MS.NOEXEC | MS.NODEV, "mode=1777,size=65536k")]


@pytest.mark.parametrize("ro", [False, True])
def test_tmpfs_copy_up_is_filled_writable_then_made_read_only(root, monkeypatch, ro):
    from migrate.runtime import copyup

    copied = []
    monkeypatch.setattr(copyup, "copy_tree",
                        lambda src, dst, top_attributes: copied.append(
                            (os.readlink(f"/proc/self/fd/{src}"),
                             os.readlink(f"/proc/self/fd/{dst}"), top_attributes)))
    (root / "run").mkdir()
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/run", type="tmpfs", source="tmpfs",
                            options=("nosuid", "tmpcopyup", "size=1m") + (("ro",) if ro else ())),
              _plan(root))
    target = str(root / "run")
    assert sys.calls[0] == Mount("tmpfs", target, "tmpfs", MS.NOSUID, "size=1m")
    assert sys.calls[1:] == ([Mount(None, target, None, MS.REMOUNT | MS.NOSUID | MS.RDONLY,
                                    "size=1m")] if ro else [])
    assert copied == [(target, target, True)]   # the fd of what was below, and the new tmpfs


@pytest.mark.parametrize("options,in_image,keep", [
    (("tmpcopyup",), True, True),
    (("tmpcopyup", "mode=1770"), True, False),      # the options decide
    (("tmpcopyup", "uid=5"), True, False),
    (("tmpcopyup",), False, False),                 # made by us: tmpfs's own default
])
def test_tmpfs_copy_up_takes_the_mode_of_the_image_directory(root, monkeypatch, options,
                                                              in_image, keep):
    from migrate.runtime import copyup

    seen = []
    monkeypatch.setattr(copyup, "copy_tree", lambda src, dst, top_attributes: seen.append(
        top_attributes))
    if in_image:
        (root / "scratch").mkdir()
    mount_one(FakeSyscalls(), OciMount(destination="/scratch", type="tmpfs", source="tmpfs",
                                       options=options), _plan(root))
    assert seen == [keep]


def test_mount_label_goes_into_tmpfs_data(root):
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/tmp", type="tmpfs", source="tmpfs"),
              _plan(root, mount_label="system_u:object_r:container_file_t:s0"))
    assert sys.calls[0].data == 'context="system_u:object_r:container_file_t:s0"'


def test_proc_source_defaults_to_type(root):
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/proc", type="proc"), _plan(root))
    assert sys.calls == [Mount("proc", str(root / "proc"), "proc", 0, None)]


def test_sysfs_in_a_user_namespace_falls_back_to_a_read_only_bind(root, kernel, monkeypatch):
    target = str(root / "sys")
    monkeypatch.setattr(rootfs, "_submounts", lambda path: [f"{path}/fs/cgroup"])
    kernel.check_paths = False
    kernel.fail_on(Mount, nth=1, errno=errno.EPERM)
    mount_one(kernel, OciMount(destination="/sys", type="sysfs", source="sysfs",
                               options=("nosuid", "noexec", "nodev", "ro")),
              _plan(root, in_userns=True))
    ro = REMOUNT | MS.NOSUID | MS.NOEXEC | MS.NODEV | MS.RDONLY
    assert kernel.calls == [
        Mount("sysfs", target, "sysfs", MS.NOSUID | MS.NOEXEC | MS.NODEV | MS.RDONLY, None),
        Mount("/sys", target, None, MS.BIND | MS.REC, None),
        Mount(None, target, None, ro, None),
        Mount(None, f"{target}/fs/cgroup", None, ro, None),    # read-only all the way down
    ]


def test_sysfs_eperm_outside_a_user_namespace_is_an_error(root):
    sys = FakeSyscalls()
    sys.fail_on(Mount, errno=errno.EPERM)
    with pytest.raises(MountError, match=r"mount sysfs \(sysfs\) on /sys"):
        mount_one(sys, OciMount(destination="/sys", type="sysfs", source="sysfs"), _plan(root))


def test_norelatime_on_a_new_mount_is_strictatime(root):
    sys = FakeSyscalls()
    mount_one(sys, OciMount(destination="/t", type="tmpfs", source="tmpfs",
                            options=("norelatime", "nosuid")), _plan(root))
    assert sys.calls[0].flags == MS.NOSUID | MS.STRICTATIME


def test_new_mount_errors_name_the_destination(root):
    sys = FakeSyscalls()
    sys.fail_on(Mount, errno=errno.EINVAL)
    with pytest.raises(MountError, match=r"^mount tmpfs \(tmpfs\) on /t \(nosuid\)"):
        mount_one(sys, OciMount(destination="/t", type="tmpfs", source="tmpfs",
                                options=("nosuid",)), _plan(root))


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
        # no unified hierarchy beside v1 ones, as runc
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
    info = root.parent / "mountinfo"
    info.write_text(f"22 1 0:5 / /proc rw - proc proc rw\n"
                    f"23 1 0:6 / /sys rw - sysfs sysfs rw\n"
                    f"24 23 0:7 /sub /sys/x rw - sysfs sysfs rw\n"
                    f"25 1 0:8 / {root}/proc rw - proc proc rw\n")
    monkeypatch.setattr(rootfs, "MOUNTINFO", str(info))
    sys = FakeSyscalls()
    prepare_rootfs(sys, _plan(root, no_pivot=True))
    assert sys.of(PivotRoot) == []
    mounts = sys.of(Mount)
    assert mounts[-1] == Mount(str(root), "/", None, MS.MOVE, None)
    # The host's whole procfs and sysfs are gone before the move (not the
    # container's, not a partial one), so a user namespace cannot mount a
    # fresh procfs inside the chroot.
    assert Mount(None, "/proc", None, MS.SLAVE | MS.REC, None) in mounts
    assert [u.target for u in sys.of(Umount)] == ["/proc", "/sys"]
    assert chroots == ["."]


def test_host_pseudo_fs_outside_the_rootfs():
    text = ("22 1 0:5 / /proc rw - proc proc rw\n"
            "23 1 0:6 / /sys rw - sysfs sysfs rw\n"
            "24 23 0:7 /sub /sys/x rw - sysfs sysfs rw\n"
            "25 1 0:8 / /r/proc rw - proc proc rw\n"
            "26 1 0:9 / /tmp rw - tmpfs tmpfs rw\n")
    assert rootfs.host_pseudo_fs(text, "/r") == ["/proc", "/sys"]


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


def test_bind_sources_are_the_plain_binds_with_absolute_paths(root):
    mounts = (OciMount(destination="/proc", type="proc"),
              OciMount(destination="/a", source="rel/dir", options=("bind",)),
              OciMount(destination="/b", type="bind", source="/abs"),
              OciMount(destination="/c", source="/idm", options=("bind", "idmap")),
              OciMount(destination="/sys/fs/cgroup", type="cgroup", source="cgroup"))
    from migrate.runtime.rootfs import bind_sources

    assert bind_sources(_plan(root, mounts), "/bundle") == ((1, "/bundle/rel/dir"), (2, "/abs"))


def test_a_source_fd_from_the_runtime_is_mounted_through_proc(root, src, kernel):
    fd = os.open(src, os.O_PATH)
    try:
        mount_one(kernel, OciMount(destination="/data", source="/unreachable/for/the/init",
                                   options=("bind",)), _plan(root), source_fd=fd)
    finally:
        os.close(fd)
    assert kernel.calls == [Mount(f"/proc/self/fd/{fd}", str(root / "data"), None, MS.BIND,
                                  None)]
