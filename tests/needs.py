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
def nft() -> str | None:
    return None if shutil.which("nft") else "nft is not installed"


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


@functools.cache
def containerd() -> str | None:
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2"):
        if not shutil.which(tool):
            return f"{tool} is not installed (package containerd; run scripts/install-deps.sh)"
    return None


# The new mount API, probed in a child (a private mount namespace, ctypes so
# no bug of ours can turn into a skip): prints "ok" or the kernel's errno.
_MOUNT_API_PROBE = r"""
import ctypes, errno, os, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
def fail(what):
    e = ctypes.get_errno()
    print(f"{what}: {errno.errorcode.get(e, e)} ({os.strerror(e)})"); sys.exit(0)
if libc.unshare(0x20000): fail("unshare(CLONE_NEWNS)")
libc.mount(b"none", b"/", None, 0x4000 | (1 << 18), None)
d = tempfile.mkdtemp()
if libc.mount(b"tmpfs", d.encode(), sys.argv[2].encode(), 0, None): fail("mount " + sys.argv[2])
if sys.argv[1] == "mount_setattr":
    attr = (ctypes.c_uint64 * 4)(1, 0, 0, 0)
    if libc.syscall(442, -100, d.encode(), 0x8000, attr, 32): fail("mount_setattr(AT_RECURSIVE)")
    print("ok"); sys.exit(0)
ready_r, ready_w = os.pipe()
done_r, done_w = os.pipe()
pid = os.fork()
if pid == 0:
    libc.unshare(0x10000000); os.write(ready_w, b"x"); os.read(done_r, 1); os._exit(0)
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 100000 65536\n")
ns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
os.write(done_w, b"x"); os.waitpid(pid, 0)
fd = libc.syscall(428, -100, d.encode(), 1 | os.O_CLOEXEC)
if fd < 0: fail("open_tree(OPEN_TREE_CLONE)")
attr = (ctypes.c_uint64 * 4)(0x100000, 0, 0, ns)
if libc.syscall(442, fd, b"", 0x1000, attr, 32): fail("mount_setattr(MOUNT_ATTR_IDMAP)")
print("ok")
"""


def _mount_api(kind: str, fstype: str) -> str | None:
    if root() is not None:
        return root()
    import sys

    out = _run(sys.executable, "-I", "-c", _MOUNT_API_PROBE, kind, fstype)
    text = (out.stdout + out.stderr).strip()
    return None if text == "ok" else f"{fstype}: {text or 'probe failed'}"


@functools.cache
def mount_setattr() -> str | None:
    """Recursive mount attributes (mount_setattr(2), Linux 5.12)."""
    return _mount_api("mount_setattr", "tmpfs")


@functools.cache
def idmapped_mounts(fstype: str) -> str | None:
    """Idmapped mounts of ``fstype`` (tmpfs: Linux 6.3)."""
    return _mount_api("idmap", fstype)


def check(need: str) -> str | None:
    """Evaluate one need, e.g. ``"root"`` or ``'criu_feature("mem_dirty_track")'``."""
    if "(" in need:
        name, arg = need.split("(", 1)
        return globals()[name](arg.rstrip(")").strip("\"'"))
    return globals()[need]()


def python_runtime() -> str | None:
    """The runtime under test is migrate's compiled launcher with its
    `migrate-py` entry script beside it, or that script itself (tests that
    run it with another interpreter need its virtualenv)."""
    import shlex

    argv = shlex.split(os.environ.get("MIGRATE_RUNTIME", "")) or [shutil.which("migrate") or ""]
    bindir = os.path.dirname(argv[0])
    for path, magic in ((os.path.join(bindir, "migrate"), b"\x7fELF"),
                        (os.path.join(bindir, "migrate-py"), b"#!")):
        try:
            with open(path, "rb") as f:
                first = f.readline()
        except OSError as err:
            return f"cannot read the runtime's {path!r}: {err.strerror}"
        if not first.startswith(magic) or (magic == b"#!" and b"python" not in first):
            return f"{path} is not migrate's {'launcher' if magic != b'#!' else 'entry script'}"
    return None
