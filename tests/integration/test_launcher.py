"""The compiled `migrate` launcher (nsexec/launcher.c, issue 16): the
commands that join a container start Python once, from the protected view
of the interpreter; the `migrate-py` entry script alone re-executes itself
into the same view (two starts). With the package installed in a
virtualenv (or installed editable there), hot commands start without
`site` and without the entry script."""

import ast
import glob
import os
import re
import subprocess
import sys

import pytest

from runtime_helpers import runtime_argv, wait_for

pytestmark = pytest.mark.requires("root", "busybox", "python_runtime")


def _entries():
    bindir = os.path.dirname(runtime_argv()[0])
    return os.path.join(bindir, "migrate"), os.path.join(bindir, "migrate-py")


def _fast_site():
    """What the launcher hands over for a start without `site`: the
    virtualenv's site-packages, holding the package itself or an editable
    install's finder, and for the latter the directory above the package
    (launcher.c venv_site_packages, editable_parent); None for a system
    install."""
    prefix = os.path.dirname(os.path.dirname(_entries()[0]))
    sites = glob.glob(os.path.join(prefix, "lib", "python3.*", "site-packages"))
    if not os.path.exists(os.path.join(prefix, "pyvenv.cfg")) or len(sites) != 1:
        return None
    if os.path.exists(os.path.join(sites[0], "migrate", "cli", "main.py")):
        return sites[0], None
    finders = glob.glob(os.path.join(sites[0], "__editable___migrate_*_finder.py"))
    if len(finders) != 1:
        return None
    with open(finders[0]) as f:
        mapping = ast.literal_eval(re.search(r"^MAPPING[^=]*=\s*(\{.*\})$", f.read(), re.M)[1])
    return sites[0], os.path.dirname(mapping["migrate"])


def _launcher_argv_head(script):
    """What the launcher passes the interpreter before the command's own argv."""
    fast = _fast_site()
    if fast is None:
        return [script]
    site, parent = fast
    if parent is None:
        return ["-S", "-P", "-c", "import sys; sys.path.append(sys.argv.pop(1)); "
                "from migrate.cli.main import program; program()", site]
    return ["-S", "-P", "-c", "import sys; sys.path += sys.argv[1:3]; del sys.argv[1:3]; "
            "from migrate.cli.main import program; program()", site, parent]


def _exec_argv(process):
    """How the runtime of a running `exec` was started: its argv and where
    /proc says its executable is."""
    with open(f"/proc/{process.pid}/cmdline", "rb") as f:
        argv = f.read().rstrip(b"\0").decode().split("\0")
    return argv, os.readlink(f"/proc/{process.pid}/exe")


@pytest.mark.parametrize("entry,flags", [
    ("launcher", ["--root", "{root}"]),
    ("launcher", ["--root={root}", "--debug", "--log", "{log}", "--log-format=json"]),
    ("script", ["--root", "{root}"]),
])
def test_exec_runs_from_the_protected_interpreter(runtime, bundle, cid, tmp_path, entry, flags):
    launcher, script = _entries()
    bundle.set_args("sleep", "300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    flags = [f.format(root=runtime.root, log=tmp_path / "log") for f in flags]
    proc = subprocess.Popen([launcher if entry == "launcher" else script, *flags,
                             "exec", cid, "sleep", "30"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        # The runtime waits for its exec'd sleep: by then it is Python.
        wait_for(lambda: "sleep 30" in runtime("exec", cid, "ps", "-o", "args").stdout,
                 what="the exec'd sleep")
        argv, exe = _exec_argv(proc)
        # A detached overlay names the interpreter from its own root; the
        # host's interpreter (what an unprotected start shows) is elsewhere.
        assert os.path.dirname(exe) == "/" and "python" in exe, exe
        # One start (the script right after the interpreter), or the
        # script's own re-execution (-S: see cli/main.py).
        want = ["-S", script] if entry == "script" else _launcher_argv_head(script)
        assert argv[1:1 + len(want)] == want, argv
    finally:
        proc.terminate()
        proc.wait(10)


def test_other_commands_answer_as_the_script_does(runtime, bundle, cid):
    launcher, script = _entries()
    bundle.set_args("sleep", "300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    # `state` joins nothing: started without overlay or memfd.
    out = [subprocess.run([exe, "--root", runtime.root, "state", cid], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
           for exe in (launcher, script)]
    assert out[0].returncode == out[1].returncode == 0, out
    assert out[0].stdout == out[1].stdout


def test_the_current_directory_is_not_on_the_path(runtime, bundle, cid, tmp_path):
    """-c would put the current directory first on sys.path (-P keeps it
    off): a `migrate` package there must not be what runs."""
    launcher, _ = _entries()
    bundle.set_args("sleep", "300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    fake = tmp_path / "migrate"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise SystemExit('the current directory was imported')\n")
    res = subprocess.run([launcher, "--root", runtime.root, "state", cid], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert res.returncode == 0 and '"running"' in res.stdout, res


def test_an_inherited_mark_is_not_believed(runtime, bundle, cid):
    """A caller's _MIGRATE_EXE_GUARD does not switch the protection off:
    the launcher drops it, and the script checks /proc/self/exe itself."""
    launcher, script = _entries()
    bundle.set_args("sleep", "300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    env = {**os.environ, "_MIGRATE_EXE_GUARD": "overlay"}
    proc = subprocess.Popen([script, "--root", runtime.root, "exec", cid, "sleep", "31"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: "sleep 31" in runtime("exec", cid, "ps", "-o", "args").stdout,
                 what="the exec'd sleep")
        argv, exe = _exec_argv(proc)
        assert os.path.dirname(exe) == "/" and argv[1] == "-S", (argv, exe)
    finally:
        proc.terminate()
        proc.wait(10)


_SUBREAPER = """
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)       # PR_SET_CHILD_SUBREAPER
res = subprocess.run(sys.argv[1:], capture_output=True, text=True, stdin=subprocess.DEVNULL)
time.sleep(0.3)
orphans = []
while True:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        time.sleep(0.05)
        continue
    orphans.append(pid)
print(res.returncode, len(orphans), res.stderr.strip())
"""


@pytest.mark.parametrize("command", ["exec", "create", "run"])
def test_the_warmup_child_is_reaped_even_when_the_command_fails(runtime, command):
    """The launcher's cgroup-attach warm-up child (launcher.c) is ours to
    reap, also when the command fails before it would attach anything: an
    orphan would go to a PID 1 that may never reap it. Run under a
    subreaper, which would inherit any orphan."""
    launcher, _ = _entries()
    args = ["exec", "no-such-container", "true"] if command == "exec" else \
        [command, "--bundle", "/nonexistent", "t-reaped"]
    out = subprocess.run([sys.executable, "-c", _SUBREAPER, launcher, "--root", runtime.root,
                          *args], capture_output=True, text=True, timeout=60).stdout
    code, orphans, err = out.split(" ", 2)
    assert code != "0" and err.startswith("migrate: "), out
    assert orphans == "0", out
