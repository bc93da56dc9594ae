"""Podman 4.3 (Debian 12) as a client: `podman --runtime <migrate>`.

Every test gets its own Podman world under a temp dir (storage root and
runroot, tmpdir, file locks, events log, network config) through
CONTAINERS_CONF / CONTAINERS_STORAGE_CONF and flags, so the user's Podman is
never touched. Nothing can be pulled here: the busybox image is a rootfs
tarball from `build_rootfs`, imported; a pod's pause image is built by Podman
itself (it needs catatonit). What the machines need (DESIGN.md, "Podman as a
client"): cgroupfs, a file events logger, no network, and rlimits no higher
than the session's hard limits.

Podman passes `--log-format=json --log FILE` only to runtimes it knows by
file name; the config lists ours too, except where a test asks otherwise.
Output of every podman call goes to files, never pipes: conmon and the
container inherit them.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import tarfile
import tempfile
import time

import pytest

from runtime_helpers import Result, build_rootfs, runtime_argv
from runtime_helpers import wait_for as _wait_for

pytestmark = pytest.mark.requires("root", "podman", "criu")

IMAGE = "localhost/busybox:migrate-test"
COUNTER = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"
CATATONIT = "/usr/libexec/podman/catatonit"


def _run(argv: list[str], out_dir: str, timeout: float, env=None) -> Result:
    """``argv`` with stdout and stderr in files under ``out_dir`` (never pipes:
    conmon and detached containers inherit them and would hold a pipe open)."""
    out_fd, out_path = tempfile.mkstemp(prefix="out.", dir=out_dir)
    err_fd, err_path = tempfile.mkstemp(prefix="err.", dir=out_dir)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out_fd, stderr=err_fd,
                              env=env, timeout=timeout, cwd=out_dir)
    finally:
        os.close(out_fd)
        os.close(err_fd)
    with open(out_path, errors="replace") as out, open(err_path, errors="replace") as err:
        return Result(proc.returncode, out.read(), err.read())


def _containers_conf(base: str, runtime: str, json_log: bool) -> str:
    hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = hard_nofile if hard_nofile != resource.RLIM_INFINITY else 1048576
    nproc = min(hard_nproc if hard_nproc != resource.RLIM_INFINITY else 32768, 32768)
    name = os.path.basename(runtime)
    supports_json = sorted(({"crun", "runc"} | {name}) if json_log else ({"crun", "runc"} - {name}))
    return f"""\
[containers]
# Podman's defaults (nofile 1048576, nproc 4194304) exceed the hard limits a
# session here cannot raise (no CAP_SYS_RESOURCE): create fails for any runtime.
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
netns = "none"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
# File locks under --tmpdir: the default SHM segment is shared by every
# Podman store on the machine, and a fresh tmpdir makes Podman free all of it.
lock_type = "file"
runtime_supports_json = {supports_json!r}

[network]
network_config_dir = "{base}/networks"
""".replace("'", '"')


class Podman:
    """`podman` with a private store under ``base`` and one OCI runtime."""

    def __init__(self, base: str, runtime: str, *, json_log: bool = True):
        self.base = base
        self.runtime = runtime
        os.makedirs(base, exist_ok=True)
        with open(os.path.join(base, "containers.conf"), "w") as f:
            f.write(_containers_conf(base, runtime, json_log))
        with open(os.path.join(base, "storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\ngraphroot = "{base}/root"\n'
                    f'runroot = "{base}/runroot"\n')
        with open(os.path.join(base, "registries.conf"), "w") as f:
            f.write("unqualified-search-registries = []\n")
        self.env = dict(os.environ,
                        CONTAINERS_CONF=os.path.join(base, "containers.conf"),
                        CONTAINERS_STORAGE_CONF=os.path.join(base, "storage.conf"),
                        CONTAINERS_REGISTRIES_CONF=os.path.join(base, "registries.conf"))
        self.argv = ["podman", "--root", f"{base}/root", "--runroot", f"{base}/runroot",
                     "--tmpdir", f"{base}/tmp", "--runtime", runtime]

    def __call__(self, *args: str, timeout: float = 60) -> Result:
        return _run([*self.argv, *args], self.base, timeout, env=self.env)

    def load_image(self, tarball: str) -> None:
        self("import", tarball, IMAGE, timeout=120).check()

    def status(self, name: str) -> str:
        return self("inspect", "-f", "{{.State.Status}}", name).check().stdout.strip()

    def numbers(self, name: str) -> list[int]:
        res = self("logs", name).check()
        return [int(x) for x in (res.stdout + res.stderr).split() if x.isdigit()]

    def cleanup(self) -> None:
        """Remove every container and pod, then the whole private world."""
        for args in (("rm", "-af", "-t", "0"), ("pod", "rm", "-af", "-t", "0")):
            try:
                self(*args, timeout=60)
            except subprocess.TimeoutExpired:
                pass
        _umount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def _umount_under(base: str) -> None:
    """Lazily unmount whatever Podman left mounted below ``base`` (deepest first)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p == base or p.startswith(base + "/")),
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


