"""The protobuf-free codec (_wire) and CRIU's message tables (_messages),
checked against protobuf itself: pycriu's generated descriptors are the
schema, SerializeToString gives the bytes to match, and protobuf-encoded
answers (with fields a newer CRIU may add) must read back."""

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
)
from migrate.criu_rpc import _messages as msgs
from migrate.criu_rpc._wire import (
    BOOL,
    INT32,
    STRING,
    UINT32,
    UINT64,
    DecodeError,
    EncodeError,
    Message,
)
from migrate.criu_rpc.images import HEADS, KINDS
from migrate.criu_rpc.session import build_request

rpc = pytest.importorskip("pycriu.rpc_pb2")


# -- the tables are CRIU's schema -------------------------------------------------

def _image_module(message: str):
    import importlib

    stems = {m: s for _magic, s, m in KINDS.values()}
    stems.update((head, KINDS[kind][1]) for kind, head in HEADS.items())
    stem = stems.get(message)
    return importlib.import_module(f"pycriu.images.{stem}_pb2") if stem else None


def _reachable(descriptor, seen):
    if descriptor.name in seen:
        return seen
    seen[descriptor.name] = descriptor
    for field in descriptor.fields:
        if field.message_type is not None:
            _reachable(field.message_type, seen)
    return seen


def _schema() -> dict:
    """name -> descriptor of every message the hot path sends or reads."""
    seen: dict = {}
    for name in ("criu_req", "criu_resp"):
        _reachable(getattr(rpc, name).DESCRIPTOR, seen)
    for message in [m for _magic, _stem, m in KINDS.values()] + list(HEADS.values()):
        _reachable(getattr(_image_module(message), message).DESCRIPTOR, seen)
    return seen


SCHEMA = _schema()
TABLES = {name: cls for name, cls in vars(msgs).items()
          if isinstance(cls, type) and issubclass(cls, Message) and cls is not Message}
ENUMS = {name: value for name, value in vars(msgs).items()
         if isinstance(value, dict) and not name.startswith("_")}
_TYPES = {INT32: "TYPE_INT32", UINT32: "TYPE_UINT32", UINT64: "TYPE_UINT64", BOOL: "TYPE_BOOL",
          STRING: "TYPE_STRING"}


def test_the_tables_are_exactly_the_messages_used():
    assert sorted(TABLES) == sorted(SCHEMA)
    assert set(msgs.__all__) >= set(TABLES) | set(ENUMS)


def _enum_name(table: dict) -> str:
    (name,) = [n for n, v in ENUMS.items() if v is table]
    return name


def _ours(field) -> tuple:
    kind = field.kind
    if isinstance(kind, type):
        return (field.number, field.name, "TYPE_MESSAGE", field.label, kind.__name__, field.packed)
    if isinstance(kind, dict):
        return (field.number, field.name, "TYPE_ENUM", field.label, _enum_name(kind), field.packed)
    return (field.number, field.name, _TYPES[kind], field.label, "", field.packed)


def _theirs(descriptor) -> list[tuple]:
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    labels = {1: "optional", 2: "required", 3: "repeated"}
    return sorted((f.number, f.name, descriptor_pb2.FieldDescriptorProto.Type.Name(f.type),
                   labels[f.label], f.type_name.lstrip("."), f.options.packed)
                  for f in proto.field)


@pytest.mark.parametrize("name", sorted(SCHEMA))
def test_every_field_number_kind_and_label_is_crius(name):
    assert sorted(_ours(f) for f in TABLES[name].FIELDS) == _theirs(SCHEMA[name])


@pytest.mark.parametrize("name", sorted(SCHEMA))
def test_defaults_are_crius(name):
    for field in SCHEMA[name].fields:
        ours = TABLES[name]._by_name[field.name]
        if field.message_type is None and not field.is_repeated:
            assert ours.default == field.default_value, field.name


