"""SIGKILL at any point of `create` or `restore`, then `delete --force`:
nothing is left (state, cgroups, mounts, processes) and the ID works again."""

import glob
import os
import random
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

pytestmark = pytest.mark.requires("root", "busybox")

TRIES = 20


def _marked(marker: str) -> list[int]:
    """Live processes ("pid argv0") whose command line or environment holds ``marker``."""
    found = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{d}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            with open(f"{d}/cmdline", "rb") as f:
                data = f.read()
            with open(f"{d}/environ", "rb") as f:
                data += f.read()
        except OSError:
            continue
        if marker.encode() in data:
            found.append(f"{d.rsplit('/', 1)[1]} {data.split(bytes(1))[0].decode(errors='replace')}")
    return found


def _leftovers(runtime, cid: str, marker: str, work: str | None = None) -> list[str]:
    """What is left of ``cid``; ``work``: CRIU's work directory, where a
    killed CRIU leaves its cgroup yard mounted."""
    out = []
    if os.path.lexists(os.path.join(runtime.root, cid)):
        out.append(f"state dir: {os.listdir(os.path.join(runtime.root, cid))}")
    tag = os.path.basename(os.path.dirname(runtime.cgroup_dir("memory", cid)))
    out += [f"cgroup {p}" for p in glob.glob(f"/sys/fs/cgroup/*/{tag}/{cid}")]
    with open("/proc/self/mountinfo") as f:
        out += [f"mount {line.split()[4]}" for line in f if cid in line.split()[4]
                or (work and line.split()[4].startswith(work + "/"))]
    out += [f"process {pid}" for pid in _marked(marker)]
    return out


def _interrupt(runtime, argv, delay: float, marker: str, errors: list,
               after: str | None = None) -> int:
    """Run ``argv``, SIGKILL it ``delay`` s after its start (or, with
    ``after``, after that path appears: the ID is claimed)."""
    env = dict(os.environ, MIGRATE_TEST_MARK=marker)
    # A named file, as the runtime helper's: a restore wants stdio of the same
    # kind and mode as at checkpoint time.
    with tempfile.TemporaryDirectory(prefix="kill9-") as tmp, \
            open(os.path.join(tmp, "out"), "w+b") as err:
        proc = subprocess.Popen([*runtime.argv, "--root", runtime.root, *argv], env=env,
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        if after is not None:
            deadline = time.monotonic() + 30
            while not os.path.exists(after) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=30)
        if code not in (0, -signal.SIGKILL):
            err.seek(0)
            errors.append(f"exit {code}: {err.read().decode(errors='replace').strip()}")
    return code


def _duration(runtime, argv, cid) -> float:
    """The shortest of two uninterrupted runs (the first one is often cold)."""
    best = None
    for _ in range(2):
        t0 = time.monotonic()
        runtime(*argv).check()
        took = time.monotonic() - t0
        runtime("delete", "--force", cid).check()
        best = took if best is None else min(best, took)
    return best


def _kill9_series(runtime, cid, marker, argv, duration, work=None):
    rng = random.Random(int(uuid.uuid4().hex[:8], 16))
    killed_mid = half_made_count = 0
    errors: list[str] = []
    for i in range(TRIES):
        # Even tries: anywhere in the run. Odd ones: after the ID is claimed
        # (under load, Python's start-up alone may eat the whole window).
        if i % 2 == 0:
            delay, after = rng.uniform(0, duration * 1.1), None
        else:
            delay, after = rng.uniform(0, duration * 0.7), os.path.join(runtime.root, cid)
        code = _interrupt(runtime, argv, delay, marker, errors, after)
        killed_mid += code == -signal.SIGKILL
        half_made = os.path.isdir(os.path.join(runtime.root, cid)) and \
            not os.path.exists(os.path.join(runtime.root, cid, "state.json"))
        half_made_count += half_made
        res = runtime("delete", "--force", cid, timeout=60)
        assert res.returncode == 0, res.stderr
        left = _leftovers(runtime, cid, marker, work)
        assert not left, f"try {i}, killed after {delay * 1000:.0f} ms " \
                         f"(half-made: {half_made}): {left}"
    print(f"{argv[0]}: {TRIES} tries, {killed_mid} killed before the command finished, "
          f"{half_made_count} left a half-made ID (operation takes {duration * 1000:.0f} ms)")
    # Else the kills all landed before the ID was claimed or after the end.
    assert half_made_count >= 2, f"too few kills landed inside the operation to mean anything; " \
                                 f"failures: {errors[:3]}"


def test_kill9_during_create(runtime, bundle, cid):
    marker = f"mark-{uuid.uuid4().hex}"
    bundle.set_args("sh", "-c", "sleep 1000", marker)
    argv = ["create", "--bundle", bundle.path, cid]
    duration = _duration(runtime, argv, cid)
    _kill9_series(runtime, cid, marker, argv, duration)
    runtime(*argv).check()          # the ID is usable again
    assert runtime.state(cid)["status"] == "created"
    runtime("delete", "--force", cid).check()
    assert not _leftovers(runtime, cid, marker)


@pytest.mark.requires("criu", "iptables")
def test_kill9_during_restore(runtime, bundle, cid, tmp_path):
    marker = f"mark-{uuid.uuid4().hex}"
    bundle.config["root"]["readonly"] = False
    bundle.set_args("sh", "-c", "while true; do sleep 0.1; done", marker)
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    images = str(tmp_path / "img")
    runtime("checkpoint", "--image-path", images, cid).check()
    argv = ["restore", "-d", "--image-path", images, "--bundle", bundle.path, cid]
    duration = _duration(runtime, argv, cid)
    _kill9_series(runtime, cid, marker, argv, duration, work=images)
    runtime(*argv).check()
    assert runtime.state(cid)["status"] == "running"
    runtime("delete", "--force", cid).check()
    assert not _leftovers(runtime, cid, marker)


def test_half_made_id_is_explained(runtime, bundle, cid):
    os.makedirs(os.path.join(runtime.root, cid))
    res = runtime("state", cid)
    assert res.returncode == 1 and "delete --force" in res.stderr
    res = runtime("create", "--bundle", bundle.path, cid)
    assert res.returncode != 0 and "delete --force" in res.stderr
    assert runtime("list", "-q").stdout.split() == []
    runtime("delete", "--force", cid).check()
    assert not os.path.exists(os.path.join(runtime.root, cid))
    runtime("create", "--bundle", bundle.path, cid).check()
    runtime("delete", "--force", cid).check()
