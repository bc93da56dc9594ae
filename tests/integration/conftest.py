import json
import os
import subprocess
import uuid

import pytest

from runtime_helpers import Bundle, Runtime, build_rootfs, runtime_argv


@pytest.fixture(scope="session")
def bundle_template(tmp_path_factory):
    """One busybox rootfs and `spec` config per session; tests get copies."""
    if os.geteuid() != 0:
        pytest.skip("integration tests with containers need root")
    base = tmp_path_factory.mktemp("bundle-template")
    build_rootfs(str(base / "rootfs"))
    res = subprocess.run([*runtime_argv(), "spec", "--bundle", str(base)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    with open(base / "config.json") as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    return str(base), config


@pytest.fixture
def bundle(bundle_template, tmp_path) -> Bundle:
    base, config = bundle_template
    path = tmp_path / "bundle"
    path.mkdir()
    subprocess.run(["cp", "-a", os.path.join(base, "rootfs"), str(path)], check=True, timeout=60)
    return Bundle(str(path), config)


@pytest.fixture
def runtime():
    root = f"/run/migrate-test/{uuid.uuid4().hex[:10]}"
    rt = Runtime(root)
    yield rt
    rt.cleanup()


@pytest.fixture
def cid() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"

from conftest_netns import netns_hosts  # noqa: E402,F401  (two netns hosts for migration tests)