def test_enums_are_crius():
    from pycriu.images import sysctl_pb2

    used = {f.enum_type.name: f.enum_type for d in SCHEMA.values() for f in d.fields
            if f.enum_type is not None}
    for name in rpc.DESCRIPTOR.enum_types_by_name:
        used.setdefault(name, rpc.DESCRIPTOR.enum_types_by_name[name])
    assert used["SysctlType"] is sysctl_pb2.DESCRIPTOR.enum_types_by_name["SysctlType"]
    assert sorted(ENUMS) == sorted(used)
    for name, enum in used.items():
        assert ENUMS[name] == {v.name: v.number for v in enum.values}, name
        # Dict order is declaration order: the first value is the implicit default.
        assert list(ENUMS[name]) == [v.name for v in enum.values], name
    assert msgs.NOTIFY == rpc.NOTIFY


def test_no_field_hides_a_method():
    for cls in TABLES.values():
        assert not {f.name for f in cls.FIELDS} & {"encode", "decode", "has", "FIELDS"}, cls


# -- requests: byte for byte what protobuf writes ---------------------------------

def _reference_opts(options: CriuOptions, images_dir_fd: int, work_dir_fd=None):
    """criu_opts built with protobuf's API, as migrate built it before _wire."""
    o = rpc.criu_opts()
    o.images_dir_fd = images_dir_fd
    if images_dir_fd == -1 and options.images_dir is not None:
        o.images_dir = options.images_dir
    if work_dir_fd is not None:
        o.work_dir_fd = work_dir_fd
    if options.log_file is not None:
        o.log_file = options.log_file
    o.log_level = int(options.log_level)
    if options.pid is not None:
        o.pid = options.pid
    if options.root is not None:
        o.root = options.root
    for name in ("leave_running", "leave_stopped", "tcp_established", "tcp_skip_in_flight",
                 "tcp_close", "ext_unix_sk", "shell_job", "file_locks", "evasive_devices",
                 "link_remap", "weak_sysctls", "auto_dedup", "track_mem", "lazy_pages",
                 "auto_ext_mnt", "ext_sharing", "ext_masters", "orphan_pts_master",
                 "rst_sibling", "notify_scripts", "unprivileged"):
        if getattr(options, name):
            setattr(o, name, True)
    if options.manage_cgroups is not None:
        o.manage_cgroups = options.manage_cgroups
    if options.manage_cgroups_mode is not None:
        o.manage_cgroups_mode = rpc.criu_cg_mode.Value(options.manage_cgroups_mode.value)
    for cg in options.cg_root:
        entry = o.cg_root.add()
        entry.path = cg.path
        if cg.ctrl is not None:
            entry.ctrl = cg.ctrl
    for name in ("freeze_cgroup", "cgroup_props", "cgroup_yard", "parent_img", "lsm_profile",
                 "lsm_mount_context", "config_file"):
        if getattr(options, name) is not None:
            setattr(o, name, getattr(options, name))
    o.cgroup_dump_controller.extend(options.cgroup_dump_controller)
    if options.pre_dump_mode is not None:
        o.pre_dump_mode = rpc.criu_pre_dump_mode.Value(options.pre_dump_mode.value)
    if options.ps is not None:
        o.ps.SetInParent()
        if options.ps.address is not None:
            o.ps.address = options.ps.address
        o.ps.port = options.ps.port
        if options.ps.fd is not None:
            o.ps.fd = options.ps.fd
    if options.tls is not None:
        o.tls = True
        for name in ("cacert", "cacrl", "cert", "key"):
            if getattr(options.tls, name) is not None:
                setattr(o, f"tls_{name}", getattr(options.tls, name))
        if options.tls.no_cn_verify:
            o.tls_no_cn_verify = True
    if options.status_fd is not None:
        o.status_fd = options.status_fd
    if options.empty_ns:
        o.empty_ns = 0x40000000
    o.external.extend(options.external)
    for m in options.ext_mnt:
        entry = o.ext_mnt.add()
        entry.key, entry.val = m.key, m.val
    o.skip_mnt.extend(options.skip_mnt)
    o.enable_fs.extend(options.enable_fs)
    for inh in options.inherit_fd:
        entry = o.inherit_fd.add()
        entry.key, entry.fd = inh.key, inh.fd
    for jn in options.join_ns:
        entry = o.join_ns.add()
        entry.ns, entry.ns_file = jn.ns, jn.ns_file
        if jn.extra_opt is not None:
            entry.extra_opt = jn.extra_opt
    if options.network_lock is not None:
        o.network_lock = rpc.criu_network_lock_method.Value(options.network_lock.value)
    if options.ghost_limit is not None:
        o.ghost_limit = options.ghost_limit
    if options.timeout is not None:
        o.timeout = options.timeout
    return o


