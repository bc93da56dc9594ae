"""Restore plans: how recorded external resources map to this host (no CRIU)."""

import pytest

from migrate import oci
from migrate.checkpoint.externals import Descriptor, ExternalMount
from migrate.checkpoint.metadata import CheckpointMeta, load_meta, save_meta
from migrate.checkpoint.options import RestoreOptions
from migrate.checkpoint.restore_plan import cgroup_source, plan_restore, relative_cgroup
from migrate.errors import NotFoundError, UsageError

CGROUPS = {"cpu": "/sys/fs/cgroup/cpu/migrate/new", "memory": "/sys/fs/cgroup/memory/migrate/new",
           "name=systemd": "/sys/fs/cgroup/systemd/migrate/new",
           "": "/sys/fs/cgroup/unified/migrate/new"}


def _spec(tmp_path, mounts=(), namespaces=None):
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    data = oci.default_spec()
    data["mounts"] += list(mounts)
    if namespaces is not None:
        data["linux"]["namespaces"] = namespaces
    return oci.parse_config(data, bundle=str(tmp_path))


def _meta(**kw):
    base = dict(container_id="c", bundle="/b", external_keys={})
    base.update(kw)
    return CheckpointMeta(**base)


def test_cgroup_sources_and_relative_paths():
    assert cgroup_source("cpu", CGROUPS) == "/sys/fs/cgroup/cpu/migrate/new"
    assert cgroup_source("systemd", CGROUPS) == "/sys/fs/cgroup/systemd/migrate/new"
    assert cgroup_source("unified", CGROUPS) == "/sys/fs/cgroup/unified/migrate/new"
    assert cgroup_source("cpu,cpuacct", CGROUPS) == "/sys/fs/cgroup/cpu/migrate/new"
    with pytest.raises(NotFoundError, match="hugetlb"):
        cgroup_source("hugetlb", CGROUPS)
    assert relative_cgroup("/sys/fs/cgroup/memory/migrate/new") == "/migrate/new"


def test_plan_maps_every_external(tmp_path):
    src = tmp_path / "moved"
    src.mkdir()
    spec = _spec(tmp_path, mounts=[{"destination": "/data", "type": "bind",
                                    "source": str(src), "options": ["rbind"]}])
    meta = _meta(mounts=(ExternalMount(mountpoint="/data", kind="bind"),
                         ExternalMount(mountpoint="/sys/fs/cgroup/memory", kind="cgroup",
                                       detail="memory"),
                         ExternalMount(mountpoint="/proc/keys", kind="mask")),
                 descriptors=(Descriptor(fd=0, path="pipe:[1]", external="pipe:[1]"),
                              Descriptor(fd=1, path="/dev/pts/0", external=None),
                              Descriptor(fd=2, path="/log", external="file[1b:2]")))
    opts = plan_restore(spec, meta, RestoreOptions(id="x"), images_dir="/i", work_dir="/w",
                        criu_root="/r", cgroup_paths=CGROUPS, ns_fds={}, notify_dir=None,
                        stdio_fds=(10, 11, 12))
    assert {(m.key, m.val) for m in opts.ext_mnt} >= {
        ("/data", str(src)), ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/migrate/new"),
        ("/proc/keys", "/dev/null")}
    assert {(i.key, i.fd) for i in opts.inherit_fd} == {("pipe:[1]", 10), ("file[1b:2]", 12)}
    assert opts.rst_sibling and opts.manage_cgroups
    assert {(r.ctrl, r.path) for r in opts.cg_root} >= {("memory", "/migrate/new"),
                                                       (None, "/migrate/new")}


def test_plan_refuses_what_it_cannot_map(tmp_path):
    spec = _spec(tmp_path)
    meta = _meta(mounts=(ExternalMount(mountpoint="/data", kind="bind"),))
    with pytest.raises(NotFoundError, match="/data"):
        plan_restore(spec, meta, RestoreOptions(id="x"), images_dir="/i", work_dir="/w",
                     criu_root="/r", cgroup_paths=CGROUPS, ns_fds={}, notify_dir=None)
    meta = _meta(external_keys={"network": "extRootNetNS"})
    with pytest.raises(UsageError, match="network"):
        plan_restore(spec, meta, RestoreOptions(id="x"), images_dir="/i", work_dir="/w",
                     criu_root="/r", cgroup_paths=CGROUPS, ns_fds={}, notify_dir=None)


