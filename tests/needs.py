"""Run-time probes behind the ``requires(...)`` marker.

Each probe returns ``None`` when the need is met, else the reason it is not,
which the skip prints. Results are cached per session: probes are real (they
run CRIU, look at the kernel), so they cost time.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

CRIU = os.environ.get("MIGRATE_CRIU", "criu")


def _run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@functools.cache
def root() -> str | None:
    return None if os.geteuid() == 0 else "not running as root"


@functools.cache
def criu() -> str | None:
    path = shutil.which(CRIU) or (CRIU if os.path.exists(CRIU) else None)
    if path is None:
        return f"{CRIU} not found (run scripts/install-deps.sh)"
    if os.geteuid() != 0:
        return "criu needs root here"
    out = _run(path, "--version")
    version = next((l.split()[1] for l in out.stdout.splitlines() if l.startswith("Version:")), "0")
    if tuple(int(x) for x in version.split(".")[:2]) < (4, 0):
        return f"criu {version} is older than 4.0"
    return None


@functools.cache
def criu_feature(name: str) -> str | None:
    if (why := criu()) is not None:
        return why
    out = _run(CRIU, "check", "--feature", name)
    if out.returncode != 0:
        text = (out.stdout + out.stderr).strip().splitlines()
        return f"criu check --feature {name}: {text[-1] if text else 'not supported'}"
    return None


@functools.cache
def cgroup_v2() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/sys/fs/cgroup" and " - cgroup2 " in line:
                return None
    return "/sys/fs/cgroup is not a cgroup v2 (unified) mount"


@functools.cache
def cgroup_v1() -> str | None:
    with open("/proc/self/mountinfo") as f:
        if any(" - cgroup " in line for line in f):
            return None
    return "no cgroup v1 hierarchy is mounted"


@functools.cache
def busybox() -> str | None:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path):
            out = _run("file", "-L", path) if shutil.which("file") else None
            if out is None or "statically linked" in out.stdout or "static-pie" in out.stdout:
                return None
    return "a static busybox is not installed (run scripts/install-deps.sh)"


@functools.cache
def runc() -> str | None:
    return None if shutil.which("runc") else "runc is not installed"


@functools.cache
def iptables() -> str | None:
    return None if shutil.which("iptables") else "iptables is not installed"


@functools.cache
def userns() -> str | None:
    out = _run("unshare", "--user", "--map-root-user", "true")
    return None if out.returncode == 0 else f"unprivileged user namespaces: {out.stderr.strip()}"


@functools.cache
def netns() -> str | None:
    if root() is not None:
        return root()
    out = _run("unshare", "--net", "true")
    return None if out.returncode == 0 else f"network namespaces: {out.stderr.strip()}"


@functools.cache
def podman() -> str | None:
    return None if shutil.which("podman") else "podman is not installed"


def check(need: str) -> str | None:
    """Evaluate one need, e.g. ``"root"`` or ``'criu_feature("mem_dirty_track")'``."""
    if "(" in need:
        name, arg = need.split("(", 1)
        return globals()[name](arg.rstrip(")").strip("\"'"))
    return globals()[need]()