# What `migrate checkpoint` sends for a container with a bind mount, a tty
# and its own network namespace (checkpoint/dump.py plan_dump).
DUMP = CriuOptions(
    images_dir="/run/ck/img", work_dir="/run/ck/work", log_file="dump.log", pid=43121,
    root="/run/migrate/ck/rootfs", leave_running=True, tcp_established=True, file_locks=True,
    ext_unix_sk=True, shell_job=False, manage_cgroups=True, manage_cgroups_mode=CgroupMode.SOFT,
    freeze_cgroup="/sys/fs/cgroup/freezer/migrate-1a2b3c4d/ck", auto_dedup=False,
    ext_mnt=[ExtMount(key="/etc/hosts", val="/etc/hosts"),
             ExtMount(key="/dev/console", val="/dev/console")],
    external=["mnt[/proc/sys]:/proc/sys", "tty[88:2]"], skip_mnt=["/sys/fs/cgroup"],
    enable_fs=["fuse"], orphan_pts_master=True, network_lock=NetworkLock.SKIP,
    empty_ns=frozenset({"net"}), notify_scripts=True, parent_img="../parent",
    cgroup_dump_controller=("cpu", "memory"))

# What `migrate restore` sends (checkpoint/restore_plan.py): stdio inherited,
# joined namespaces, the cgroup root moved, a sibling restore.
RESTORE = CriuOptions(
    images_dir="/run/ck/img", work_dir="/run/ck/work", log_file="restore.log",
    root="/run/migrate/ck/rootfs", rst_sibling=True, tcp_established=True, file_locks=True,
    manage_cgroups_mode=CgroupMode.SOFT, cg_root=[CgroupRoot(path="/migrate-1a2b3c4d/ck"),
                                                  CgroupRoot(path="/x", ctrl="memory")],
    ext_mnt=[ExtMount(key="/etc/hosts", val="/bundles/ck/hosts")],
    inherit_fd=[InheritFd(key="pipe:[51234]", fd=4), InheritFd(key="pipe:[51235]", fd=5)],
    join_ns=[JoinNamespace(ns="net", ns_file="/run/netns/ck"),
             JoinNamespace(ns="user", ns_file="/proc/1/ns/user", extra_opt="0,0")],
    lsm_profile="apparmor:migrate-default", lsm_mount_context="system_u:object_r:c1",
    orphan_pts_master=True, notify_scripts=True, network_lock=NetworkLock.NFTABLES,
    status_fd=9, external=["dev[800/1]:data"], log_level=LogLevel.DEBUG)