def test_pod_restore_joins_the_new_pod(tmp_path):
    spec = _spec(tmp_path, namespaces=[{"type": "pid"}, {"type": "mount"},
                                       {"type": "network", "path": "/proc/7/ns/net"},
                                       {"type": "ipc", "path": "/proc/7/ns/ipc"},
                                       {"type": "uts"}])
    meta = _meta(external_keys={"network": "extRootNetNS"}, joined_namespaces=("ipc", "network"))
    opts = plan_restore(spec, meta, RestoreOptions(id="x"), images_dir="/i", work_dir="/w",
                        criu_root="/r", cgroup_paths=CGROUPS, ns_fds={"network": 33},
                        notify_dir=None)
    assert [(i.key, i.fd) for i in opts.inherit_fd] == [("extRootNetNS", 33)]
    assert [(j.ns, j.ns_file) for j in opts.join_ns] == [("ipc", "/proc/7/ns/ipc")]


def test_metadata_round_trip(tmp_path):
    meta = _meta(mounts=(ExternalMount(mountpoint="/d", kind="bind"),),
                 descriptors=(Descriptor(fd=0, path="pipe:[9]", external="pipe:[9]"),),
                 terminal=True, external_keys={"network": "extRootNetNS"})
    save_meta(str(tmp_path), meta)
    assert load_meta(str(tmp_path)) == meta
    assert (tmp_path / "descriptors.json").read_text() == '["pipe:[9]"]'