def _assert_contiguous(values: list[int]) -> None:
    assert values, "no output"
    assert values == list(range(values[0], values[0] + len(values))), \
        f"the counter restarted or skipped: {values[:5]}...{values[-5:]}"


@pytest.fixture(scope="session")
def image_tarball(tmp_path_factory) -> str:
    """The busybox rootfs (with ctrhelper) as a tarball for `podman import`."""
    base = tmp_path_factory.mktemp("podman-image")
    build_rootfs(str(base / "rootfs"))
    path = str(base / "busybox.tar")
    with tarfile.open(path, "w") as tar:
        tar.add(str(base / "rootfs"), arcname=".")
    return path


def _short(res: Result) -> str:
    text = (res.stderr or res.stdout).strip().splitlines()
    return text[-1] if text else f"exit {res.returncode}"


@pytest.fixture(scope="session")
def podman_works(image_tarball) -> None:
    """Skip (with Podman's own words) unless Podman runs a runc container here."""
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("podman probe: runc is not installed, so Podman cannot be checked here")
    pm = Podman(_short_tmpdir(), runc)
    try:
        try:
            res = pm("import", image_tarball, IMAGE, timeout=120)
            if res.returncode == 0:
                res = pm("run", "--rm", IMAGE, "true", timeout=60)
        except subprocess.TimeoutExpired as err:
            pytest.skip(f"podman probe: {err}")
        if res.returncode != 0:
            pytest.skip(f"podman cannot run a runc container here: {_short(res)}")
    finally:
        pm.cleanup()


def _migrate_path() -> str:
    argv = runtime_argv()
    if len(argv) != 1 or not os.path.isabs(argv[0]):
        pytest.skip(f"podman needs the runtime as one executable, not {' '.join(argv)!r}: "
                    f"put migrate on PATH or set MIGRATE_RUNTIME to its path")
    return argv[0]


def _short_tmpdir() -> str:
    # Podman refuses a runroot longer than 50 characters: pytest's tmp_path is too long.
    return tempfile.mkdtemp(prefix="podman-", dir="/tmp")


def _podman(podman_works, image_tarball, *, json_log: bool = True):
    pm = Podman(_short_tmpdir(), _migrate_path(), json_log=json_log)
    try:
        pm.load_image(image_tarball)
    except BaseException:
        pm.cleanup()
        raise
    return pm


@pytest.fixture
def podman(podman_works, image_tarball):
    pm = _podman(podman_works, image_tarball)
    yield pm
    pm.cleanup()


# -- what Podman probes before it uses a runtime ------------------------------------------


def test_checkpoint_help_exits_0(tmp_path):
    # Podman's CRRuntimeSupportsCheckpointRestore: `<runtime> checkpoint --help`.
    res = _run([_migrate_path(), "checkpoint", "--help"], str(tmp_path), 60)
    assert res.returncode == 0, res.stderr
    assert "--image-path" in res.stdout


def test_restore_lsm_mount_context_without_value_needs_an_argument(tmp_path):
    # Podman's CRRuntimeSupportsPodCheckpointRestore greps for these words.
    res = _run([_migrate_path(), "restore", "--lsm-mount-context"], str(tmp_path), 60)
    assert res.returncode != 0
    assert "flag needs an argument" in res.stdout + res.stderr


# -- containers -----------------------------------------------------------------------------