# Every option CriuOptions has, set.
EVERYTHING = CriuOptions(
    images_dir="/img", work_dir="/work", log_file="x.log", log_level=LogLevel.INFO, pid=42,
    root="/rootfs", leave_stopped=True, tcp_established=True, tcp_skip_in_flight=True,
    tcp_close=True, ext_unix_sk=True, shell_job=True, file_locks=True, evasive_devices=True,
    link_remap=True, weak_sysctls=True, manage_cgroups=False, manage_cgroups_mode=CgroupMode.NONE,
    cg_root=[CgroupRoot(path="/ctr", ctrl="memory")], freeze_cgroup="/f", cgroup_props="p",
    cgroup_dump_controller=["cpu"], cgroup_yard="/yard", auto_dedup=True, track_mem=True,
    parent_img="../p", pre_dump_mode=PreDumpMode.VM_READ,
    ps=PageServer(address="fd00::2", port=27000, fd=12),
    tls=Tls(cacert="/ca", cacrl="/crl", cert="/c", key="/k", no_cn_verify=True),
    lazy_pages=True, status_fd=3, empty_ns={"net"}, external=["mnt[]:m"],
    ext_mnt=[ExtMount(key="/proc", val="proc")], auto_ext_mnt=True, ext_sharing=True,
    ext_masters=True, skip_mnt=["/skip"], enable_fs=["fuse", "nfs"],
    inherit_fd=[InheritFd(key="fd[1]:x", fd=8)], join_ns=[JoinNamespace(ns="uts", ns_file="/u")],
    orphan_pts_master=True, rst_sibling=True, lsm_profile="selinux:x", lsm_mount_context="c",
    network_lock=NetworkLock.IPTABLES, config_file="/etc/criu.conf", notify_scripts=True,
    unprivileged=True, ghost_limit=0, timeout=4294967295)


@pytest.mark.parametrize("action, options, fds", [
    ("dump", DUMP, (7, 8)),
    ("restore", RESTORE, (7, 8)),
    ("dump", EVERYTHING, (2147483647, 0)),
    ("restore", CriuOptions(images_dir="/img"), (-1, None)),       # images_dir by path
    ("page_server_chld", CriuOptions(images_dir="/i", ps=PageServer(port=0)), (3, None)),
    ("pre_dump", CriuOptions(images_dir="/i", pid=1, track_mem=True, log_file=None), (3, None)),
])
def test_requests_are_byte_identical_to_protobufs(action, options, fds):
    images_dir_fd, work_dir_fd = fds
    ours = build_request(action, options, images_dir_fd=images_dir_fd, work_dir_fd=work_dir_fd)
    ref = rpc.criu_req(type=rpc.criu_req_type.Value(action.upper()))
    ref.opts.CopyFrom(_reference_opts(options, images_dir_fd, work_dir_fd))
    assert ours.encode() == ref.SerializeToString()
    assert msgs.criu_req.decode(ref.SerializeToString()) == ours


@pytest.mark.parametrize("kw, ref", [
    ({"keep_open": True}, {"keep_open": True}),
    ({"pid": 4000000000}, {"pid": 4000000000}),
    ({"features": msgs.criu_features(mem_track=True, pidfd_store=True)}, {}),
])
def test_session_requests_are_byte_identical(kw, ref):
    ours = build_request("feature_check", None, **kw)
    theirs = rpc.criu_req(type=rpc.FEATURE_CHECK, **ref)
    if "features" in kw:
        theirs.features.mem_track = theirs.features.pidfd_store = True
    assert ours.encode() == theirs.SerializeToString()


@pytest.mark.parametrize("ok", [True, False])
def test_notify_answers_are_byte_identical(ok):
    ours = msgs.criu_req(type=msgs.NOTIFY, notify_success=ok)
    assert ours.encode() == rpc.criu_req(type=rpc.NOTIFY, notify_success=ok).SerializeToString()


def test_non_utf8_paths_go_as_their_bytes():
    import os

    path = os.fsdecode(b"/img/\xff\xfe")
    data = msgs.criu_opts(images_dir_fd=-1, images_dir=path).encode()
    assert rpc.criu_opts.FromString(data).images_dir == b"/img/\xff\xfe"  # protobuf: bytes
    assert msgs.criu_opts.decode(data).images_dir == path