def test_metadata_errors(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        load_meta(str(tmp_path / "nope"))
    with pytest.raises(NotFoundError, match="no container checkpoint"):
        load_meta(str(tmp_path))
    (tmp_path / "migrate.json").write_text("{broken")
    with pytest.raises(UsageError, match="corrupt"):
        load_meta(str(tmp_path))


def test_stdio_of_another_kind_is_refused_before_restore(tmp_path):
    import os

    from migrate.checkpoint.restore_plan import check_stdio

    log = tmp_path / "log"
    log.write_text("")
    os.chmod(log, 0o644)
    meta = _meta(descriptors=(Descriptor(fd=1, path="/var/log/x", external="file[1b:2]",
                                         mode=0o100644),))
    r, w = os.pipe()
    try:
        with pytest.raises(UsageError, match="stdout was /var/log/x"):
            check_stdio(meta, (r, w, w))
        fd = os.open(log, os.O_WRONLY)
        check_stdio(meta, (r, fd, fd))          # the same kind and mode: fine
        os.close(fd)
    finally:
        os.close(r)
        os.close(w)


def test_relative_cgroup_from_the_mount_point():
    # pure v2: the hierarchy is /sys/fs/cgroup itself, nothing more to drop
    assert relative_cgroup("/sys/fs/cgroup/migrate-1a2b/c1", "/sys/fs/cgroup") == "/migrate-1a2b/c1"
    assert relative_cgroup("/sys/fs/cgroup/unified/m/c1", "/sys/fs/cgroup/unified") == "/m/c1"
    assert relative_cgroup("/sys/fs/cgroup/cpu,cpuacct/m/c1", "/sys/fs/cgroup/cpu,cpuacct") == "/m/c1"


def _plan(tmp_path, opts=None, meta=None, **kw):
    args = dict(images_dir="/i", work_dir="/w", criu_root="/r", cgroup_paths=CGROUPS, ns_fds={},
                notify_dir=None)
    args.update(kw)
    spec = args.pop("spec", None) or _spec(tmp_path)
    return plan_restore(spec, meta or _meta(), opts or RestoreOptions(id="x"), **args)


def test_plan_defaults(tmp_path):
    from migrate.criu_rpc import LogLevel

    opts = _plan(tmp_path)
    assert (opts.images_dir, opts.work_dir, opts.root) == ("/i", "/w", "/r")
    assert (opts.log_file, opts.log_level) == ("restore.log", LogLevel.DEBUG)
    assert opts.rst_sibling and opts.manage_cgroups
    assert opts.manage_cgroups_mode is None
    # runc's default CRIU configuration file, as runc 1.1 passes it
    assert opts.config_file == "/etc/criu/runc.conf"
    assert not (opts.tcp_established or opts.tcp_close or opts.ext_unix_sk or opts.shell_job
                or opts.file_locks or opts.auto_dedup or opts.lazy_pages or opts.leave_stopped
                or opts.orphan_pts_master)
    assert opts.join_ns == () and opts.inherit_fd == ()
    assert ("/dev/null", "/dev/null") in {(m.key, m.val) for m in opts.ext_mnt}


def test_every_flag_reaches_its_criu_option(tmp_path):
    from migrate.criu_rpc.options import CgroupMode

    opts = _plan(tmp_path, RestoreOptions(
        id="x", tcp_established=True, tcp_close=True, ext_unix_sk=True, shell_job=True,
        file_locks=True, manage_cgroups_mode=CgroupMode.SOFT, empty_ns=frozenset({"net"}),
        auto_dedup=True, lazy_pages=True, leave_stopped=True, lsm_profile="apparmor:p",
        lsm_mount_context="system_u:object_r:c:s0"))
    assert opts.tcp_established and opts.tcp_close and opts.ext_unix_sk and opts.shell_job
    assert opts.file_locks and opts.auto_dedup and opts.lazy_pages and opts.leave_stopped
    assert opts.manage_cgroups_mode is CgroupMode.SOFT
    assert set(opts.empty_ns) == {"net"}
    assert (opts.lsm_profile, opts.lsm_mount_context) == ("apparmor:p", "system_u:object_r:c:s0")


@pytest.mark.parametrize("annotation,config_file", [
    (None, "/etc/criu/runc.conf"), ("", None), ("/etc/criu/mine.conf", "/etc/criu/mine.conf")])
def test_criu_config_file_from_the_annotation(tmp_path, annotation, config_file):
    data = oci.default_spec()
    if annotation is not None:
        data["annotations"] = {"org.criu.config": annotation}
    (tmp_path / "rootfs").mkdir()
    spec = oci.parse_config(data, bundle=str(tmp_path))
    assert _plan(tmp_path, spec=spec).config_file == config_file


def test_a_checkpointed_terminal_asks_for_the_new_master(tmp_path):
    assert _plan(tmp_path, meta=_meta(terminal=True)).orphan_pts_master
    assert not _plan(tmp_path, meta=_meta(terminal=False)).orphan_pts_master


def test_cg_root_skips_named_hierarchies_and_uses_mount_points(tmp_path):
    opts = _plan(tmp_path, cgroup_mounts={"cpu": "/sys/fs/cgroup/cpu",
                                         "": "/sys/fs/cgroup/unified"})
    assert {(r.ctrl, r.path) for r in opts.cg_root} == {
        ("cpu", "/migrate/new"), ("memory", "/migrate/new"), (None, "/migrate/new")}


def test_pure_v2_cgroup_mount_is_keyed_by_its_destination(tmp_path):
    spec = _spec(tmp_path, mounts=[{"destination": "/sys/fs/cgroup", "type": "cgroup2",
                                    "source": "cgroup"}])
    opts = _plan(tmp_path, spec=spec, cgroup_paths={"": "/sys/fs/cgroup/migrate-1/c"},
                 cgroup_mounts={"": "/sys/fs/cgroup"})
    assert ("/sys/fs/cgroup", "/sys/fs/cgroup/migrate-1/c") in {(m.key, m.val)
                                                                for m in opts.ext_mnt}
    assert [(r.ctrl, r.path) for r in opts.cg_root] == [(None, "/migrate-1/c")]


def test_v1_cgroup_mount_gives_one_key_per_hierarchy(tmp_path):
    spec = _spec(tmp_path)
    keys = {(m.key, m.val) for m in _plan(tmp_path, spec=spec).ext_mnt}
    assert ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/migrate/new") in keys
    assert ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified/migrate/new") in keys


def test_network_and_pid_namespaces_are_inherited_ipc_and_uts_joined(tmp_path):
    spec = _spec(tmp_path, namespaces=[{"type": "pid", "path": "/proc/7/ns/pid"},
                                       {"type": "mount"},
                                       {"type": "network", "path": "/proc/7/ns/net"},
                                       {"type": "uts", "path": "/proc/7/ns/uts"}])
    meta = _meta(external_keys={"network": "extRootNetNS", "pid": "extRootPidNS"})
    opts = _plan(tmp_path, spec=spec, meta=meta, ns_fds={"network": 30, "pid": 31})
    assert {(i.key, i.fd) for i in opts.inherit_fd} == {("extRootNetNS", 30),
                                                         ("extRootPidNS", 31)}
    assert [(j.ns, j.ns_file) for j in opts.join_ns] == [("uts", "/proc/7/ns/uts")]


def test_a_proxied_notify_socket_needs_one_at_restore(tmp_path):
    meta = _meta(mounts=(ExternalMount(mountpoint="/run/notify", kind="notify"),))
    with pytest.raises(UsageError, match="NOTIFY_SOCKET"):
        _plan(tmp_path, meta=meta)
    opts = _plan(tmp_path, meta=meta, notify_dir="/state/notify")
    assert ("/run/notify", "/state/notify") in {(m.key, m.val) for m in opts.ext_mnt}


def test_an_image_key_the_bundle_cannot_provide_is_named(tmp_path):
    with pytest.raises(NotFoundError, match="/srv/data"):
        _plan(tmp_path, image_keys={"/srv/data": "/srv/data"})
    src = tmp_path / "src"
    src.mkdir()
    spec = _spec(tmp_path, mounts=[{"destination": "/srv/data", "type": "bind",
                                    "source": str(src), "options": ["bind"]}])
    opts = _plan(tmp_path, spec=spec, image_keys={"/srv/data": "/srv/data"})
    assert ("/srv/data", str(src)) in {(m.key, m.val) for m in opts.ext_mnt}


def test_resolved_destinations_key_bind_mounts_by_their_real_path(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    spec = _spec(tmp_path, mounts=[{"destination": "/link/data", "type": "bind",
                                    "source": "src", "options": ["rbind"]}])
    opts = _plan(tmp_path, RestoreOptions(id="x", bundle=str(tmp_path)), spec=spec,
                 resolved={"/link/data": "/real/data"})
    keys = {(m.key, m.val) for m in opts.ext_mnt}
    # relative sources are in --bundle; the config's path is kept as a key too
    assert {("/real/data", str(src)), ("/link/data", str(src))} <= keys


def test_stdio_goes_through_the_copies(tmp_path):
    meta = _meta(descriptors=(Descriptor(fd=0, path="/dev/null", external=None),
                              Descriptor(fd=1, path="pipe:[5]", external="pipe:[5]"),
                              Descriptor(fd=2, path="pipe:[5]", external="pipe:[5]")))
    opts = _plan(tmp_path, meta=meta, stdio_fds=(20, 21, 22))
    assert [(i.key, i.fd) for i in opts.inherit_fd] == [("pipe:[5]", 21), ("pipe:[5]", 22)]


@pytest.mark.parametrize("asked, dumped_empty, tcp, skip", [
    (frozenset(), ("net",), {}, True),                      # our checkpoint of a plain netns
    (frozenset({"net"}), (), {}, True),                     # --empty-ns network (runc's)
    (frozenset(), ("net",), {"tcp_established": True}, False),
    (frozenset(), ("net",), {"tcp_close": True}, False),
    (frozenset(), (), {}, False),                           # the netns comes from its image
])
def test_network_lock_is_skipped_only_for_a_new_netns_without_tcp(tmp_path, asked,
                                                                  dumped_empty, tcp, skip):
    """CRIU locks a namespace it makes empty and unlocks it before the
    tasks resume (iptables-restore several times); with no TCP connection
    restored that guards nothing. A namespace restored from its image keeps
    CRIU's default: its rules may hold the dump's lock."""
    from migrate.criu_rpc import NetworkLock

    opts = _plan(tmp_path, RestoreOptions(id="x", empty_ns=asked, **tcp),
                 _meta(empty_ns=dumped_empty))
    assert opts.network_lock is (NetworkLock.SKIP if skip else None)


def test_masked_tmpfs_keys_map_to_the_fresh_tmpfs(tmp_path):
    from migrate.checkpoint.externals import MASKED_TMPFS

    meta = _meta(mounts=(ExternalMount(mountpoint="/proc/acpi", kind=MASKED_TMPFS,
                                       detail="ro,relatime ro"),
                         ExternalMount(mountpoint="/sys/firmware", kind=MASKED_TMPFS,
                                       detail="ro,relatime ro")))
    keys = {"migrate-masked:/proc/acpi": "/proc/acpi",
            "migrate-masked:/sys/firmware": "/sys/firmware"}
    with pytest.raises(UsageError, match="/proc/acpi"):
        _plan(tmp_path, meta=meta, image_keys=keys)
    opts = _plan(tmp_path, meta=meta, image_keys=keys,
                 masked_tmpfs={"ro,relatime ro": "/state/masked-tmpfs-0"})
    assert {(m.key, m.val) for m in opts.ext_mnt} >= {
        ("migrate-masked:/proc/acpi", "/state/masked-tmpfs-0"),
        ("migrate-masked:/sys/firmware", "/state/masked-tmpfs-0")}


def test_read_only_tmpfs_keys_map_to_the_tmpfs_made_for_them(tmp_path):
    from migrate.checkpoint.externals import RO_TMPFS

    detail = '{"entries": [["cpu", "dir", ""]], "options": "ro", "super": "rw,mode=755"}'
    meta = _meta(mounts=(ExternalMount(mountpoint="/sys/fs/cgroup", kind=RO_TMPFS,
                                       detail=detail),))
    keys = {"migrate-tmpfs:/sys/fs/cgroup": "/sys/fs/cgroup"}
    with pytest.raises(UsageError, match="/sys/fs/cgroup"):
        _plan(tmp_path, meta=meta, image_keys=keys)
    opts = _plan(tmp_path, meta=meta, image_keys=keys, masked_tmpfs={detail: "/state/t-0"})
    assert ("migrate-tmpfs:/sys/fs/cgroup", "/state/t-0") in {(m.key, m.val) for m in opts.ext_mnt}


def test_read_only_tmpfs_tree_is_made_from_plain_names_only(tmp_path):
    from migrate.checkpoint.restore_prep import _make_tree

    _make_tree(str(tmp_path), [["cpu", "dir", ""], ["cpuacct", "symlink", "cpu"]])
    assert (tmp_path / "cpu").is_dir() and (tmp_path / "cpuacct").readlink().name == "cpu"
    for bad in (["../x", "dir", ""], ["..", "dir", ""], ["a", "file", ""]):
        with pytest.raises(OSError):
            _make_tree(str(tmp_path), [bad])


# What the init was handed (fds 0-2), then a host file found on its fd 0 at
# checkpoint time that was not (it got it later).
HANDED_AND_FOUND = (Descriptor(fd=0, path="/dev/null", external=None, mode=0o20666),
                    Descriptor(fd=1, path="/run/out", external="file[1b:21]", mode=0o100644),
                    Descriptor(fd=2, path="/run/out", external="file[1b:21]", mode=0o100644),
                    Descriptor(fd=0, path="/var/log/new", external="file[1b:40]",
                               mode=0o100644))


def test_descriptors_json_lists_what_fds_0_to_2_were_handed(tmp_path):
    """runc reads descriptors.json by index: the files found later stay in
    migrate.json only."""
    meta = _meta(descriptors=HANDED_AND_FOUND)
    save_meta(str(tmp_path), meta)
    assert (tmp_path / "descriptors.json").read_text() == \
        '["/dev/null", "/run/out", "/run/out"]'
    assert load_meta(str(tmp_path)).descriptors == HANDED_AND_FOUND


def test_every_external_key_maps_onto_its_stdio(tmp_path):
    """By key, whatever fd the dump has the file on; a key CRIU finds
    nowhere in the images costs nothing."""
    opts = _plan(tmp_path, meta=_meta(descriptors=HANDED_AND_FOUND), stdio_fds=(20, 21, 22))
    assert [(i.key, i.fd) for i in opts.inherit_fd] == [
        ("file[1b:21]", 21), ("file[1b:21]", 22), ("file[1b:40]", 20)]


def test_stdio_kind_is_checked_for_what_was_handed(tmp_path):
    """The file found on fd 0 later is no reason to refuse /dev/null there."""
    import os

    from migrate.checkpoint.restore_plan import check_stdio

    log = tmp_path / "log"
    log.write_text("")
    os.chmod(log, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    fd = os.open(log, os.O_WRONLY)
    try:
        check_stdio(_meta(descriptors=HANDED_AND_FOUND), (null, fd, fd))
    finally:
        os.close(fd)
        os.close(null)


def test_restored_stdio_records_our_files_where_criu_used_them():
    from migrate.checkpoint.restore_plan import restored_stdio

    def identity(fd, role):
        return {"fd": role, "path": f"/ours/{fd}", "mnt_id": 30, "inode": fd, "mode": 0o100644}

    meta = _meta(descriptors=(Descriptor(fd=0, path="/dev/null", external=None, mode=0o20666),
                              Descriptor(fd=1, path="pipe:[5]", external="pipe:[5]"),
                              Descriptor(fd=2, path="/dev/pts/0", external=None, mode=0o20620)))
    assert restored_stdio(meta, (20, 21, 22), identity) == [
        {"fd": 0, "path": "/dev/null", "mnt_id": None, "inode": 0, "mode": 0o20666},
        {"fd": 1, "path": "/ours/21", "mnt_id": 30, "inode": 21, "mode": 0o100644},
        {"fd": 2, "path": "/dev/pts/0", "mnt_id": None, "inode": 0, "mode": 0o20620}]
    # a file found on fd 0 at checkpoint time came back through our fd 0
    assert restored_stdio(_meta(descriptors=HANDED_AND_FOUND), (20, 21, 22),
                          identity)[0]["path"] == "/ours/20"
    # runc's checkpoint of a closed fd, or one with fewer entries
    assert restored_stdio(_meta(descriptors=()), (20, 21, 22), identity)[2]["path"] == "/dev/null"
