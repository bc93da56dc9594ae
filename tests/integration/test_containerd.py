"""containerd 1.6 as a client: it drives migrate through its runc shim v2
(`ctr run --runc-binary`), the way a Kubernetes node would with
``BinaryName`` in the runtime options.

Each module run starts its own containerd (own root, state and sockets, no
CRI plugin, no systemd) and uses its own namespace, so nothing it does can
meet another containerd or another test's containers. The image is an OCI
layout made here from the busybox rootfs, *without* ``/run``: a container
restored by ``ctr containers restore --live`` gets a fresh snapshot of it,
so every mountpoint the runtime made at create time is missing again.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from oci_image import write_image_layout
from runtime_helpers import build_rootfs, runtime_argv, wait_for

pytestmark = pytest.mark.requires("root", "busybox", "containerd", "criu", "iptables")

IMAGE = "docker.io/library/busybox:migrate-test"
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"


class Containerd:
    """A private containerd daemon and a `ctr` bound to it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.sock = os.path.join(base, "c.sock")
        self.namespace = f"migrate-test-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(base, "containerd.log")

    def start(self) -> None:
        config = os.path.join(self.base, "config.toml")
        with open(config, "w") as f:
            f.write(f'version = 2\nroot = "{self.base}/root"\nstate = "{self.base}/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{self.sock}"\n'
                    f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
                    f'[debug]\n  address = "{self.base}/debug.sock"\n')
        # The shims put checkpoint work dirs in TMPDIR: keep them under base.
        tmp = os.path.join(self.base, "tmp")
        os.makedirs(tmp)
        env = {**os.environ, "TMPDIR": tmp}
        with open(self.log, "w") as log:
            # cwd: go-criu's feature checks leave runc-criu-log-*.log in it
            self.proc = subprocess.Popen(["containerd", "--config", config], env=env,
                                         cwd=self.base, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.ctr("version", check=False).returncode == 0, timeout=30,
                 what="containerd to answer")

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        res = subprocess.run(["ctr", "-a", self.sock, "-n", self.namespace, *args],
                             capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, cwd=self.base)
        if check and res.returncode != 0:
            tail = open(self.log).read()[-2000:]
            raise AssertionError(f"ctr {' '.join(args)}: rc={res.returncode}\n"
                                 f"{res.stdout}{res.stderr}\ncontainerd log tail:\n{tail}")
        return res

    def remove_container(self, cid: str) -> None:
        self.ctr("task", "kill", "-s", "KILL", cid, check=False)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: cid not in self.running(), timeout=10, what=f"task {cid} to stop")
        # Plain delete first: after a failed restore containerd keeps a task in
        # CREATED with pid 0, and `delete -f` waits forever for it to exit.
        if self.ctr("task", "delete", cid, check=False).returncode != 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctr("task", "delete", "-f", cid, check=False, timeout=20)
        self.ctr("containers", "delete", cid, check=False)

    def running(self) -> dict[str, str]:
        out = self.ctr("task", "ls", check=False).stdout.splitlines()[1:]
        return {f[0]: f[2] for f in (line.split() for line in out) if len(f) >= 3}

    def stop(self) -> None:
        for cid in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            with contextlib.suppress(Exception):
                self.remove_container(cid)
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # Snapshots are unmounted with their containers; anything a failed
        # test left mounted under our root goes before the directory does.
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
        for target in sorted((m for m in mounts if m.startswith(self.base)), reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)
        # The runc shim keeps the runtime's --root per namespace here.
        with contextlib.suppress(OSError):
            os.rmdir(f"/run/containerd/runc/{self.namespace}")
        # The shim names cgroups /<namespace>/<id>; the runtime removes the
        # container's, the namespace's parent is containerd's (runc leaves
        # it too): 10 directories per run otherwise.
        for parent in glob.glob(f"/sys/fs/cgroup/*/{self.namespace}") + \
                glob.glob(f"/sys/fs/cgroup/{self.namespace}"):
            with contextlib.suppress(OSError):
                os.rmdir(parent)


@pytest.fixture(scope="module")
def containerd():
    base = f"/tmp/mctrd-{uuid.uuid4().hex[:8]}"  # short: unix socket paths are limited
    os.makedirs(base)
    daemon = Containerd(base)
    try:
        daemon.start()
        rootfs = os.path.join(base, "rootfs")
        build_rootfs(rootfs)
        os.rmdir(os.path.join(rootfs, "run"))
        image = os.path.join(base, "image.tar")
        write_image_layout(rootfs, image, name=IMAGE)
        shutil.rmtree(rootfs)
        daemon.ctr("images", "import", image, timeout=120)
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def binary() -> str:
    argv = runtime_argv()
    if len(argv) != 1:
        pytest.skip("containerd needs the runtime as one executable (MIGRATE_RUNTIME)")
    return argv[0]


