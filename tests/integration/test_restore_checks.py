"""Clear failures instead of silent wrong results: a page server nobody
listens on, a bundle whose shape differs from the checkpoint, a corrupt
descriptors.json; and our parent cgroup goes with the last container."""

import glob
import os
import socket

import pytest

pytestmark = pytest.mark.requires("root", "busybox", "criu", "iptables")

LOOP = "while true; do sleep 0.1; done"


@pytest.fixture
def checkpointed(runtime, bundle, cid, tmp_path):
    bundle.config["root"]["readonly"] = False
    bundle.sh(LOOP)
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    images = str(tmp_path / "img")
    runtime("checkpoint", "--image-path", images, cid).check()
    return images


def _nothing_left(runtime, cid):
    assert runtime("state", cid).returncode != 0
    assert not os.path.exists(os.path.join(runtime.root, cid))
    assert not os.path.exists(runtime.cgroup_dir("memory", cid))


def _restore(runtime, bundle, images, cid):
    return runtime("restore", "-d", "--image-path", images, "--bundle", bundle.path, cid)


def test_page_server_nobody_listens_on(runtime, bundle, cid, tmp_path):
    bundle.sh(LOOP)
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    with socket.socket() as s:      # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = runtime("checkpoint", "--page-server", f"127.0.0.1:{port}", "--image-path",
                  str(tmp_path / "img"), cid)
    # CRIU's own error lines are quoted first (as runc does); the summary,
    # the last line, names the connection instead of CRIU's "Unable to detach".
    summary = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 1, res.stderr
    assert f"cannot connect to the page server at 127.0.0.1:{port}" in summary
    assert "Unable to detach" not in summary
    assert runtime.state(cid)["status"] == "running"


def test_bundle_without_the_network_namespace(runtime, bundle, cid, checkpointed):
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"]
                                            if n["type"] != "network"]
    bundle.write()
    res = _restore(runtime, bundle, checkpointed, cid)
    assert res.returncode == 2, res.stderr
    assert "own network namespace but config.json has none" in res.stderr
    _nothing_left(runtime, cid)


def test_bundle_with_an_extra_mount(runtime, bundle, cid, checkpointed):
    os.makedirs(os.path.join(bundle.rootfs, "extra"), exist_ok=True)
    bundle.config["mounts"].append({"destination": "/extra", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["nosuid"]})
    bundle.write()
    res = _restore(runtime, bundle, checkpointed, cid)
    assert res.returncode == 2, res.stderr
    assert "config.json mounts /extra" in res.stderr
    _nothing_left(runtime, cid)


@pytest.mark.parametrize("content", [b"[\"/dev/null\", ", b"{\"a\": 1}", b"\xff\xfe"])
def test_corrupt_descriptors_json(runtime, bundle, cid, checkpointed, content):
    with open(os.path.join(checkpointed, "descriptors.json"), "wb") as f:
        f.write(content)
    res = _restore(runtime, bundle, checkpointed, cid)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "descriptors.json is corrupt" in res.stderr
    _nothing_left(runtime, cid)


def test_parent_cgroup_goes_with_the_last_container(runtime, bundle, cid):
    bundle.sh(LOOP)
    for c in (cid, cid + "-2"):
        runtime("run", "-d", "--bundle", bundle.path, c).check()
    parent = os.path.dirname(runtime.cgroup_dir("memory", cid))
    tag = os.path.basename(parent)
    assert len(glob.glob(f"/sys/fs/cgroup/*/{tag}")) > 1
    runtime("delete", "--force", cid).check()
    assert os.path.isdir(parent), "removed while a container is still under it"
    runtime("delete", "--force", cid + "-2").check()
    assert glob.glob(f"/sys/fs/cgroup/*/{tag}") == []