def test_run_exec_logs_pause_stop_rm(podman):
    name = "c-life"
    podman("run", "-d", "--name", name, IMAGE, "sh", "-c",
           "echo out; echo err >&2; trap 'exit 0' TERM; while :; do sleep 0.1; done").check()
    assert podman.status(name) == "running"
    logs = _wait_for(lambda: (lambda r: "out" in r.stdout and "err" in r.stderr and r)(
        podman("logs", name)), what="container output in podman logs")
    assert logs.stdout.split() == ["out"] and logs.stderr.split() == ["err"]
    assert podman("exec", name, "sh", "-c", "echo $((6*7))").check().stdout.strip() == "42"
    assert podman("exec", name, "sh", "-c", "exit 3").returncode == 3
    podman("exec", "-d", name, "sleep", "30").check()
    ps = podman("exec", name, "ps", "-o", "args").check().stdout
    assert "sleep 30" in ps
    podman("pause", name).check()
    assert podman.status(name) == "paused"
    podman("unpause", name).check()
    assert podman.status(name) == "running"
    start = time.monotonic()
    podman("stop", "-t", "20", name).check()            # `kill ID 15`: the trap exits
    assert time.monotonic() - start < 15
    assert podman.status(name) == "exited"
    podman("rm", name).check()
    assert podman("inspect", name).returncode != 0


def test_stop_falls_back_to_sigkill_and_restart(podman):
    name = "c-kill"
    # PID 1 ignores SIGTERM without a handler: Podman sends `kill ID 9` after -t.
    podman("run", "-d", "--name", name, IMAGE, "sleep", "1000").check()
    podman("stop", "-t", "1", name).check()
    assert podman("inspect", "-f", "{{.State.ExitCode}}", name).check().stdout.strip() == "137"
    podman("start", name).check()                        # same container, new init
    assert podman.status(name) == "running"
    podman("rm", "-f", "-t", "0", name).check()


def test_what_podman_puts_in_config_json(podman):
    """Options whose config.json migrate once refused or got wrong: tmpfs
    mounts with "tmpcopyup" (--read-only, --tmpfs), sysctls under the
    read-only /proc/sys, host devices whose fileMode has its type bits
    (--privileged). Seccomp: see test_seccomp_profiles_are_applied."""
    res = podman("run", "--rm", "--read-only", "--tmpfs", "/etc",
                 "--mount", "type=tmpfs,destination=/scratch,tmpfs-mode=1770",
                 "--sysctl", "net.ipv4.ip_forward=1", IMAGE, "sh", "-c",
                 "head -1 /etc/passwd; stat -c '%n %a' /tmp /run /scratch; "
                 "cat /proc/sys/net/ipv4/ip_forward; touch /x 2>/dev/null || echo ro; "
                 "echo 0 2>/dev/null > /proc/sys/net/ipv4/ip_forward || echo sys-ro").check()
    assert res.stdout.split("\n")[:-1] == [
        "root:x:0:0:root:/root:/bin/sh",       # /etc's tmpfs was filled from the image
        "/tmp 1777", "/run 755",               # modes of the image's directories
        "/scratch 1770",                       # tmpfs-mode wins
        "1", "ro", "sys-ro"]
    res = podman("run", "--rm", "--privileged", IMAGE, "sh", "-c",
                 "ls /dev | wc -l; grep CapEff /proc/self/status").check()
    assert int(res.stdout.split()[0]) > 20


def test_seccomp_profiles_are_applied(podman, tmp_path):
    # Podman's default profile on run and exec; unconfined means none; a
    # profile of our own (--security-opt seccomp=FILE) filters what it says.
    status = "grep Seccomp: /proc/self/status"
    name = "c-seccomp"
    podman("run", "-d", "--name", name, IMAGE, "sleep", "1000").check()
    assert podman("exec", name, "sh", "-c", status).check().stdout.split() == ["Seccomp:", "2"]
    podman("rm", "-f", "-t", "0", name).check()
    res = podman("run", "--rm", "--security-opt", "seccomp=unconfined", IMAGE, "sh", "-c",
                 status).check()
    assert res.stdout.split() == ["Seccomp:", "0"]
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    res = podman("run", "--rm", "--security-opt", f"seccomp={profile}", IMAGE, "sh", "-c",
                 f"{status}; mkdir /tmp/x; echo mkdir=$?").check()
    assert "Seccomp:\t2" in res.stdout and "mkdir=1" in res.stdout


