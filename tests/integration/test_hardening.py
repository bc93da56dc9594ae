"""Hardening (issue 11): no endless exec, unlimited rlimits, and no way for a
process in the container to reach the runtime's executable or memory while
it joins the container."""

import os
import signal
import subprocess
import time

import pytest

from runtime_helpers import wait_for

pytestmark = pytest.mark.requires("root", "busybox")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("tty", [False, True], ids=["stdio", "tty"])
def test_exec_ends_on_sigterm_after_its_container_is_deleted(runtime, bundle, cid, tmp_path, tty):
    bundle.sh("sleep 300")
    runtime("run", "--detach", "--bundle", bundle.path, cid).check()
    out = open(tmp_path / "exec.out", "w+b")
    proc = subprocess.Popen([*runtime.argv, "--root", runtime.root, "exec",
                             *(["-t"] if tty else []), cid, "sleep", "301"],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "sleep 301" in runtime("exec", cid, "ps", "-o", "args").stdout,
                 what="the exec'd sleep")
        runtime("delete", "--force", cid).check()
        time.sleep(0.3)
        if proc.poll() is None:
            # Still here: it must not burn a CPU while it waits ...
            before = _cpu_seconds(proc.pid)
            time.sleep(1.0)
            assert _cpu_seconds(proc.pid) - before < 0.3
            # ... and SIGTERM must end it within a second.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pytest.fail("exec survived SIGTERM after its container was deleted")
        assert proc.returncode != 0
        out.seek(0)
        assert b"Traceback" not in out.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()


def test_unlimited_rlimits(runtime, bundle, cid):
    # 2**64-1 is rlim_t's RLIM_INFINITY, what engines send for "unlimited";
    # anything from 2**63 up cannot be finite for the kernel's signed checks.
    bundle.config["process"]["rlimits"] = [
        {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 2**64 - 1},
        {"type": "RLIMIT_FSIZE", "hard": 2**63, "soft": 2**63},
    ]
    bundle.sh("ulimit -c; ulimit -Hc; ulimit -f; ulimit -Hf")
    res = runtime("run", "--bundle", bundle.path, cid).check()
    assert res.stdout.split() == ["unlimited"] * 4, res.stdout
