"""Dump plans from a fake /proc: CRIU's values, external keys runc shares (no CRIU)."""

import os
import stat

import pytest

from migrate import oci
from migrate.checkpoint.dump import image_key, plan_dump
from migrate.checkpoint.externals import ExternalMount
from migrate.checkpoint.options import (CRIU_CONFIG_DEFAULT, CheckpointOptions, RestoreOptions,
                                        criu_config_file)
from migrate.checkpoint.restore_plan import plan_restore
from migrate.checkpoint.metadata import CheckpointMeta
from migrate.criu_rpc import CgroupMode, NetworkLock
from migrate.runtime.state import ContainerState

PID = 4242


class _Container:
    """What plan_dump reads of a container: its state and its cgroups."""

    def __init__(self, state):
        self.state = state
        self.cgroups = None


@pytest.fixture
def proc(tmp_path):
    """A /proc with one init: mountinfo, stdio fds (/dev/null, a pipe) and root."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "real" / "conf").mkdir(parents=True)
    os.symlink("/real/conf", rootfs / "conf")
    p = tmp_path / "proc" / str(PID)
    (p / "fd").mkdir(parents=True)
    (p / "fdinfo").mkdir()
    os.symlink(str(rootfs), p / "root")
    (p / "mountinfo").write_text(
        f"100 90 254:0 {rootfs} / rw - ext4 /dev/vda rw\n"
        "101 100 0:41 / /proc rw - proc proc rw\n"
        "102 100 254:0 /src /real/conf rw - ext4 /dev/vda rw\n"
        "103 100 0:29 /x/c1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
        "104 101 0:5 /null /proc/kcore rw - devtmpfs udev rw\n")
    os.symlink("/dev/null", p / "fd" / "0")
    os.symlink("/dev/null", p / "fd" / "1")
    os.symlink("/dev/null", p / "fd" / "2")
    for n in range(3):
        (p / "fdinfo" / str(n)).write_text("pos:\t0\nflags:\t02\nmnt_id:\t24\n")
    return tmp_path


def _spec(tmp_path, annotations=None):
    data = oci.default_spec()
    data["mounts"].append({"destination": "/conf", "type": "bind", "source": "/src",
                           "options": ["bind"]})
    if annotations is not None:
        data["annotations"] = annotations
    return oci.parse_config(data, bundle=str(tmp_path))


def _plan(tmp_path, opts, annotations=None, stdio=(), **kw):
    state = ContainerState(id="c1", bundle=str(tmp_path), rootfs=str(tmp_path / "rootfs"),
                           pid=PID, stdio=list(stdio))
    return plan_dump(_Container(state), _spec(tmp_path, annotations), opts,
                     images_dir="/img", work_dir="/work", proc_root=str(tmp_path / "proc"), **kw)


def test_dump_plan_carries_criu_values(proc):
    criu, _meta = _plan(proc, CheckpointOptions(
        id="c1", manage_cgroups_mode=CgroupMode.SOFT, network_lock=NetworkLock.NFTABLES,
        empty_ns=frozenset({"net"})))
    assert criu.manage_cgroups_mode is CgroupMode.SOFT
    assert criu.network_lock is NetworkLock.NFTABLES
    assert criu.empty_ns == frozenset({"net"})
    from migrate.criu_rpc import to_criu_opts
    from pycriu import rpc_pb2 as rpc

    msg = rpc.criu_opts.FromString(to_criu_opts(criu).encode())
    assert msg.manage_cgroups_mode == rpc.SOFT and msg.network_lock == rpc.NFTABLES
    assert msg.empty_ns == 0x40000000


def _plain_plan(tmp_path, why, **kw):
    """A plan whose netns check (netns.why_netns_not_plain) answered ``why``."""
    return _plan(tmp_path, CheckpointOptions(id="c1", skip_plain_netns=True, **kw),
                 netns_check=lambda: why)


def test_a_plain_netns_is_dumped_empty_and_not_locked(proc):
    """Only lo and no TCP connection to dump: nothing for the network lock
    (iptables-restore while frozen) to guard, so CRIU skips it."""
    criu, meta = _plain_plan(proc, None)
    assert criu.empty_ns == frozenset({"net"}) and meta.empty_ns == ("net",)
    assert criu.network_lock is NetworkLock.SKIP


@pytest.mark.parametrize("why, kw, lock", [
    (None, {"tcp_established": True}, None),                # connections to keep quiet
    (None, {"network_lock": NetworkLock.NFTABLES}, NetworkLock.NFTABLES),   # asked for
    ("it has devices besides lo (eth0)", {}, None),        # peers outside the container
])
def test_the_network_lock_stays_where_it_guards_something(proc, why, kw, lock):
    criu, _meta = _plain_plan(proc, why, **kw)
    assert criu.network_lock is lock
    assert ("net" in criu.empty_ns) == (why is None)


def test_dump_plan_keys_mounts_like_runc(proc):
    criu, meta = _plan(proc, CheckpointOptions(id="c1"))
    # a bind whose destination is a symlink is found where it really is
    assert {m.mountpoint: m.kind for m in meta.mounts} == {
        "/real/conf": "bind", "/sys/fs/cgroup/memory": "cgroup", "/proc/kcore": "mask"}
    assert {(e.key, e.val) for e in criu.ext_mnt} == {
        ("/real/conf", "/real/conf"), ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory"),
        ("/proc/kcore", "/dev/null")}
    # /dev/null stdio is reopened by path, not inherited (runc maps only pipes)
    assert not criu.external
    assert [d.external for d in meta.descriptors] == [None, None, None]
    assert all(stat.S_ISCHR(d.mode) for d in meta.descriptors)


def _move_stdout(proc, tmp_path):
    """The init has put its stdout (a host file, mount 27) on fd 10 and a
    file of its root mount (100) on fd 1, as busybox sh does around `cat > x`."""
    p = proc / "proc" / str(PID)
    host = tmp_path / "host-out"
    host.write_text("")
    seen = proc / "rootfs" / "seen"
    seen.write_text("")
    os.unlink(p / "fd" / "1")
    os.symlink(str(seen), p / "fd" / "1")
    (p / "fdinfo" / "1").write_text("pos:\t0\nflags:\t0101\nmnt_id:\t100\n")
    os.symlink(str(host), p / "fd" / "10")
    (p / "fdinfo" / "10").write_text("pos:\t0\nflags:\t02001\nmnt_id:\t27\n")
    return host


def test_dump_plan_declares_the_recorded_stdio_wherever_it_moved(proc, tmp_path_factory):
    host = _move_stdout(proc, tmp_path_factory.mktemp("host"))
    ino = os.stat(host).st_ino
    recorded = [{"fd": 0, "path": "/dev/null", "mnt_id": 24, "inode": 5, "mode": 0o20666},
                {"fd": 1, "path": str(host), "mnt_id": 27, "inode": ino, "mode": 0o100644},
                {"fd": 2, "path": str(host), "mnt_id": 27, "inode": ino, "mode": 0o100644}]
    criu, meta = _plan(proc, CheckpointOptions(id="c1"), stdio=recorded)
    key = f"file[1b:{ino:x}]"
    assert criu.external == (key,)                  # once, though on two fds
    assert [(d.fd, d.external) for d in meta.descriptors] == [(0, None), (1, key), (2, key)]
    # fd 1 now (a file on the container's root mount) is CRIU's to dump
    assert all(d.path != str(proc / "rootfs" / "seen") for d in meta.descriptors)


def test_dump_plan_without_a_record_reads_fds_0_to_2(proc, tmp_path_factory):
    """A container created before the record: today's fds 0-2, and the
    file on the container's own mount is not taken for the runtime's."""
    _move_stdout(proc, tmp_path_factory.mktemp("host"))
    criu, meta = _plan(proc, CheckpointOptions(id="c1"))
    assert not criu.external
    assert [d.external for d in meta.descriptors] == [None, None, None]


def test_criu_config_file_like_runc(proc):
    assert criu_config_file({}) == CRIU_CONFIG_DEFAULT == "/etc/criu/runc.conf"
    assert criu_config_file({"org.criu.config": "/x.conf"}) == "/x.conf"
    assert criu_config_file({"org.criu.config": ""}) is None
    criu, _ = _plan(proc, CheckpointOptions(id="c1"), {"org.criu.config": "/tmp/c.conf"})
    assert criu.config_file == "/tmp/c.conf"
    criu, _ = _plan(proc, CheckpointOptions(id="c1"))
    assert criu.config_file == "/etc/criu/runc.conf"


def test_image_key():
    assert image_key(ExternalMount(mountpoint="/proc/kcore", kind="mask")) == "/dev/null"
    assert image_key(ExternalMount(mountpoint="/data", kind="bind")) == "/data"


CGROUPS = {"memory": "/sys/fs/cgroup/memory/m/new", "cpu": "/sys/fs/cgroup/cpu,cpuacct/m/new",
           "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/m/new",
           "name=systemd": "/sys/fs/cgroup/systemd/m/new"}


def _restore_plan(tmp_path, meta, **kw):
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    data = oci.default_spec(cgroup_namespace=False)
    data["mounts"].append({"destination": "/conf", "type": "bind", "source": str(tmp_path),
                           "options": ["bind"]})
    spec = oci.parse_config(data, bundle=str(tmp_path))
    opts = kw.pop("opts", RestoreOptions(id="x", bundle=str(tmp_path)))
    return plan_restore(spec, meta, opts, images_dir="/i", work_dir="/w", criu_root="/r",
                        cgroup_paths=CGROUPS, ns_fds={}, notify_dir=None, **kw)


def test_restore_plan_of_a_runc_checkpoint(tmp_path):
    """Only descriptors.json: the keys come from config.json as runc names them."""
    meta = CheckpointMeta(container_id="", bundle="", external_keys={})
    criu = _restore_plan(tmp_path, meta, resolved={"/conf": "/real/conf"},
                         opts=RestoreOptions(id="x", bundle=str(tmp_path),
                                             manage_cgroups_mode=CgroupMode.IGNORE,
                                             empty_ns=frozenset({"net"})),
                         image_keys={"/real/conf": "/real/conf", "/dev/null": "/proc/kcore",
                                     "/sys/fs/cgroup/memory": "/sys/fs/cgroup/memory",
                                     "/sys/fs/cgroup/cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                                     "/sys/fs/cgroup/systemd": "/sys/fs/cgroup/systemd"})
    got = {e.key: e.val for e in criu.ext_mnt}
    assert got["/real/conf"] == str(tmp_path)
    assert got["/dev/null"] == "/dev/null"
    assert got["/sys/fs/cgroup/memory"] == "/sys/fs/cgroup/memory/m/new"
    assert got["/sys/fs/cgroup/cpu,cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/m/new"
    assert got["/sys/fs/cgroup/systemd"] == "/sys/fs/cgroup/systemd/m/new"
    assert criu.manage_cgroups_mode is CgroupMode.IGNORE and criu.empty_ns == {"net"}
    assert criu.config_file == "/etc/criu/runc.conf"


def test_restore_plan_names_an_external_mount_the_bundle_lacks(tmp_path):
    from migrate.errors import NotFoundError

    meta = CheckpointMeta(container_id="", bundle="", external_keys={})
    with pytest.raises(NotFoundError, match="/data"):
        _restore_plan(tmp_path, meta, image_keys={"/data": "/data"})


def _with_masked_tmpfs(tmp_path, cap_bnd="00000000a80425fb", content=False):
    p = tmp_path / "proc" / str(PID)
    with open(p / "mountinfo", "a") as f:
        f.write("105 101 0:60 / /proc/acpi ro,relatime - tmpfs tmpfs ro\n")
    (tmp_path / "rootfs" / "proc" / "acpi").mkdir(parents=True)
    if content:
        (tmp_path / "rootfs" / "proc" / "acpi" / "x").write_text("")
    (p / "status").write_text(f"Name:\tsh\nCapInh:\t0\nCapBnd:\t{cap_bnd}\n")


def test_dump_plan_recreates_the_empty_masked_tmpfs_when_asked(proc):
    _with_masked_tmpfs(proc)
    criu, meta = _plan(proc, CheckpointOptions(id="c1", skip_masked_tmpfs=True))
    assert ExternalMount(mountpoint="/proc/acpi", kind="masked-tmpfs",
                         detail="ro,relatime ro") in meta.mounts
    assert ("/proc/acpi", "migrate-masked:/proc/acpi") in {(e.key, e.val) for e in criu.ext_mnt}
    # runc-compatible images (the default of CheckpointOptions) tar it, as runc does
    criu, meta = _plan(proc, CheckpointOptions(id="c1"))
    assert "/proc/acpi" not in {e.key for e in criu.ext_mnt}


@pytest.mark.parametrize("kw", [dict(content=True), dict(cap_bnd="000001ffffffffff")])
def test_dump_plan_tars_a_masked_tmpfs_that_may_have_changed(proc, kw):
    _with_masked_tmpfs(proc, **kw)
    criu, meta = _plan(proc, CheckpointOptions(id="c1", skip_masked_tmpfs=True))
    assert "/proc/acpi" not in {e.key for e in criu.ext_mnt}
    assert all(m.kind != "masked-tmpfs" for m in meta.mounts)


def test_created_is_iso_utc_with_microseconds_like_datetime_wrote():
    import datetime

    from migrate.checkpoint.dump import _utc_now

    before = datetime.datetime.now(datetime.timezone.utc)
    text = _utc_now()
    after = datetime.datetime.now(datetime.timezone.utc)
    assert len(text) == len("2026-12-02T09:30:00.123456Z") and text.endswith("Z")
    parsed = datetime.datetime.fromisoformat(text[:-1] + "+00:00")
    assert before - datetime.timedelta(seconds=1) <= parsed <= after
