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


def _interpreter_copy(tmp_path, entry):
    """A private copy of the runtime's interpreter, set up as a virtualenv
    sharing the real one's packages: the attack below must never be aimed
    at the real interpreter. ``entry``: "launcher" runs the compiled
    `migrate` (which protects the interpreter itself), "script" the
    `migrate-py` entry script (Python re-executes itself protected)."""
    import hashlib
    import shutil

    from runtime_helpers import runtime_argv

    launcher, script = _entry_points(runtime_argv()[0])
    with open(script, "rb") as f:
        shebang = f.readline()
        rest = f.read()
    venv_python = shebang[2:].decode().split()[0]
    venv = os.path.dirname(os.path.dirname(venv_python))
    real = os.path.realpath(venv_python)
    copy = tmp_path / "py"
    (copy / "bin").mkdir(parents=True)
    shutil.copy2(real, copy / "bin" / "python3")
    shutil.copy2(os.path.join(venv, "pyvenv.cfg"), copy / "pyvenv.cfg")
    os.symlink(os.path.join(venv, "lib"), copy / "lib")
    exe = str(copy / "bin" / "python3")
    # The launcher runs the script beside it with the script's interpreter:
    # copies of both, the script naming the copied interpreter.
    (copy / "bin" / "migrate-py").write_bytes(f"#!{exe}\n".encode() + rest)
    (copy / "bin" / "migrate-py").chmod(0o755)
    shutil.copy2(launcher, copy / "bin" / "migrate")

    def digest():
        with open(exe, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    if entry == "launcher":
        return [str(copy / "bin" / "migrate")], digest
    return [exe, str(copy / "bin" / "migrate-py")], digest


def _entry_points(runtime: str) -> tuple[str, str]:
    """(launcher, entry script) of the installed runtime."""
    bindir = os.path.dirname(runtime)
    return os.path.join(bindir, "migrate"), os.path.join(bindir, "migrate-py")


@pytest.mark.requires("python_runtime")
@pytest.mark.parametrize("attacker", ["init", "exec"])
@pytest.mark.parametrize("guard", ["overlay", "memfd"])
@pytest.mark.parametrize("entry", ["launcher", "script"])
def test_joining_processes_out_of_reach_with_cap_sys_ptrace(bundle, tmp_path, guard, attacker,
                                                            entry):
    """CVE-2019-5736 with CAP_SYS_PTRACE in the container: a process inside
    (the container's init, or an exec'd one) watches /proc for the runtime's
    forks joining the container (exec's process) and tries to reopen their
    /proc/PID/exe for writing, read their environ and open their mem.

    The runtime runs from a private copy of the interpreter: if the attack
    worked it would corrupt the copy, never the real one."""
    import uuid

    from runtime_helpers import Runtime

    argv, digest = _interpreter_copy(tmp_path, entry)
    before = digest()
    rt = Runtime(f"/run/migrate-test/{uuid.uuid4().hex[:10]}", argv)
    cid = f"t-{uuid.uuid4().hex[:8]}"
    secret = f"HARDENA_SECRET_{uuid.uuid4().hex}"
    env = {**os.environ, "SECRET_FOR_THE_TEST": secret, "MIGRATE_EXE_GUARD": guard}
    proc = bundle.config["process"]
    for kind in ("bounding", "effective", "permitted"):
        proc["capabilities"][kind] = sorted(set(proc["capabilities"][kind]) | {"CAP_SYS_PTRACE"})
    bundle.config["root"]["readonly"] = False     # the watcher reports in /var
    watch = ["ctrhelper", "exewatch", "30", secret, "/var/watch.out"]
    if attacker == "init":
        bundle.set_args(*watch)
    else:
        bundle.set_args("sleep", "300")
    out = os.path.join(bundle.rootfs, "var", "watch.out")
    try:
        rt("run", "--detach", "--bundle", bundle.path, cid, env=env).check()
        if attacker == "exec":
            rt("exec", "--detach", cid, *watch, env=env).check()
        wait_for(lambda: os.path.exists(out), what="the watcher")
        for i in range(6):
            rt("exec", *(["--detach"] if i % 2 else []), cid, "sleep", "0.2", env=env).check()
        # Give the watcher a last look at the detached ones (Text file busy
        # ends when their runtime exits), then stop it.
        time.sleep(1.5)
        open(os.path.join(bundle.rootfs, "var", "watch.stop"), "w").close()
        wait_for(lambda: open(out).read().endswith("end\n"), timeout=20, what="the watcher's end")
        lines = open(out).read().splitlines()
    finally:
        rt.cleanup()
    seen = [l for l in lines if l.startswith("seen ")]
    denied = [l for l in lines if l.startswith("denied ")]
    exe = [l.split() for l in lines if l.startswith("exe ")]
    # The watcher caught the runtime's forks (else this proves nothing) ...
    assert seen or denied, lines
    for line in seen:
        target = line.split(maxsplit=2)[2:]     # empty: it exited before readlink
        if target:
            assert ("python" in target[0]) if guard == "overlay" else ("memfd:" in target[0]), line
    # ... never wrote their executable: EROFS (overlay), a sealed memfd (EPERM),
    for _, pid, opened, written in exe:
        assert opened != "open=0" or written != "write=0", lines
    assert digest() == before
    # ... never found the runtime's environment in their environ,
    assert not [l for l in lines if l.startswith("environ ") and l.endswith("secret=1")], lines
    if attacker == "init":
        # ... and, fenced off by Landlock, could not open their exe or mem.
        assert denied and not seen, lines
        assert not [l for l in lines if l.startswith("mem ") and l.endswith(" 0")], lines
    # An exec'd process stays outside the fence (so `exec gdb -p 1` works):
    # it can still open the mem of a later exec's fork (exe_guard.py).


def test_scrub_environ_zeroes_proc_environ_and_keeps_os_environ():
    import sys

    code = ("import os; from migrate.runtime.exe_guard import scrub_environ; scrub_environ(); "
            "print(open('/proc/self/environ','rb').read().strip(b'\\0') == b'', "
            "os.environ['HARDENA_CHECK'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "HARDENA_CHECK": "kept"}, timeout=60, cwd="/")
    assert res.stdout.split() == ["True", "kept"], res.stderr
