"""runc's command-line behaviours that runc's own bats suite checks, on real containers:
update, events, kill/list/ps edge cases, run --keep, exec --cgroup/--ignore-paused,
frozen and shared cgroups, --debug lines and --no-pivot."""

import json
import os
import subprocess
import time
import uuid

import pytest

pytestmark = pytest.mark.requires("root", "busybox", "cgroup_v1")

CG = "/sys/fs/cgroup"


@pytest.fixture
def cgpath(runtime):
    """An absolute cgroupsPath below a parent of our own; removed afterwards
    (after the containers: this teardown runs before the runtime fixture's)."""
    parent = f"/migrate-rc-{uuid.uuid4().hex[:8]}"
    yield f"{parent}/ct"
    runtime.cleanup()
    for hierarchy in os.listdir(CG):
        for d in (f"{CG}/{hierarchy}{parent}/ct/sub", f"{CG}/{hierarchy}{parent}/ct",
                  f"{CG}/{hierarchy}{parent}"):
            try:
                os.rmdir(d)
            except OSError:
                pass


def _read(controller: str, path: str, name: str) -> str:
    with open(f"{CG}/{controller}{path}/{name}") as f:
        return f.read().strip()


def _run_detached(runtime, bundle, cid, cgpath, resources=None):
    bundle.config["linux"]["cgroupsPath"] = cgpath
    if resources is not None:
        bundle.config["linux"]["resources"] = {**bundle.config["linux"].get("resources", {}),
                                               **resources}
    bundle.sh("sleep 300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()


def test_update_flags_json_and_saved_state(runtime, bundle, cid, cgpath, tmp_path):
    _run_detached(runtime, bundle, cid, cgpath, {
        "memory": {"limit": 33554432, "reservation": 25165824},
        "cpu": {"shares": 100, "quota": 500000, "period": 1000000}, "pids": {"limit": 20}})
    runtime("update", cid, "--memory", "50M", "--cpu-period", "900000",
            "--pids-limit", "10").check()
    assert _read("memory", cgpath, "memory.limit_in_bytes") == str(50 << 20)
    assert _read("cpu", cgpath, "cpu.cfs_period_us") == "900000"
    assert _read("cpu", cgpath, "cpu.cfs_quota_us") == "500000"     # kept, as runc
    assert _read("pids", cgpath, "pids.max") == "10"
    runtime("update", cid, "--pids-limit", "-1").check()
    assert _read("pids", cgpath, "pids.max") == "max"
    doc = tmp_path / "resources.json"
    doc.write_text(json.dumps({"CPU": {"shares": 300}, "memory": {"limit": 0}}))
    with open(doc) as stdin:
        runtime("update", "-r", "-", cid, stdin=stdin).check()
    assert _read("cpu", cgpath, "cpu.shares") == "300"
    assert _read("memory", cgpath, "memory.limit_in_bytes") == str(50 << 20)   # 0: unchanged
    with open(os.path.join(runtime.root, cid, "state.json")) as f:
        saved = json.load(f)["config"]["linux"]["resources"]
    assert saved["cpu"] == {"shares": 300, "quota": 500000, "period": 900000}
    assert saved["memory"]["limit"] == 50 << 20 and saved["pids"] == {"limit": -1}
    # Unlimited memory lifts the swap limit too (memsw must stay >= memory).
    if os.path.exists(f"{CG}/memory{cgpath}/memory.memsw.limit_in_bytes"):
        runtime("update", cid, "--memory", "-1").check()
        assert _read("memory", cgpath, "memory.limit_in_bytes") == \
            _read("memory", cgpath, "memory.memsw.limit_in_bytes")


def test_update_refuses_bad_values_without_internal_errors(runtime, bundle, cid, cgpath,
                                                           tmp_path):
    _run_detached(runtime, bundle, cid, cgpath)
    for args in (["--memory", "lots"], ["--cpu-period", "-3"], ["--pids-limit", "x"]):
        res = runtime("update", cid, *args)
        assert res.returncode in (1, 2) and "internal error" not in res.stderr, res.stderr
    (tmp_path / "bad.json").write_text("{not json")
    bad = runtime("update", "-r", str(tmp_path / "bad.json"), cid)
    assert bad.returncode == 2 and "invalid JSON" in bad.stderr
    assert runtime("update", "--pids-limit", "5", "ghost-" + cid).returncode == 1


def test_update_keeps_a_paused_container_paused(runtime, bundle, cid, cgpath):
    _run_detached(runtime, bundle, cid, cgpath)
    runtime("pause", cid).check()
    runtime("update", "--pids-limit", "30", cid).check()
    assert runtime.status(cid) == "paused"
    assert _read("pids", cgpath, "pids.max") == "30"
    runtime("resume", cid).check()


def test_events_stats_and_stream(runtime, bundle, cid, cgpath, tmp_path):
    _run_detached(runtime, bundle, cid, cgpath, {"memory": {"limit": 33554432}})
    line = runtime("events", "--stats", cid).check().stdout.splitlines()[0]
    assert line.startswith(f'{{"type":"stats","id":"{cid}","data":{{')
    data = json.loads(line)["data"]
    assert data["memory"]["usage"]["limit"] == 33554432 and data["pids"]["current"] >= 1
    assert runtime("events", "--interval", "0s", cid).returncode != 0
    out = open(tmp_path / "events", "w+")
    proc = subprocess.Popen([*runtime.argv, "--root", runtime.root, "events", "--interval",
                             "100ms", cid], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (tmp_path / "events").read_text().count("\n") < 2:
            time.sleep(0.05)
        runtime("delete", "-f", cid).check()
        assert proc.wait(timeout=10) == 0     # the stream ends with the cgroup
    finally:
        proc.kill()
        proc.wait()
    events = [json.loads(l) for l in (tmp_path / "events").read_text().splitlines()]
    assert len(events) >= 2 and all(e["type"] == "stats" and e["id"] == cid for e in events)


def test_events_reports_oom(runtime, bundle, cid, cgpath, tmp_path):
    limits = {"memory": {"limit": 33554432, "swap": 33554432}}
    if not os.path.exists(f"{CG}/memory/memory.memsw.limit_in_bytes"):
        limits = {"memory": {"limit": 33554432}}
    _run_detached(runtime, bundle, cid, cgpath, limits)
    out = open(tmp_path / "events", "w+")
    proc = subprocess.Popen([*runtime.argv, "--root", runtime.root, "events", cid], stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        runtime("exec", "-d", cid, "sh", "-c", "x=$(dd if=/dev/urandom bs=1M count=100)").check()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "oom" not in (tmp_path / "events").read_text():
            time.sleep(0.1)
        runtime("delete", "-f", cid).check()
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert f'{{"type":"oom","id":"{cid}"}}' in (tmp_path / "events").read_text().splitlines()


def test_kill_all_with_signal_0_after_stop_and_ps(runtime, bundle, cid, cgpath):
    _run_detached(runtime, bundle, cid, cgpath)
    runtime("kill", cid, "0").check()                     # alive: nothing happens
    assert runtime.status(cid) == "running"
    runtime("kill", cid, "SIGKILL").check()
    assert runtime.wait_status(cid, "stopped") == "stopped"
    runtime("kill", "-a", cid, "0").check()               # runc: fine with --all
    assert runtime("kill", cid, "KILL").returncode == 1   # not without
    ps = runtime("ps", cid).check().stdout.splitlines()
    assert "PID" in ps[0] and len(ps) == 1
    assert runtime("ps", "-f", "json", cid).check().stdout.strip() == "null"   # runc's nil
    runtime("delete", cid).check()


def test_list_json_is_runcs_shape(runtime, bundle, cid):
    assert runtime("list", "--format", "json").check().stdout.strip() == "null"
    bundle.sh("sleep 300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    out = runtime("list", "--format", "json").check().stdout
    assert out.startswith(f'[{{"ociVersion":"') and ' ' not in out.split('"bundle"')[0]
    [doc] = json.loads(out)
    assert list(doc) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created",
                         "owner"]
    assert doc["rootfs"] == os.path.join(bundle.path, "rootfs")


def test_run_keep_leaves_the_stopped_container(runtime, bundle, cid, cgpath):
    bundle.config["linux"]["cgroupsPath"] = cgpath
    bundle.sh("exit 3")
    assert runtime("run", "--keep", "--bundle", bundle.path, cid).returncode == 3
    assert runtime.status(cid) == "stopped"
    assert os.path.isdir(f"{CG}/pids{cgpath}")
    runtime("delete", cid).check()
    assert runtime("state", cid).returncode != 0 and not os.path.isdir(f"{CG}/pids{cgpath}")


def test_exec_paused_cgroup_and_exit_codes(runtime, bundle, cid, cgpath, tmp_path):
    _run_detached(runtime, bundle, cid, cgpath)
    assert runtime("exec", cid, "sh", "-c", "exit 42").returncode == 42
    # A failure of exec itself is 255, as runc's (engines tell it from the
    # process's own code); still one line, never an internal error.
    res = runtime("exec", "--pid-file", "/nonexistent-dir/pid", cid, "true")
    assert res.returncode == 255 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert runtime("exec", cid, "no-such-binary").returncode == 255
    # --cgroup: below ours only, existing, known controllers
    res = runtime("exec", "--cgroup", "..", cid, "true")
    assert res.returncode == 255 and " .. is not a sub cgroup path" in res.stderr
    res = runtime("exec", "--cgroup", "nonexistent", cid, "true")
    assert " adding pid " in res.stderr and "/nonexistent/cgroup.procs: no such file " in res.stderr
    assert "unknown controller " in runtime("exec", "--cgroup", "whaaat:/", cid, "true").stderr
    os.mkdir(f"{CG}/memory{cgpath}/sub")
    out = runtime("exec", "--cgroup", "memory:sub", cid, "cat", "/proc/self/cgroup").check().stdout
    assert f":memory:{cgpath}/sub" in out and f":pids:{cgpath}\n" in out
    # paused: refused, or waits for resume with --ignore-paused
    runtime("pause", cid).check()
    res = runtime("exec", cid, "echo", "ok")
    assert res.returncode == 255 and "cannot exec in a paused container" in res.stderr
    resumer = subprocess.Popen(["sh", "-c", f"sleep 1; {' '.join(runtime.argv)} --root "
                                f"{runtime.root} resume {cid}"])
    try:
        res = runtime("exec", "--ignore-paused", cid, "echo", "ok", timeout=30)
        assert res.returncode == 0 and res.stdout == "ok\n"
    finally:
        resumer.wait(timeout=30)


def test_frozen_cgroup_is_refused_and_kept(runtime, bundle, cid, cgpath):
    frozen = f"{CG}/freezer{cgpath}"
    os.makedirs(frozen)
    with open(f"{frozen}/freezer.state", "w") as f:
        f.write("FROZEN")
    bundle.config["linux"]["cgroupsPath"] = cgpath
    bundle.sh("true")
    for cmd in (["run", "-d"], ["create"]):
        res = runtime(*cmd, "--bundle", bundle.path, cid, timeout=30)
        assert res.returncode == 1 and "container's cgroup unexpectedly frozen" in res.stderr
        assert os.path.isdir(frozen)          # not ours: left alone
    with open(f"{frozen}/freezer.state", "w") as f:
        f.write("THAWED")


def test_shared_cgroup_warns(runtime, bundle, cid, cgpath):
    _run_detached(runtime, bundle, cid, cgpath)
    res = runtime("run", "-d", "--bundle", bundle.path, cid + "-2").check()
    assert "container's cgroup is not empty: 1 process(es) found" in res.stderr
    runtime("kill", cid + "-2", "KILL").check()


def test_debug_lines_in_logrus_shape(runtime, bundle, cid, tmp_path):
    bundle.set_args("/bin/echo", "Hello World")
    res = runtime("--debug", "run", "--bundle", bundle.path, cid).check()
    for text in ("level=debug", "nsexec container setup", "child process in init()",
                 "init: closing the pipe to signal completion"):
        assert text in res.stderr
    log = tmp_path / "log.json"
    res = runtime("--log", str(log), "--log-format", "json", "--debug", "run", "--bundle",
                  bundle.path, cid + "-j").check()
    assert "level=debug" not in res.stderr
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert {"level": "debug", "msg": "child process in init()"}.items() <= lines[1].items()
    assert '"level":"debug"' in log.read_text()


def test_no_pivot_does_not_expose_the_host_proc(runtime, bundle, cid):
    caps = bundle.config["process"]["capabilities"]
    for kind in ("bounding", "permitted"):
        caps[kind] = sorted(set(caps[kind]) | {"CAP_SETFCAP"})
    bundle.set_args("unshare", "-mrpf", "sh", "-euxc",
                    "mount -t proc none /proc && echo h > /proc/sysrq-trigger")
    res = runtime("run", "--no-pivot", "--bundle", bundle.path, cid)
    assert res.returncode == 1 and "mount: permission denied" in res.stderr, res.stderr