@pytest.mark.parametrize("build, words", [
    (lambda: msgs.criu_req(), "criu_req.type is required"),
    (lambda: msgs.criu_req(type=1, opts=msgs.criu_opts()), "criu_opts.images_dir_fd is required"),
    (lambda: msgs.criu_opts(images_dir_fd=1 << 31), "not an int32"),
    (lambda: msgs.criu_opts(images_dir_fd=0, ghost_limit=-1), "not a uint32"),
    (lambda: msgs.criu_opts(images_dir_fd=0, leave_running=1), "not a bool"),
    (lambda: msgs.criu_opts(images_dir_fd=0, manage_cgroups_mode=9), "enum"),
    (lambda: msgs.criu_opts(images_dir_fd=0, external="mnt[]:x"), "a string is not a list"),
    (lambda: msgs.criu_opts(images_dir_fd=0, root=b"/x"), "not a string"),
    (lambda: msgs.criu_opts(images_dir_fd=0, ps=msgs.criu_features()), "criu_page_server_info"),
])
def test_what_cannot_be_encoded(build, words):
    with pytest.raises(EncodeError, match=words):
        build().encode()


def test_message_attributes():
    o = msgs.criu_opts(images_dir_fd=3, pid=None, external=[])
    assert o.has("images_dir_fd") and not o.has("pid") and not o.has("external")
    assert (o.pid, o.log_level, o.network_lock, o.external) == (0, 2, 1, ())
    assert o.ps == msgs.criu_page_server_info() and not o.has("ps")   # not stored
    o.pid = None
    assert not o.has("pid")
    with pytest.raises(AttributeError, match="no field 'pids'"):
        o.pids = 3
    with pytest.raises(AttributeError, match="no field 'pids'"):
        o.pids
    with pytest.raises(AttributeError):
        o.has("pids")
    assert "images_dir_fd=3" in repr(o)


# -- answers: protobuf's bytes, and what a newer CRIU may add ---------------------

def _resp(**kw):
    resp = rpc.criu_resp(type=rpc.RESTORE, success=True, **kw)
    return resp


def test_answers_read_as_protobuf_reads_them():
    resp = rpc.criu_resp(type=rpc.VERSION, success=True, cr_errno=-22, cr_errmsg="Error (x): é",
                         status=3 << 8)
    resp.version.major_number, resp.version.minor_number, resp.version.sublevel = 4, 2, 1
    resp.version.gitid = "v4.2.1"
    resp.features.lazy_pages = False
    resp.ps.pid, resp.ps.port = 77, 27000
    resp.dump.restored = True
    resp.restore.pid = 1 << 30
    resp.notify.script = "post-dump"
    ours = msgs.criu_resp.decode(resp.SerializeToString())
    assert (ours.type, ours.success, ours.cr_errno, ours.cr_errmsg, ours.status) == (
        rpc.VERSION, True, -22, "Error (x): é", 3 << 8)
    assert (ours.version.major_number, ours.version.minor_number, ours.version.sublevel,
            ours.version.gitid, ours.version.has("extra")) == (4, 2, 1, "v4.2.1", False)
    assert ours.features.has("lazy_pages") and ours.features.lazy_pages is False
    assert not ours.features.has("mem_track")
    assert (ours.ps.pid, ours.ps.port, ours.dump.restored, ours.restore.pid) == (
        77, 27000, True, 1 << 30)
    assert ours.notify.script == "post-dump" and not ours.notify.has("pid")
    assert ours.encode() == resp.SerializeToString()


def test_an_absent_message_reads_empty():
    ours = msgs.criu_resp.decode(rpc.criu_resp(type=rpc.DUMP, success=False).SerializeToString())
    assert not ours.has("notify") and ours.notify.script == "" and ours.restore.pid == 0
    assert not ours.has("cr_errno") and ours.cr_errmsg == ""


