"""exec's fast path (runtime/spawn.py, nsexec/spawn.c): what the Python
init did for an exec'd process, now done in C in a vfork child, checked from
inside the process."""

import json
import os
import shlex
import signal
import subprocess

import pytest

pytestmark = pytest.mark.requires("root", "busybox")


@pytest.fixture
def running(runtime, bundle, cid):
    bundle.sh("sleep 300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    return cid


def _process_file(tmp_path, **process) -> str:
    path = tmp_path / "process.json"
    path.write_text(json.dumps({"cwd": "/", "user": {"uid": 0, "gid": 0},
                                "env": ["PATH=/bin:/sbin"], **process}))
    return str(path)


def test_home_comes_from_the_containers_passwd(runtime, running):
    out = runtime("exec", running, "sh", "-c", "echo $HOME").check().stdout
    assert out == "/root\n"
    out = runtime("exec", "-u", "1000:1000", running, "sh", "-c", "echo $HOME; id -u").check()
    assert out.stdout == "/home/tester\n1000\n"
    out = runtime("exec", "-u", "4321", running, "sh", "-c", "echo $HOME").check().stdout
    assert out == "/\n"                       # not in passwd
    out = runtime("exec", "-e", "HOME=/x", running, "sh", "-c", "echo $HOME").check().stdout
    assert out == "/x\n"


def test_limits_umask_caps_and_no_new_privs(runtime, running, tmp_path):
    caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    proc = _process_file(
        tmp_path, args=["sh", "-c", "ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj; umask; "
                                    "grep -E '^(Cap|NoNewPrivs)' /proc/self/status"],
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}],
        oomScoreAdj=500, noNewPrivileges=True,
        user={"uid": 1000, "gid": 1000, "umask": 0o027},
        capabilities={k: caps for k in ("bounding", "effective", "permitted", "inheritable",
                                        "ambient")})
    lines = runtime("exec", "--process", proc, running).check().stdout.splitlines()
    assert lines[:4] == ["100", "200", "500", "0027"]
    status = dict(line.split(":\t") for line in lines[4:])
    mask = f"{(1 << 5) | (1 << 10):016x}"       # CAP_KILL, CAP_NET_BIND_SERVICE
    assert {k: status[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == \
        dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), mask)
    assert status["NoNewPrivs"] == "1"


def test_only_preserved_fds_reach_the_process(runtime, running, tmp_path):
    keep, pid_file = tmp_path / "kept", tmp_path / "pid"
    keep.write_text("through fd 3\n")
    cmd = shlex.join([*runtime.argv, "--root", runtime.root, "exec", "-d", "--pid-file",
                      str(pid_file), "--preserve-fds", "1", running, "sleep", "30"])
    subprocess.run(["sh", "-c", f"exec 3<{shlex.quote(str(keep))} 4<&3; {cmd}"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)     # sleep keeps its stdio
    fds = f"/proc/{int(pid_file.read_text())}/fd"
    assert sorted(os.listdir(fds)) == ["0", "1", "2", "3"]
    assert os.readlink(f"{fds}/3") == str(keep)


def test_the_process_is_the_runtimes_child_in_the_containers_pid_namespace_and_cgroup(
        runtime, running):
    pid = runtime.state(running)["pid"]
    out = runtime("exec", running, "sh", "-c",
                  "readlink /proc/self/ns/pid; grep ^PPid: /proc/$$/status; "
                  "grep -E ':(pids|memory):' /proc/self/cgroup").check().stdout.splitlines()
    assert out[0] == os.readlink(f"/proc/{pid}/ns/pid")
    assert out[1].split() == ["PPid:", "0"]       # its parent, the runtime, is outside
    with open(f"/proc/{pid}/cgroup") as f:
        init = {l.split(":")[1]: l.split(":")[2] for l in f.read().splitlines()}
    for line in out[2:]:
        _, ctrl, path = line.split(":", 2)
        assert path == init[ctrl]


def test_exit_codes_and_signals(runtime, running):
    assert runtime("exec", running, "sh", "-c", "exit 42").returncode == 42
    res = runtime("exec", running, "sh", "-c", "kill -TERM $$")
    assert res.returncode == 128 + signal.SIGTERM


@pytest.mark.parametrize("argv,text", [
    (["no-such-binary"], 'exec: "no-such-binary": executable file not found in $PATH'),
    (["/no/such"], 'exec: "/no/such": no such file or directory'),
    (["/etc"], "exec /etc: Permission denied: is a directory"),
    (["/etc/passwd"], "exec /etc/passwd: Permission denied: not executable"),
    (["--cwd", "/nope", "true"], "cwd /nope: No such file or directory"),
])
def test_failures_are_one_line_and_exit_255(runtime, running, argv, text):
    flags = argv[:2] if argv[0].startswith("--") else []
    res = runtime("exec", *flags, running, *argv[len(flags):])
    assert res.returncode == 255, res
    assert res.stderr.strip().splitlines() == [f"migrate: container init failed: {text}"]
    # nothing left behind: only the init and the container's own processes
    ps = json.loads(runtime("ps", "--format", "json", running).check().stdout)
    assert len(ps) == 1
