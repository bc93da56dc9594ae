"""Does a bundle fit a checkpoint: namespaces from CRIU's image names (no CRIU)."""

import pytest

from migrate import oci
from migrate.checkpoint.compat import _absolute, check_bundle_fits
from migrate.checkpoint.metadata import load_meta
from migrate.errors import UsageError


def _spec(tmp_path, drop=(), join=()):
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    data = oci.default_spec()
    data["linux"]["namespaces"] = [
        {**n, **({"path": "/proc/1/ns/net"} if n["type"] in join else {})}
        for n in data["linux"]["namespaces"] if n["type"] not in drop]
    return oci.parse_config(data, bundle=str(tmp_path))


def _images(tmp_path, *names, external_net=False):
    from pycriu import images

    d = tmp_path / "img"
    d.mkdir()
    for n in ("inventory.img", *names):
        if n.startswith("netns-"):
            # CRIU writes a netns image for a joined (external) namespace
            # too, with only its key in it.
            entry = {"ext_key": "extRootNetNS"} if external_net else {}
            with open(d / n, "wb") as f:
                images.dump({"magic": "NETNS", "entries": [entry]}, f)
        else:
            (d / n).write_bytes(b"")
    return str(d)


def test_same_shape_fits(tmp_path):
    check_bundle_fits(_images(tmp_path, "netns-10.img", "utsns-12.img", "ipcns-var-11.img"),
                      _spec(tmp_path))


@pytest.mark.parametrize("drop, join, message", [
    (("network",), (), "own network namespace but config.json has none"),
    ((), ("network",), "own network namespace but config.json joins one by path"),
])
def test_a_dumped_namespace_config_lacks(tmp_path, drop, join, message):
    images = _images(tmp_path, "netns-10.img", "utsns-12.img", "ipcns-var-11.img")
    with pytest.raises(UsageError, match=message):
        check_bundle_fits(images, _spec(tmp_path, drop=drop, join=join))


def test_a_joined_network_namespace_may_be_another_pods(tmp_path):
    """A pod member: its network and IPC namespaces were joined by path at
    checkpoint time and are joined by (another) path on restore."""
    images = _images(tmp_path, "netns-10.img", "utsns-12.img", "ipcns-var-11.img",
                     external_net=True)
    check_bundle_fits(images, _spec(tmp_path, join=("network", "ipc")))


def test_a_new_namespace_the_checkpoint_lacked(tmp_path):
    """runc's checkpoint of a container whose network namespace the runtime
    makes anew has no netns image: a new namespace is what restore makes."""
    check_bundle_fits(_images(tmp_path, "utsns-12.img", "ipcns-var-11.img"), _spec(tmp_path))


def _dumped_empty(tmp_path, root_net, task_net):
    """A checkpoint whose network namespace was dumped empty (empty_ns): no
    netns image, only the root task's ids against CRIU's own (inventory)."""
    from pycriu import images

    d = tmp_path / "img"
    d.mkdir()
    ids = {"vm_id": 1, "files_id": 1, "fs_id": 1, "sighand_id": 1}
    for name, magic, entry in (
            ("pstree.img", "PSTREE", {"pid": 7, "ppid": 0, "pgid": 7, "sid": 7}),
            ("inventory.img", "INVENTORY", {"img_version": 2, "root_ids": {**ids, "net_ns_id": root_net},
                                            "lsmtype": "NO_LSM", "dump_uptime": 1 << 40}),
            ("ids-7.img", "IDS", {**ids, "net_ns_id": task_net})):
        with open(d / name, "wb") as f:
            images.dump({"magic": magic, "entries": [entry]}, f)
    return str(d)


def test_a_network_namespace_dumped_empty_is_its_own(tmp_path):
    images = _dumped_empty(tmp_path, root_net=4, task_net=9)
    with pytest.raises(UsageError, match="own network namespace but config.json has none"):
        check_bundle_fits(images, _spec(tmp_path, drop=("network",)))


def test_the_hosts_network_namespace_fits_a_host_network_bundle(tmp_path):
    check_bundle_fits(_dumped_empty(tmp_path, root_net=4, task_net=4),
                      _spec(tmp_path, drop=("network",)))


def test_unreadable_ids_are_not_judged(tmp_path):
    images = _dumped_empty(tmp_path, root_net=4, task_net=9)
    with open(f"{images}/ids-7.img", "r+b") as f:
        f.truncate(10)
    check_bundle_fits(images, _spec(tmp_path, drop=("network",)))


def test_mountpoint_spellings():
    assert [_absolute(p) for p in ("./sys", "/sys", ".", "/", "./.hidden", "/a/../b")] == \
        ["/sys", "/sys", "/", "/", "/.hidden", "/b"]


@pytest.mark.parametrize("content", ['["/dev/null", ', '{"a": 1}', '[1, 2]', '[""]'])
def test_corrupt_descriptors_json(tmp_path, content):
    (tmp_path / "descriptors.json").write_text(content)
    with pytest.raises(UsageError, match="descriptors.json is corrupt"):
        load_meta(str(tmp_path))
