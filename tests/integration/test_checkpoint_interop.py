"""Checkpoints cross between runc and migrate, and restore into fresh rootfs.

runc 1.1.5 (the installed one) checkpoints a container that migrate
restores, and the other way round; the container keeps counting without a
gap or a repeat. The container redirects its own stdio to its /dev/null
(runc can dump no other file from outside the container).
"""

import os
import shutil
import subprocess
import uuid

import pytest

from runtime_helpers import Runtime, wait_for

pytestmark = pytest.mark.requires("root", "busybox", "criu", "iptables")

COUNTER = ("exec </dev/null >/dev/null 2>&1; "
           "i=0; while true; do i=$((i+1)); echo $i >> /tmp/log; sleep 0.05; done")


@pytest.fixture
def runc():
    rt = Runtime(f"/run/migrate-test/runc-{uuid.uuid4().hex[:10]}", argv=["runc"])
    yield rt
    rt.cleanup()


@pytest.fixture
def counter_bundle(bundle, tmp_path):
    """A counter with a bind mount whose destination is a symlink in the
    rootfs, a bind nested in it, and a tmpfs at /run (as engines add)."""
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir()
    inner.mkdir()
    (inner / "who").write_text("inner\n")
    os.makedirs(os.path.join(bundle.rootfs, "real/data"))
    os.symlink("/real/data", os.path.join(bundle.rootfs, "data"))
    bundle.config["root"]["readonly"] = False
    bundle.config["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(outer), "options": ["rbind", "rw"]},
        {"destination": "/data/nested", "type": "bind", "source": str(inner),
         "options": ["bind", "ro"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
    ]
    bundle.sh(COUNTER)
    return bundle


def _count(bundle):
    try:
        with open(os.path.join(bundle.rootfs, "tmp/log")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def _advances(bundle, more=5):
    n = len(_count(bundle))
    wait_for(lambda: len(_count(bundle)) > n + more, what="the counter advancing")
    values = _count(bundle)
    assert values == list(range(1, len(values) + 1)), \
        f"gap or repeat in {values[:3]}...{values[-3:]}"


def _checkpoint(rt, cid, images, work, *extra):
    res = rt("checkpoint", *extra, "--image-path", images, "--work-path", work, cid)
    assert res.returncode == 0, f"{rt.argv[0]} checkpoint: {res.stderr}{_criu_errors(work)}"


def _restore(rt, bundle, cid, images, work):
    res = rt("restore", "-d", "--image-path", images, "--work-path", work, "--bundle",
             bundle.path, cid)
    assert res.returncode == 0, f"{rt.argv[0]} restore: {res.stderr}{_criu_errors(work)}"
    assert rt.state(cid)["status"] == "running"


def _criu_errors(work):
    out = []
    for name in ("dump.log", "restore.log"):
        path = os.path.join(work, name)
        if os.path.exists(path):
            out += [line for line in open(path) if "Error" in line]
    return "".join(out[-10:])


def _fresh_rootfs(bundle):
    """What a new snapshot looks like: no mount points the runtime made."""
    for path in ("run", "proc", "sys", "dev", "real/data/nested"):
        shutil.rmtree(os.path.join(bundle.rootfs, path), ignore_errors=True)


@pytest.mark.requires("runc")
def test_runc_checkpoint_restores_under_migrate(runtime, runc, counter_bundle, cid, tmp_path):
    runc("run", "-d", "--bundle", counter_bundle.path, cid).check()
    _advances(counter_bundle)
    _checkpoint(runc, cid, str(tmp_path / "img"), str(tmp_path / "work"))
    runc("delete", cid)
    _fresh_rootfs(counter_bundle)
    _restore(runtime, counter_bundle, cid, str(tmp_path / "img"), str(tmp_path / "work2"))
    _advances(counter_bundle)
    seen = runtime("exec", cid, "cat", "/data/nested/who").check().stdout
    assert seen == "inner\n"
    runtime("delete", "--force", cid).check()


@pytest.mark.requires("runc")
def test_migrate_checkpoint_restores_under_runc(runtime, runc, counter_bundle, cid, tmp_path):
    runtime("run", "-d", "--bundle", counter_bundle.path, cid).check()
    _advances(counter_bundle)
    # the default images: runc restores them as its own
    _checkpoint(runtime, cid, str(tmp_path / "img"), str(tmp_path / "work"))
    _fresh_rootfs(counter_bundle)
    _restore(runc, counter_bundle, cid, str(tmp_path / "img"), str(tmp_path / "work2"))
    _advances(counter_bundle)
    assert runc("exec", cid, "cat", "/data/nested/who").check().stdout == "inner\n"
    # and back: runc's checkpoint of what it restored restores here again
    _checkpoint(runc, cid, str(tmp_path / "img3"), str(tmp_path / "work3"))
    runc("delete", cid)
    _restore(runtime, counter_bundle, cid, str(tmp_path / "img3"), str(tmp_path / "work4"))
    _advances(counter_bundle)
    runtime("delete", "--force", cid).check()


def test_restore_into_a_fresh_rootfs(runtime, counter_bundle, cid, tmp_path):
    """containerd's `ctr containers restore --live` case: mount points the
    runtime made at create time are gone, bind sources emptied."""
    runtime("run", "-d", "--bundle", counter_bundle.path, cid).check()
    _advances(counter_bundle)
    _checkpoint(runtime, cid, str(tmp_path / "img"), str(tmp_path / "work"))
    _fresh_rootfs(counter_bundle)
    for entry in os.listdir(tmp_path / "outer"):           # the nested mount point
        shutil.rmtree(tmp_path / "outer" / entry)
    _restore(runtime, counter_bundle, cid, str(tmp_path / "img"), str(tmp_path / "work2"))
    _advances(counter_bundle)
    assert runtime("exec", cid, "cat", "/data/nested/who").check().stdout == "inner\n"
    runtime("delete", "--force", cid).check()


def test_dev_null_stdio_restores_with_stderr_to_a_file(runtime, rw_bundle, cid, tmp_path):
    """stdio was /dev/null at checkpoint time; the restoring process writes
    its stderr to a file (runc restores this: CRIU reopens /dev/null)."""
    rw_bundle.sh("i=0; while true; do i=$((i+1)); echo $i >> /tmp/log; sleep 0.05; done")
    subprocess.run([*runtime.argv, "--root", runtime.root, "run", "-d", "--bundle",
                    rw_bundle.path, cid], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, check=True)
    _advances(rw_bundle)
    images = str(tmp_path / "img")
    runtime("checkpoint", "--image-path", images, cid).check()
    # Runtime() gives the restoring process files for stdout and stderr
    runtime("restore", "-d", "--image-path", images, "--bundle", rw_bundle.path, cid).check()
    _advances(rw_bundle)
    pid = runtime.state(cid)["pid"]
    for fd in range(3):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    runtime("delete", "--force", cid).check()


def test_criu_failure_quotes_the_log(runtime, rw_bundle, cid, tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    (images / "descriptors.json").write_text('["/dev/null", "/dev/null", "/dev/null"]')
    res = runtime("restore", "-d", "--image-path", str(images), "--bundle", rw_bundle.path, cid)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines[0] == f"migrate: errors in {images}/restore.log:"
    assert any("Error (" in line for line in lines[1:-1])
    assert lines[-1].startswith("migrate: criu restore failed")
    assert runtime.status(cid) == "gone"


@pytest.fixture
def rw_bundle(bundle):
    bundle.config["root"]["readonly"] = False
    bundle.write()
    return bundle



def test_runc_flag_spellings_reach_criu(runtime, rw_bundle, cid, tmp_path):
    """runc's spellings (they exited 70 or were refused) checkpoint and restore."""
    rw_bundle.sh(COUNTER)
    runtime("run", "-d", "--bundle", rw_bundle.path, cid).check()
    _advances(rw_bundle)
    images = str(tmp_path / "img")
    runtime("checkpoint", "--manage-cgroups-mode", "soft", "--network-lock", "skip",
            "--empty-ns", "network", "--image-path", images, cid).check()
    runtime("restore", "-d", "--manage-cgroups-mode=full", "--empty-ns", "network",
            "--image-path", images, "--bundle", rw_bundle.path, cid).check()
    _advances(rw_bundle)
    bad = runtime("checkpoint", "--manage-cgroups-mode", "props", cid)
    assert bad.returncode == 2 and "internal error" not in bad.stderr
    runtime("delete", "--force", cid).check()