@pytest.mark.parametrize("json_log", [True, False], ids=["json-log", "no-log-flags"])
def test_create_errors_reach_podman(podman_works, image_tarball, json_log):
    """Podman reads the error from the JSON --log file when it passes one,
    else from conmon (the runtime's stderr), and maps its words to exit codes."""
    pm = _podman(podman_works, image_tarball, json_log=json_log)
    try:
        res = pm("run", "--rm", IMAGE, "no-such-command")
        assert res.returncode == 127, res.stderr
        assert "no-such-command" in res.stderr, res.stderr
        assert "executable file not found in $PATH" in res.stderr, res.stderr
        if json_log:
            # Podman parses the whole --log file as one JSON object: had it
            # failed, it would fall back to the runtime's stderr ("migrate: ...").
            assert ": migrate: " not in res.stderr and "level=" not in res.stderr, res.stderr
        res = pm("run", "--rm", IMAGE, "/etc/passwd")
        assert res.returncode == 126, res.stderr
        assert re.search("permission denied", res.stderr, re.I), res.stderr
    finally:
        pm.cleanup()


# -- checkpoint and restore -------------------------------------------------------------------


def _start_counter(podman, name: str, *extra: str) -> None:
    podman("run", "-d", *extra, "--name", name, IMAGE, "sh", "-c", COUNTER).check()
    _wait_for(lambda: len(podman.numbers(name)) > 5, what="counter output")


def _assert_resumed(podman, name: str, before: list[int]) -> None:
    """The counter goes on from where the checkpoint left it: no restart."""
    assert podman.status(name) == "running"
    after = _wait_for(lambda: (lambda n: len(n) > len(before) + 5 and n)(podman.numbers(name)),
                      what="counter output after restore")
    _assert_contiguous(after)
    assert after[-1] > before[-1]
    assert podman("exec", name, "true").returncode == 0


def test_checkpoint_restore_in_place(podman):
    name = "c-cr"
    _start_counter(podman, name)
    podman("container", "checkpoint", "--leave-running", name).check()
    assert podman.status(name) == "running"
    n = len(podman.numbers(name))
    _wait_for(lambda: len(podman.numbers(name)) > n + 3, what="counter after --leave-running")
    podman("container", "checkpoint", name).check()
    assert podman.status(name) == "exited"
    before = podman.numbers(name)
    time.sleep(0.3)
    assert podman.numbers(name) == before, "the counter ran on after the checkpoint"
    _assert_contiguous(before)
    podman("container", "restore", name).check()
    _assert_resumed(podman, name, before)
    podman("rm", "-f", "-t", "0", name).check()


def test_checkpoint_restore_terminal_and_read_only(podman):
    """A container with a terminal (console socket at create and at restore)
    and a --read-only root whose /tmp tmpfs CRIU must carry over."""
    name = "c-tty"
    podman("run", "-dt", "--read-only", "--name", name, IMAGE, "sh", "-c",
           "echo kept > /tmp/f; " + COUNTER).check()
    _wait_for(lambda: len(podman.numbers(name)) > 5, what="counter output on the terminal")
    podman("container", "checkpoint", name).check()
    before = podman.numbers(name)
    podman("container", "restore", name).check()
    _assert_resumed(podman, name, before)
    res = podman("exec", name, "sh", "-c", "cat /tmp/f; tty <&1; ls -l /proc/1/fd/1").check()
    assert res.stdout.split("\n")[0] == "kept"
    assert "/dev/pts/" in res.stdout
    podman("rm", "-f", "-t", "0", name).check()


def test_checkpoint_export_restore_import(podman, tmp_path):
    name = "c-export"
    archive = str(tmp_path / "export.tar.gz")
    _start_counter(podman, name)
    podman("container", "checkpoint", "--export", archive, name).check()
    before = podman.numbers(name)
    _assert_contiguous(before)
    podman("rm", name).check()
    podman("container", "restore", "--import", archive).check()
    _assert_resumed(podman, name, before)
    podman("rm", "-f", "-t", "0", name).check()