def _count(containerd: Containerd, cid: str) -> int:
    """The counter read by an exec in the container; 0 while the file is
    being rewritten (the shell truncates it before writing)."""
    res = containerd.ctr("task", "exec", "--exec-id", f"r{uuid.uuid4().hex[:6]}", cid,
                         "cat", "/tmp/count")
    text = res.stdout.strip()
    return int(text) if text else 0


def _advances(containerd: Containerd, cid: str, after: int) -> int:
    return wait_for(lambda: (n := _count(containerd, cid)) > after and n, timeout=20,
                    what=f"the counter of {cid} to pass {after}")


def test_run_exec_pause_resume(containerd, binary):
    cid = f"c-{uuid.uuid4().hex[:6]}"
    try:
        containerd.ctr("run", "-d", "--runc-binary", binary, IMAGE, cid, "sh", "-c", COUNTER)
        assert containerd.running()[cid] == "RUNNING"
        first = wait_for(lambda: _count(containerd, cid), what="the first count")
        _advances(containerd, cid, first)

        containerd.ctr("task", "pause", cid)
        assert containerd.running()[cid] == "PAUSED"
        held = _read_count_file(containerd, cid)
        time.sleep(0.3)
        assert _read_count_file(containerd, cid) == held, "a paused container kept counting"
        containerd.ctr("task", "resume", cid)
        assert containerd.running()[cid] == "RUNNING"
        _advances(containerd, cid, held)

        # Our pid is what containerd reports, and `ps` through the shim sees it.
        pids = containerd.ctr("task", "ps", cid).stdout.split()
        assert str(_task_pid(containerd, cid)) in pids
    finally:
        containerd.remove_container(cid)
    assert cid not in containerd.running()


def _task_pid(containerd: Containerd, cid: str) -> int:
    for line in containerd.ctr("task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields[0] == cid:
            return int(fields[1])
    raise AssertionError(f"no task {cid}")


def _read_count_file(containerd: Containerd, cid: str) -> int:
    """The counter read from the host through /proc, which works while
    paused; -1 for a file the shell had truncated and not yet rewritten
    when the pause caught it (it stays empty until the resume: 0 here made
    the wait time out)."""
    def read() -> int:
        with open(f"/proc/{_task_pid(containerd, cid)}/root/tmp/count") as f:
            text = f.read().strip()
        return int(text) if text else -1
    return wait_for(read, what=f"the counter file of {cid}")


def test_checkpoint_then_restore_live_into_fresh_snapshot(containerd, binary):
    cid = f"c-{uuid.uuid4().hex[:6]}"
    ref = f"checkpoint/{cid}:1"
    try:
        containerd.ctr("run", "-d", "--runc-binary", binary, IMAGE, cid, "sh", "-c", COUNTER)
        first = wait_for(lambda: _count(containerd, cid), what="the first count")
        _advances(containerd, cid, first)

        containerd.ctr("containers", "checkpoint", "--task", cid, ref, timeout=120)
        # containerd leaves the task running after a checkpoint.
        assert containerd.running()[cid] == "RUNNING"
        at_checkpoint = _read_count_file(containerd, cid)

        containerd.remove_container(cid)
        containerd.ctr("containers", "restore", "--live", cid, ref, timeout=120)
        assert containerd.running()[cid] == "RUNNING"
        restored = _count(containerd, cid)
        # The memory came back: it counts on from where it was, not from 1.
        assert restored >= at_checkpoint - 50, (restored, at_checkpoint)
        _advances(containerd, cid, restored)
        info = containerd.ctr("containers", "info", cid).stdout
        assert os.path.basename(binary) in _binary_name(info)
    finally:
        containerd.remove_container(cid)
        containerd.ctr("images", "rm", ref, check=False)


def _binary_name(info: str) -> str:
    """The runtime options are a base64 protobuf (runc.v1.Options); its
    BinaryName field is enough to find in the decoded bytes."""
    import base64
    import json

    options = json.loads(info)["Runtime"]["Options"]
    return base64.b64decode(options["value"]).decode(errors="replace")