UNKNOWN = [
    bytes([0xA0, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),  # 100: varint
    bytes([0xAA, 0x06, 0x03]) + b"new",                # 101: length-delimited
    bytes([0xAD, 0x06, 1, 2, 3, 4]),                   # 101: fixed32
    bytes([0xB1, 0x06]) + bytes(8),                    # 102: fixed64
    bytes([0xBB, 0x06, 0x08, 0x01, 0x13, 0x08, 0x02, 0x14, 0xBC, 0x06]),   # 103: nested groups
    bytes([0x4D, 1, 2, 3, 4]),                         # 9 (cr_errmsg) with a wire type not its own
]


@pytest.mark.parametrize("extra", UNKNOWN + [b"".join(UNKNOWN)])
def test_unknown_fields_are_skipped(extra):
    resp = _resp(cr_errmsg="kept")
    resp.restore.pid = 99
    # Unknown fields before, between and after the known ones, and inside a nested message.
    restore = resp.restore.SerializeToString() + extra
    data = extra + rpc.criu_resp(type=rpc.RESTORE, success=True).SerializeToString() + extra + \
        bytes([0x22, len(restore)]) + restore + \
        rpc.criu_resp(type=rpc.RESTORE, success=True, cr_errmsg="kept").SerializeToString()[4:] + extra
    theirs = rpc.criu_resp.FromString(data)
    ours = msgs.criu_resp.decode(data)
    assert (ours.type, ours.success, ours.restore.pid, ours.cr_errmsg) == (
        theirs.type, theirs.success, theirs.restore.pid, theirs.cr_errmsg) == (
        rpc.RESTORE, True, 99, "kept")


def test_an_unknown_enum_value_is_skipped_as_protobuf_does():
    data = _resp().SerializeToString() + bytes([0x08, 0x63])   # type = 99, unknown
    theirs, ours = rpc.criu_resp.FromString(data), msgs.criu_resp.decode(data)
    assert ours.type == theirs.type == rpc.RESTORE


def test_last_value_wins_and_messages_merge():
    a, b = _resp(cr_errno=1), _resp(cr_errno=2)
    a.version.major_number, b.version.minor_number = 4, 2
    data = a.SerializePartialToString() + b.SerializePartialToString()
    theirs, ours = rpc.criu_resp.FromString(data), msgs.criu_resp.decode(data)
    assert (ours.cr_errno, ours.version.major_number, ours.version.minor_number) == (
        theirs.cr_errno, theirs.version.major_number, theirs.version.minor_number) == (2, 4, 2)


def test_image_entries_packed_or_not():
    from pycriu.images import netdev_pb2

    entry = netdev_pb2.netns_entry(def_conf=[1, -1, 0], ext_key="extRootNetNS")
    entry.def_conf4.add(type=5, sarg="x")
    entry.nsids.add(target_ns_id=3, netnsid_value=-1)
    plain = entry.SerializeToString()
    ours = msgs.netns_entry.decode(plain)
    assert (ours.def_conf, ours.ext_key, ours.nsids[0].netnsid_value) == ([1, -1, 0],
                                                                         "extRootNetNS", -1)
    assert ours.def_conf4[0].type == msgs.SysctlType["CTL_STR"]
    assert ours.encode() == plain
    # The same list written packed (a proto3 writer would) reads the same.
    values = bytes([1]) + bytes([0xFF] * 9 + [0x01]) + bytes([0])
    packed = bytes([0x0A, len(values)]) + values
    assert msgs.netns_entry.decode(packed).def_conf == [1, -1, 0]
    assert list(netdev_pb2.netns_entry.FromString(packed).def_conf) == [1, -1, 0]


@pytest.mark.parametrize("data, words", [
    (bytes([0x08]), "truncated varint"),
    (bytes([0x08] + [0x80] * 10 + [0x01]), "longer than ten bytes"),
    (bytes([0x4A, 0x05]) + b"abc", "criu_resp.cr_errmsg: 5 bytes run past the end"),
    (bytes([0x22, 0x01, 0x08]), "truncated varint"),          # inside restore
    (bytes([0x00, 0x01]), "field number 0"),
    (bytes([0x0E]), "invalid wire type 6"),
    (bytes([0xB5, 0x06, 1, 2]), "runs past the end"),          # unknown fixed32, cut
    (bytes([0xBB, 0x06, 0xC4, 0x06]), "group 103 ends as group 104"),
    (bytes([0xBC, 0x06]), "invalid wire type 4"),
])
def test_malformed_answers(data, words):
    with pytest.raises(DecodeError, match=words):
        msgs.criu_resp.decode(data)
    with pytest.raises(Exception):   # noqa: B017 - protobuf refuses them too
        rpc.criu_resp.FromString(data)