def test_restore_import_into_a_pod(podman, tmp_path):
    if not os.path.exists(CATATONIT):
        pytest.skip(f"{CATATONIT} is missing (Debian package catatonit): Podman cannot "
                    f"build the pod's pause image without it")
    name = "c-pod"
    archive = str(tmp_path / "pod.tar.gz")
    podman("pod", "create", "--network", "none", "--name", "pod-a", timeout=120).check()
    _start_counter(podman, name, "--pod", "pod-a")
    podman("container", "checkpoint", "--export", archive, name).check()
    before = podman.numbers(name)
    podman("pod", "rm", "-f", "-t", "0", "pod-a").check()
    pod_b = podman("pod", "create", "--network", "none", "--name", "pod-b").check().stdout.strip()
    # Podman 4.3 wants the pod's ID here: it rejects the name.
    podman("container", "restore", "--import", archive, "--pod", pod_b).check()
    assert podman("inspect", "-f", "{{.Pod}}", name).check().stdout.strip() == pod_b
    _assert_resumed(podman, name, before)
    podman("pod", "rm", "-f", "-t", "0", "pod-b").check()


def _named_runc(base: str, binary: str) -> Podman:
    """Podman whose runtime is called "runc" but runs ``binary``: Podman
    restores an exported checkpoint only with the runtime name it was made
    with, so this is how an engine moves runc's checkpoints to migrate."""
    pm = Podman(base, "runc")
    with open(os.path.join(base, "containers.conf"), "a") as f:
        f.write(f'\n[engine.runtimes]\nrunc = ["{binary}"]\n')
    return pm


def test_runc_checkpoint_export_imports_with_migrate(podman_works, image_tarball, tmp_path):
    name = "c-runc"
    archive = str(tmp_path / "runc.tar.gz")
    base = _short_tmpdir()
    with_runc = _named_runc(base, shutil.which("runc"))
    try:
        with_runc.load_image(image_tarball)
        _start_counter(with_runc, name)
        with_runc("container", "checkpoint", "--export", archive, name).check()
        before = with_runc.numbers(name)
        _assert_contiguous(before)
        with_runc("rm", name).check()
        with_migrate = _named_runc(base, _migrate_path())
        with_migrate("container", "restore", "--import", archive).check()
        # migrate restored it: Podman passes no --root to a runtime it calls
        # "runc" here, so the state is in migrate's default root, not runc's
        cid = with_migrate("inspect", "-f", "{{.ID}}", name).check().stdout.strip()
        with open(f"/run/migrate/{cid}/state.json") as f:
            assert json.load(f)["restored"] is True
        assert not os.path.exists(f"/run/runc/{cid}")
        _assert_resumed(with_migrate, name, before)
        with_migrate("rm", "-f", "-t", "0", name).check()
    finally:
        with_runc.cleanup()


def test_pod_serving_tcp_on_localhost_checkpoint_restore(podman):
    """A pod's containers share its network namespace, whose lo must be up:
    a server on 127.0.0.1 answers another container of the pod before and
    after its checkpoint and restore."""
    if not os.path.exists(CATATONIT):
        pytest.skip(f"{CATATONIT} is missing (Debian package catatonit): Podman cannot "
                    f"build the pod's pause image without it")
    podman("pod", "create", "--network", "none", "--name", "pod-tcp", timeout=120).check()
    podman("run", "-d", "--pod", "pod-tcp", "--name", "srv", IMAGE, "sh", "-c",
           "mkdir /tmp/www; echo hello > /tmp/www/index.html; "
           "exec httpd -f -p 127.0.0.1:8080 -h /tmp/www").check()

    def fetch():
        # busybox's static wget crashes resolving; nc takes the address as it is
        res = podman("run", "--rm", "--pod", "pod-tcp", IMAGE, "sh", "-c",
                     "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080")
        return res.returncode == 0 and res.stdout.endswith("\n\nhello\n")

    _wait_for(fetch, what="the server answering on 127.0.0.1", timeout=30)
    podman("container", "checkpoint", "srv").check()
    assert podman.status("srv") == "exited"
    podman("container", "restore", "srv").check()
    assert podman.status("srv") == "running"
    _wait_for(fetch, what="the restored server answering on 127.0.0.1", timeout=30)
    podman("rm", "-f", "-t", "0", "srv").check()
