"""CriuOptions -> criu_opts, field by field, and the checks before CRIU.

What to_criu_opts builds is read back with protobuf (pycriu's rpc_pb2), as
CRIU would read it."""

import pytest

from migrate.criu_rpc import (
    CgroupMode,
    CgroupRoot,
    CriuOptions,
    ExtMount,
    InheritFd,
    JoinNamespace,
    LogLevel,
    NetworkLock,
    PageServer,
    PreDumpMode,
    Tls,
    check_request,
    to_criu_opts,
)
from migrate.errors import UsageError


def _sent(options, **fds):
    """The criu_opts CRIU receives, decoded by protobuf."""
    from pycriu import rpc_pb2 as rpc

    return rpc.criu_opts.FromString(to_criu_opts(options, **fds).encode())


def test_defaults_set_only_what_is_needed():
    o = _sent(CriuOptions(images_dir="/img"), images_dir_fd=7)
    set_fields = {f.name for f, _ in o.ListFields()}
    assert set_fields == {"images_dir_fd", "log_file", "log_level"}
    assert (o.images_dir_fd, o.log_file, o.log_level) == (7, "criu.log", 4)


def test_images_dir_path_is_sent_only_without_fd():
    o = _sent(CriuOptions(images_dir="/img"))
    assert o.images_dir_fd == -1 and o.images_dir == "/img"
    assert not _sent(CriuOptions(images_dir="/img"), images_dir_fd=3).HasField("images_dir")


def test_every_field_maps_one_to_one():
    opts = CriuOptions(
        images_dir="/img", work_dir="/work", log_file="dump.log", log_level=LogLevel.INFO,
        pid=42, root="/rootfs", leave_running=True, tcp_established=True,
        tcp_skip_in_flight=True, tcp_close=True, ext_unix_sk=True, shell_job=True,
        file_locks=True, evasive_devices=True, link_remap=True, weak_sysctls=True,
        manage_cgroups=True, manage_cgroups_mode=CgroupMode.NONE,
        cg_root=[CgroupRoot(path="/ctr", ctrl="memory"), CgroupRoot(path="/all")],
        freeze_cgroup="/sys/fs/cgroup/freezer/ctr", cgroup_props="x", cgroup_yard="/yard",
        cgroup_dump_controller=["cpu"], auto_dedup=True, track_mem=True,
        parent_img="../pre-1", pre_dump_mode=PreDumpMode.VM_READ,
        ps=PageServer(address="10.0.0.2", port=27000),
        tls=Tls(cacert="/ca", cacrl="/crl", cert="/c", key="/k", no_cn_verify=True),
        lazy_pages=True, status_fd=9, empty_ns={"net"},
        external=["mnt[/etc/hosts]:hosts", "tty[88:2]"],
        ext_mnt=[ExtMount(key="/proc", val="proc")], auto_ext_mnt=True, ext_sharing=True,
        ext_masters=True, skip_mnt=["/skip"], enable_fs=["fuse"],
        orphan_pts_master=True, lsm_profile="apparmor:ctr", lsm_mount_context="ctx",
        network_lock=NetworkLock.NFTABLES, notify_scripts=True, ghost_limit=1 << 20, timeout=10,
        unprivileged=True,
    )
    o = _sent(opts, images_dir_fd=5, work_dir_fd=6)
    assert (o.images_dir_fd, o.work_dir_fd, o.log_file, o.log_level) == (5, 6, "dump.log", 3)
    assert (o.pid, o.root) == (42, "/rootfs")
    for name in ("leave_running", "tcp_established", "tcp_skip_in_flight", "tcp_close",
                 "ext_unix_sk", "shell_job", "file_locks", "evasive_devices", "link_remap",
                 "weak_sysctls", "manage_cgroups", "auto_dedup", "track_mem", "lazy_pages",
                 "auto_ext_mnt", "ext_sharing", "ext_masters", "orphan_pts_master",
                 "notify_scripts", "tls", "tls_no_cn_verify", "unprivileged"):
        assert getattr(o, name) is True, name
    from pycriu import rpc_pb2 as rpc
    assert o.manage_cgroups_mode == rpc.CG_NONE
    assert [(c.ctrl, c.path, c.HasField("ctrl")) for c in o.cg_root] == [
        ("memory", "/ctr", True), ("", "/all", False)]
    assert (o.freeze_cgroup, o.cgroup_props, o.cgroup_yard) == (
        "/sys/fs/cgroup/freezer/ctr", "x", "/yard")
    assert list(o.cgroup_dump_controller) == ["cpu"]
    assert (o.parent_img, o.pre_dump_mode) == ("../pre-1", rpc.VM_READ)
    assert (o.ps.address, o.ps.port, o.ps.HasField("fd")) == ("10.0.0.2", 27000, False)
    assert (o.tls_cacert, o.tls_cacrl, o.tls_cert, o.tls_key) == ("/ca", "/crl", "/c", "/k")
    assert o.status_fd == 9
    assert o.empty_ns == 0x40000000  # CLONE_NEWNET
    assert list(o.external) == ["mnt[/etc/hosts]:hosts", "tty[88:2]"]
    assert [(m.key, m.val) for m in o.ext_mnt] == [("/proc", "proc")]
    assert (list(o.skip_mnt), list(o.enable_fs)) == (["/skip"], ["fuse"])
    assert (o.lsm_profile, o.lsm_mount_context) == ("apparmor:ctr", "ctx")
    assert o.network_lock == rpc.NFTABLES
    assert (o.ghost_limit, o.timeout) == (1 << 20, 10)
    assert o.IsInitialized()


