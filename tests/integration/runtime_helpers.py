"""Driving the runtime binary from integration tests.

The binary comes from $MIGRATE_RUNTIME (so the same tests can run against
runc), else `migrate` on PATH, else `python -m migrate`. Output always goes
to files, never pipes: a detached container inherits the runtime's stdio and
would keep a pipe open forever.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def time_scale() -> float:
    """How much slower than this machine the tests run ($MIGRATE_TEST_TIME_SCALE:
    under emulation, in the soft-dirty guest of scripts/vm/guest.sh, ~20)."""
    return float(os.environ.get("MIGRATE_TEST_TIME_SCALE", "1"))


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (bounded, the
    bound stretched by time_scale())."""
    deadline = time.monotonic() + timeout * time_scale()
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lazy_pages_daemons(path: str) -> list[int]:
    """pids of the running `criu lazy-pages` whose command line mentions
    ``path`` (its images or work directory)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"lazy-pages" in argv and any(path.encode() in a for a in argv):
            out.append(int(pid))
    return out


def runtime_argv() -> list[str]:
    env = os.environ.get("MIGRATE_RUNTIME")
    if env:
        return shlex.split(env)
    found = shutil.which("migrate")
    if found:
        return [found]
    return [sys.executable, "-m", "migrate"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> "Result":
        assert self.returncode == 0, f"exit {self.returncode}: {self.stderr}{self.stdout}"
        return self


class Runtime:
    def __init__(self, root: str, argv: list[str] | None = None):
        self.root = root
        self.argv = argv or runtime_argv()

    def __call__(self, *args: str, timeout: float = 60, stdin=subprocess.DEVNULL,
                 pass_fds=(), env=None, cwd=None) -> Result:
        # Plain named files: a container's stdio is checkpointed as an
        # external file that CRIU reopens through /proc/self/fd on restore,
        # which fails for tempfile's O_NOFOLLOW and O_TMPFILE files.
        with tempfile.TemporaryDirectory(prefix="rt-") as tmp:
            with open(os.path.join(tmp, "out"), "w+b") as out, \
                    open(os.path.join(tmp, "err"), "w+b") as err:
                proc = subprocess.run([*self.argv, "--root", self.root, *args], stdin=stdin,
                                      stdout=out, stderr=err, timeout=timeout,
                                      pass_fds=pass_fds, env=env, cwd=cwd)
                out.seek(0)
                err.seek(0)
                return Result(proc.returncode, out.read().decode(errors="replace"),
                              err.read().decode(errors="replace"))

    def cgroup_dir(self, controller: str, cid: str) -> str:
        """Where this root's container ``cid`` has its cgroup (the runtime's
        default path: /migrate-<hash of --root>/<id>)."""
        import hashlib

        tag = hashlib.sha256(os.path.normpath(self.root).encode()).hexdigest()[:8]
        return f"/sys/fs/cgroup/{controller}/migrate-{tag}/{cid}"

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).check().stdout)

    def status(self, cid: str) -> str:
        res = self("state", cid)
        return json.loads(res.stdout)["status"] if res.returncode == 0 else "gone"

    def wait_status(self, cid: str, want: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        status = self.status(cid)
        while status != want and time.monotonic() < deadline:
            time.sleep(0.05)
            status = self.status(cid)
        return status

    def cleanup(self) -> None:
        if not os.path.isdir(self.root):
            return
        for cid in os.listdir(self.root):
            if os.path.isdir(os.path.join(self.root, cid)):
                try:
                    self("delete", "--force", cid, timeout=30)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)
        self.assert_no_cgroups_left()

    def assert_no_cgroups_left(self) -> None:
        """Every way a container ends (delete, checkpoint, a failed create
        or restore, a migration's source) takes the runtime's own parent
        cgroup with its last container: ~20 leaked per suite run when only
        `delete` removed it. Removes what it finds, then fails."""
        import glob

        parent = os.path.basename(os.path.dirname(self.cgroup_dir("memory", "x")))
        left = glob.glob(f"/sys/fs/cgroup/{parent}") + glob.glob(f"/sys/fs/cgroup/*/{parent}")
        for path in sorted(left, key=len, reverse=True):
            for sub, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass
        assert not left, f"cgroups left behind under --root {self.root}: {left}"


HELPER_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers", "ctrhelper.c")


def ctrhelper_binary() -> str:
    """The in-container helper, compiled static once per source version."""
    import hashlib

    with open(HELPER_SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out = os.path.join(tempfile.gettempdir(), f"migrate-ctrhelper-{digest}")
    if not os.path.exists(out):
        tmp = f"{out}.{os.getpid()}"
        subprocess.run(["gcc", "-O2", "-static", "-o", tmp, HELPER_SOURCE], check=True, timeout=120)
        os.rename(tmp, out)
    return out


def build_rootfs(path: str) -> None:
    """A static busybox rootfs, like scripts/make-bundle.sh builds, plus
    /bin/ctrhelper (tests/integration/helpers/ctrhelper.c)."""
    busybox = next(p for p in BUSYBOX_CANDIDATES if os.path.exists(p))
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home/tester",
              "var", "run", "usr/bin", "usr/sbin"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(path, "bin/busybox"))
    shutil.copy2(ctrhelper_binary(), os.path.join(path, "bin/ctrhelper"))
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = os.path.join(path, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(path, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n"
                "tester:x:1000:1000:tester:/home/tester:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(path, "etc/group"), "w") as f:
        f.write("root:x:0:\nusers:x:100:\ntester:x:1000:\nnogroup:x:65534:\n")


class Bundle:
    """A bundle directory whose config.json tests edit as a dict."""

    def __init__(self, path: str, config: dict):
        self.path = path
        self.config = copy.deepcopy(config)
        self.write()

    @property
    def rootfs(self) -> str:
        return os.path.join(self.path, "rootfs")

    def write(self) -> None:
        with open(os.path.join(self.path, "config.json"), "w") as f:
            json.dump(self.config, f, indent=1)

    def set_args(self, *args: str, terminal: bool = False) -> "Bundle":
        self.config["process"]["args"] = list(args)
        self.config["process"]["terminal"] = terminal
        self.write()
        return self

    def sh(self, script: str) -> "Bundle":
        return self.set_args("sh", "-c", script)
