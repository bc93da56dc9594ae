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

