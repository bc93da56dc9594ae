"""Every CRIU run is bounded: a restore from a truncated pages image (CRIU
loops logging "Advanced iov 0 bytes" forever) fails in bounded time, with a
message naming the limit and the log, a bounded log and nothing left."""

import glob
import os
import time

import pytest

from runtime_helpers import wait_for

pytestmark = pytest.mark.requires("root", "busybox", "criu", "iptables")

MAX_LOG = 128 << 20     # migrate.criu_rpc._swrk.DEFAULT_MAX_LOG_BYTES


def test_truncated_pages_image_fails_in_bounded_time(runtime, bundle, cid, tmp_path):
    bundle.config["root"]["readonly"] = False
    bundle.sh("ctrhelper memhold 16 /tmp/mem & while true; do sleep 0.1; done")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    wait_for(lambda: os.path.exists(os.path.join(bundle.rootfs, "tmp/mem")), what="memory")
    images = tmp_path / "img"
    runtime("checkpoint", "--image-path", str(images), cid).check()
    pages = max(glob.glob(str(images / "pages-*.img")), key=os.path.getsize)
    os.truncate(pages, 4096)
    started = time.monotonic()
    res = runtime("restore", "-d", "--image-path", str(images), "--bundle", bundle.path, cid,
                  timeout=300)
    took = time.monotonic() - started
    log = images / "restore.log"
    assert res.returncode == 1, res.stderr
    verdict = res.stderr.strip().splitlines()[-1]     # after CRIU's quoted errors, if any
    assert f"log {log} grew past 128 MiB" in verdict and "criu killed" in verdict
    assert took < 120, f"took {took:.0f} s"
    size = log.stat().st_size
    assert size < MAX_LOG + (64 << 20)
    time.sleep(1)
    assert log.stat().st_size == size, "something still writes the log"
    with open("/proc/self/mountinfo") as f:     # CRIU's cgroup yard, say
        assert not [line for line in f if line.split()[4].startswith(str(images) + "/")]
    assert runtime("state", cid).returncode != 0
    assert not os.path.exists(os.path.join(runtime.root, cid))
    assert not os.path.exists(runtime.cgroup_dir("memory", cid))
    print(f"truncated {os.path.basename(pages)}: failed after {took:.1f} s, log {size >> 20} MiB")