def test_restore_only_fields():
    o = _sent(CriuOptions(
        images_dir="/img", rst_sibling=True, inherit_fd=[InheritFd(key="pipe:[123]", fd=5)],
        join_ns=[JoinNamespace(ns="net", ns_file="/run/netns/a"),
                 JoinNamespace(ns="user", ns_file="/proc/1/ns/user", extra_opt="0,0")]))
    assert o.rst_sibling is True
    assert [(i.key, i.fd) for i in o.inherit_fd] == [("pipe:[123]", 5)]
    assert [(j.ns, j.ns_file, j.extra_opt) for j in o.join_ns] == [
        ("net", "/run/netns/a", ""), ("user", "/proc/1/ns/user", "0,0")]


def test_page_server_port_zero_and_fd_are_sent():
    o = _sent(CriuOptions(images_dir="/i", ps=PageServer(port=0, fd=11)))
    assert o.HasField("ps") and o.ps.port == 0 and o.ps.fd == 11 and not o.ps.HasField("address")


def test_manage_cgroups_false_is_sent():
    # False is meaningful (CG_MODE_IGNORE), unlike "unset".
    assert _sent(CriuOptions(manage_cgroups=False)).HasField("manage_cgroups")
    assert not _sent(CriuOptions()).HasField("manage_cgroups")
    assert to_criu_opts(CriuOptions(manage_cgroups=False)).has("manage_cgroups")
    assert to_criu_opts(CriuOptions(manage_cgroups=False)).manage_cgroups is False


def test_sequences_become_tuples():
    opts = CriuOptions(external=["dev[1/2]:x"], skip_mnt=["/a"])
    assert opts.external == ("dev[1/2]:x",) and opts.skip_mnt == ("/a",)
    hash(opts)


def test_inherited_fds():
    opts = CriuOptions(inherit_fd=[InheritFd(key="fd[1]:x", fd=8)], ps=PageServer(fd=9))
    assert opts.inherited_fds() == (8, 9)


