"""Fuzzing config.json fields and create's command line (issue 11): whatever
the input, the runtime exits 0, 1 or 2 with no traceback, and a failed
create leaves no state directory, cgroup, mount or process behind.

Bounded: a few dozen examples per run (each is one real `create`).
"""

import copy
import json
import os
import stat

import pytest

hypothesis = pytest.importorskip("hypothesis")   # the [test] extra; install-deps installs it
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.requires("root", "busybox")

# JSON values of every kind, with the edges that broke things before
# (2**64-1 rlimits, negative numbers, huge strings, wrong types).
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "/", "..", "../../etc", "/nonexistent", "x" * 5000, "\x00", "é",
                     "RLIMIT_CORE", "CAP_SYS_ADMIN", "tmpfs", "bind", "rbind", "ro"]),
    st.text(max_size=20),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)

# Where to put a value: paths into the config (a list index of -1 appends).
FIELDS = [
    ("ociVersion",), ("process", "args"), ("process", "args", 0), ("process", "env"),
    ("process", "env", -1), ("process", "cwd"), ("process", "user", "uid"),
    ("process", "user", "gid"), ("process", "user", "additionalGids"),
    ("process", "user", "umask"), ("process", "terminal"),
    ("process", "capabilities", "bounding"), ("process", "capabilities", "effective", -1),
    ("process", "rlimits"), ("process", "rlimits", 0, "hard"), ("process", "rlimits", 0, "soft"),
    ("process", "rlimits", 0, "type"), ("process", "noNewPrivileges"),
    ("process", "oomScoreAdj"), ("root",), ("root", "path"), ("root", "readonly"),
    ("hostname",), ("mounts",), ("mounts", -1), ("mounts", 0, "destination"),
    ("mounts", 0, "type"), ("mounts", 0, "options"), ("mounts", 0, "source"),
    ("linux", "namespaces"), ("linux", "namespaces", -1), ("linux", "resources"),
    ("linux", "resources", "memory"), ("linux", "resources", "pids", "limit"),
    ("linux", "resources", "cpu", "shares"), ("linux", "maskedPaths", -1),
    ("linux", "readonlyPaths"), ("linux", "sysctl"), ("linux", "devices", -1),
    ("linux", "uidMappings"), ("linux", "cgroupsPath"), ("linux", "seccomp"),
    ("linux", "rootfsPropagation"), ("hooks",), ("hooks", "prestart"), ("annotations",),
]

CREATE_FLAGS = ["--pid-file", "--console-socket", "--preserve-fds", "--no-pivot",
                "--no-new-keyring", "--bundle"]
FLAG_VALUES = st.sampled_from(["", "-1", "0", "3", "99999999999999999999", "/nonexistent/x",
                               "null-dev", "/", "x" * 300, "--bundle", "=", "-"])


def _null_node(directory: str) -> str:
    """``null-dev`` in ``directory``: a char device 1,3 like /dev/null, of the
    test's own, that the fuzzed paths name (never the machine's /dev/null: a
    pid file renamed onto it once made the host's a regular file)."""
    path = os.path.join(directory, "null-dev")
    if not os.path.lexists(path):
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return path


def _still_a_device(path: str) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def _set(config, path, value):
    node = config
    for key in path[:-1]:
        if isinstance(node, list):
            if not node:
                return
            key = min(key, len(node) - 1) if isinstance(key, int) else 0
            node = node[key]
        elif isinstance(node, dict):
            node = node.setdefault(key, {} if not isinstance(key, int) else [])
        else:
            return
    last = path[-1]
    if isinstance(node, list):
        if last == -1 or not node:
            node.append(value)
        elif isinstance(last, int):
            node[min(last, len(node) - 1)] = value
    elif isinstance(node, dict) and not isinstance(last, int):
        node[last] = value


def _leftovers(runtime, cid, bundle_path) -> list[str]:
    found = []
    if os.path.exists(os.path.join(runtime.root, cid)):
        found.append(f"state dir {runtime.root}/{cid}")
    for ctrl in ("memory", "pids", "cpu", "freezer", "unified"):
        if os.path.exists(runtime.cgroup_dir(ctrl, cid)):
            found.append(f"cgroup {runtime.cgroup_dir(ctrl, cid)}")
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {l.split()[4]}" for l in f if bundle_path in l.split()[4]]
    rootfs = os.path.join(bundle_path, "rootfs")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/root") == rootfs:
                found.append(f"process {pid}")
        except OSError:
            pass
    return found


@settings(max_examples=int(os.environ.get("MIGRATE_FUZZ_EXAMPLES", "30")), deadline=None,
          database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3),
       flags=st.lists(st.tuples(st.sampled_from(CREATE_FLAGS), FLAG_VALUES), max_size=2))
def test_fuzz_create(runtime, bundle, edits, flags):
    import uuid

    cid = f"f-{uuid.uuid4().hex[:8]}"
    config = copy.deepcopy(bundle.config)
    config["process"]["args"] = ["true"]
    for path, value in edits:
        _set(config, path, value)
    with open(os.path.join(bundle.path, "config.json"), "w") as f:
        json.dump(config, f)
    argv = ["create", "--bundle", bundle.path]
    for flag, value in flags:
        argv += [flag] if flag in ("--no-pivot", "--no-new-keyring") else [flag, value]
    here = os.path.dirname(bundle.path)
    node = _null_node(here)
    res = runtime(*argv, cid, timeout=60, cwd=here)
    assert _still_a_device(node), (argv, "null-dev was replaced")
    try:
        assert res.returncode in (0, 1, 2), (res, edits, flags)
        assert "Traceback (most recent" not in res.stderr and "internal error:" not in res.stderr, \
            (res.stderr, edits, flags)
        if res.returncode != 0:
            assert len([l for l in res.stderr.splitlines() if l.strip()]) == 1, res.stderr
            assert _leftovers(runtime, cid, bundle.path) == [], (res.stderr, edits, flags)
    finally:
        if res.returncode == 0:
            runtime("delete", "--force", cid, timeout=30)
            assert _leftovers(runtime, cid, bundle.path) == []


@settings(max_examples=int(os.environ.get("MIGRATE_FUZZ_EXAMPLES", "30")), deadline=None,
          database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.one_of(
    st.sampled_from(["create", "start", "run", "exec", "state", "kill", "delete", "list",
                     "checkpoint", "restore", "ps", "pause", "resume",
                     "--log-format", "--debug", "-d", "-t", "--force", "--all", "--bundle",
                     "--pid-file", "--console-socket", "--image-path", "--signal", "-1",
                     "KILL", "SIGFOO", "99999", "/nonexistent", "null-dev", "", "-",
                     "--", "=", "nope-id", "../x"]),
    # argv cannot carry NUL (execve stops there)
    st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=10)),
    min_size=1, max_size=5))
def test_fuzz_command_line(runtime, tmp_path, args):
    # No container exists under this root: every command fails or prints;
    # none may crash or hang. Run in an empty directory (the default bundle
    # is ".").
    node = _null_node(str(tmp_path))
    res = runtime(*args, timeout=60, cwd=str(tmp_path))
    assert _still_a_device(node), (args, "null-dev was replaced")
    # 255: exec's own failures, runc's code for them (exec.go fatalWithCode).
    assert res.returncode in (0, 1, 2) or (res.returncode == 255 and "exec" in args), (res, args)
    assert "Traceback (most recent" not in res.stderr and "internal error:" not in res.stderr, (res.stderr, args)