@pytest.mark.parametrize("kwargs, words", [
    ({"log_file": "logs/dump.log"}, "bare name"),
    ({"log_level": 7}, "log_level"),
    ({"pid": 0}, "pid"),
    ({"pid": True}, "pid"),
    ({"root": "rootfs"}, "absolute"),
    ({"status_fd": -1}, "status_fd"),
    ({"empty_ns": {"pid"}}, "only net"),
    ({"empty_ns": "net"}, "string"),
    ({"external": ["hosts"]}, "type[id]"),
    ({"external": "mnt[a]:b"}, "string"),
    ({"lsm_profile": "unconfined"}, "type:profile"),
    ({"leave_running": True, "leave_stopped": True}, "exclude"),
    ({"tls": Tls()}, "page server"),
    ({"inherit_fd": [InheritFd(key="a", fd=3), InheritFd(key="b", fd=3)]}, "twice"),
    ({"manage_cgroups_mode": "soft"}, "CgroupMode"),
    ({"network_lock": "iptables"}, "NetworkLock"),
    ({"images_dir": ""}, "empty"),
    ({"parent_img": "a\0b"}, "NUL"),
    ({"ghost_limit": -1}, "unsigned"),
])
def test_bad_values_are_refused(kwargs, words):
    with pytest.raises(UsageError) as err:
        CriuOptions(**kwargs)
    assert words in str(err.value)


@pytest.mark.parametrize("make, words", [
    (lambda: PageServer(port=70000), "TCP port"),
    (lambda: PageServer(address="localhost"), "IPv4 or IPv6"),
    (lambda: PageServer(fd=-2), "file descriptor"),
    (lambda: Tls(cert="/c"), "go together"),
    (lambda: JoinNamespace(ns="pid", ns_file="/x"), "not one of"),
    (lambda: CgroupRoot(path="rel"), "absolute"),
    (lambda: InheritFd(key="k", fd=None), "missing"),
    (lambda: ExtMount(key="", val="x"), "empty"),
])
def test_bad_parts_are_refused(make, words):
    with pytest.raises(UsageError) as err:
        make()
    assert words in str(err.value)


@pytest.mark.parametrize("request_, kwargs, words", [
    ("dump", {}, "images_dir is required"),
    ("dump", {"images_dir": "/i"}, "pid is required"),
    ("pre_dump", {"images_dir": "/i"}, "pid is required"),
    ("restore", {"images_dir": "/i", "pid": 3}, "not a restore option"),
    ("dump", {"images_dir": "/i", "pid": 3, "rst_sibling": True}, "rst_sibling is a restore option"),
    ("dump", {"images_dir": "/i", "pid": 3, "inherit_fd": [InheritFd(key="k", fd=4)]}, "inherit_fd"),
    ("restore", {"images_dir": "/i", "leave_running": True}, "leave_running is a dump option"),
    ("restore", {"images_dir": "/i", "ps": PageServer(port=1)}, "ps is a dump"),
    ("pre_dump", {"images_dir": "/i", "pid": 3, "lazy_pages": True}, "lazy_pages cannot"),
    ("dump", {"images_dir": "/i", "pid": 3, "lazy_pages": True}, "fixed port"),
    ("dump", {"images_dir": "/i", "pid": 3, "lazy_pages": True, "ps": PageServer(port=0)}, "fixed port"),
    ("page_server_chld", {"images_dir": "/i"}, "ps (address and port) is required"),
    ("check", {}, "log_file needs work_dir"),
])
def test_request_checks(request_, kwargs, words):
    with pytest.raises(UsageError) as err:
        check_request(request_, CriuOptions(**kwargs))
    assert words in str(err.value)


@pytest.mark.parametrize("request_, kwargs", [
    ("dump", {"images_dir": "/i", "pid": 3, "leave_running": True}),
    ("dump", {"images_dir": "/i", "pid": 3, "lazy_pages": True,
              "ps": PageServer(address="127.0.0.1", port=27)}),
    ("restore", {"images_dir": "/i", "rst_sibling": True, "lazy_pages": True}),
    ("page_server_chld", {"images_dir": "/i", "ps": PageServer(address="::1")}),
    ("check", {"log_file": None}),
    ("check", {"work_dir": "/w"}),
    ("pre_dump", {"images_dir": "/i", "pid": 3, "track_mem": True, "parent_img": "../p"}),
])
def test_request_checks_pass(request_, kwargs):
    check_request(request_, CriuOptions(**kwargs))


def test_replace_checks_again():
    opts = CriuOptions(images_dir="/i")
    assert opts.replace(pid=5).pid == 5
    with pytest.raises(UsageError):
        opts.replace(pid=-5)
