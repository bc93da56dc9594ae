"""Bad input gets one clear line on stderr, a non-zero exit and nothing half-made."""

import json
import os
import stat

import pytest

pytestmark = pytest.mark.requires("root", "busybox")


def _one_line_error(res, *words):
    assert res.returncode != 0
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _nothing_left(runtime, cid):
    assert not os.path.exists(os.path.join(runtime.root, cid))
    for ctrl in ("memory", "pids", "freezer", "cpu"):
        assert os.path.isdir(os.path.dirname(os.path.dirname(runtime.cgroup_dir(ctrl, cid))))
        assert not os.path.exists(runtime.cgroup_dir(ctrl, cid))


def test_malformed_config(runtime, bundle, cid):
    with open(os.path.join(bundle.path, "config.json"), "w") as f:
        f.write('{"ociVersion": "1.2.0", "process": ')
    _one_line_error(runtime("create", "--bundle", bundle.path, cid), "config.json")
    _nothing_left(runtime, cid)


def test_invalid_config(runtime, bundle, cid):
    bundle.config["process"]["args"] = []
    bundle.write()
    _one_line_error(runtime("create", "--bundle", bundle.path, cid), "args")
    _nothing_left(runtime, cid)
    bundle.config["process"]["args"] = ["true"]
    bundle.config["process"]["capabilities"]["bounding"].append("CAP_NOPE")
    bundle.write()
    _one_line_error(runtime("create", "--bundle", bundle.path, cid), "CAP_NOPE")
    _nothing_left(runtime, cid)


def test_missing_config_and_bundle(runtime, tmp_path, cid):
    _one_line_error(runtime("create", "--bundle", str(tmp_path / "nope"), cid), "does not exist")
    _one_line_error(runtime("create", "--bundle", str(tmp_path), cid), "config.json")
    _nothing_left(runtime, cid)


def test_missing_rootfs(runtime, bundle, cid):
    bundle.config["root"]["path"] = "no-such-rootfs"
    bundle.write()
    _one_line_error(runtime("create", "--bundle", bundle.path, cid), "rootfs", "does not exist")
    _nothing_left(runtime, cid)


def test_unknown_container(runtime, cid):
    for cmd in (["state", cid], ["start", cid], ["kill", cid], ["delete", cid],
                ["pause", cid], ["resume", cid], ["ps", cid], ["exec", cid, "true"]):
        _one_line_error(runtime(*cmd), cid, "does not exist")


def test_duplicate_id(runtime, bundle, cid):
    bundle.sh("sleep 300")
    runtime("create", "--bundle", bundle.path, cid).check()
    pid = runtime.state(cid)["pid"]
    _one_line_error(runtime("create", "--bundle", bundle.path, cid), "already exists")
    # the first container is untouched
    assert runtime.state(cid)["pid"] == pid
    assert runtime.state(cid)["status"] == "created"


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", ".", "with space", "x" * 1025, ""])
def test_bad_id(runtime, bundle, bad):
    res = runtime("create", "--bundle", bundle.path, bad)
    _one_line_error(res)
    assert res.returncode == 2
    assert not os.path.exists(os.path.join(os.path.dirname(runtime.root), "escape"))


def test_unknown_signal(runtime, bundle, cid):
    bundle.sh("sleep 300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    _one_line_error(runtime("kill", cid, "SIGWHAT"), "SIGWHAT")
    _one_line_error(runtime("kill", cid, "99"), "99")
    assert runtime.state(cid)["status"] == "running"


def test_bad_flags(runtime, bundle, cid):
    _one_line_error(runtime("create", "--no-such-flag", cid), "no-such-flag")
    _one_line_error(runtime("create", "--bundle"), "argument")
    _one_line_error(runtime("frobnicate"), "frobnicate")
    _one_line_error(runtime("--rootless", "maybe", "list"), "rootless")
    _one_line_error(runtime("--systemd-cgroup", "run", "--bundle", bundle.path, cid), "systemd")
    _nothing_left(runtime, cid)


def test_terminal_without_console_socket(runtime, bundle, cid):
    bundle.config["process"]["terminal"] = True
    bundle.write()
    _one_line_error(runtime("create", "--bundle", bundle.path, cid), "console-socket")
    _nothing_left(runtime, cid)


def test_failing_init_leaves_nothing(runtime, bundle, cid):
    bundle.set_args("/no/such/binary")
    _one_line_error(runtime("run", "-d", "--bundle", bundle.path, cid), "/no/such/binary")
    _nothing_left(runtime, cid)
    bundle.config["mounts"].append({"destination": "/x", "type": "bind",
                                    "source": "/definitely/missing", "options": ["bind"]})
    bundle.set_args("true")
    _one_line_error(runtime("run", "-d", "--bundle", bundle.path, cid), "/definitely/missing")
    _nothing_left(runtime, cid)


def test_log_file_json(runtime, tmp_path, cid):
    log = tmp_path / "log.json"
    res = runtime("--log", str(log), "--log-format=json", "state", cid)
    _one_line_error(res, cid)
    record = json.loads(log.read_text().strip().splitlines()[-1])
    assert record["level"] == "error" and cid in record["msg"]


# Ordinary bad input that used to end in exit 70 ("internal error") with a
# Python exception name instead of one line naming the input.

def _running(runtime, bundle, cid):
    bundle.sh("sleep 300")
    runtime("run", "--detach", "--bundle", bundle.path, cid).check()
    return runtime.state(cid)["pid"]


def test_pid_file_in_missing_directory(runtime, bundle, cid):
    bundle.sh("sleep 300")
    res = runtime("create", "--bundle", bundle.path, "--pid-file", "/nonexistent/dir/pid", cid)
    _one_line_error(res, "--pid-file", "/nonexistent/dir")
    assert res.returncode in (1, 2)
    _nothing_left(runtime, cid)
    _running(runtime, bundle, cid)
    res = runtime("exec", "--pid-file", "/nonexistent/dir/pid", cid, "true")
    _one_line_error(res, "--pid-file", "/nonexistent/dir")
    assert res.returncode == 255     # exec's own failure: runc's code (its exec.bats checks it)


def test_pid_file_never_replaces_a_device_node(runtime, bundle, tmp_path, cid):
    """A pid file is written by rename: onto `/dev/null` that once turned the
    host's /dev/null into a regular file. A device node of the test's own
    (1,3, like /dev/null), never the real one."""
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    bundle.sh("sleep 300")
    res = runtime("create", "--bundle", bundle.path, "--pid-file", str(node), cid)
    _one_line_error(res, "--pid-file", "not a regular file")
    assert res.returncode == 2
    _nothing_left(runtime, cid)
    _running(runtime, bundle, cid)
    res = runtime("exec", "--pid-file", str(node), cid, "true")
    _one_line_error(res, "not a regular file")
    assert stat.S_ISCHR(os.lstat(node).st_mode) and os.lstat(node).st_rdev == os.makedev(1, 3)


def test_root_is_a_file(runtime, bundle, tmp_path, cid):
    afile = tmp_path / "afile"
    afile.write_text("")
    for args in (["list"], ["state", cid], ["create", "--bundle", bundle.path, cid],
                 ["delete", "-f", cid]):
        for root in (str(afile), str(afile / "sub")):
            res = type(runtime)(root, runtime.argv)(*args)
            _one_line_error(res, root)
            assert res.returncode in (1, 2), res


def test_exec_console_socket_missing(runtime, bundle, tmp_path, cid):
    _running(runtime, bundle, cid)
    res = runtime("exec", "-t", "--console-socket", "/nonexistent.sock", cid, "true")
    _one_line_error(res, "--console-socket", "/nonexistent.sock")
    assert res.returncode == 255     # exec's own failure, as runc's
    afile = tmp_path / "not-a-socket"
    afile.write_text("")
    res = runtime("exec", "-t", "-d", "--console-socket", str(afile), cid, "true")
    _one_line_error(res, "--console-socket", "not a socket")
    # nothing was started in the container
    out = runtime("exec", cid, "ps", "-o", "pid,args").check().stdout
    assert "true" not in out


@pytest.mark.requires("criu")
def test_checkpoint_onto_full_filesystem(runtime, bundle, tmp_path, cid):
    import subprocess

    pid = _running(runtime, bundle, cid)
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)], check=True)
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={full}/fill", "bs=4k"],
                       capture_output=True, timeout=30)
        res = runtime("checkpoint", "--image-path", str(full / "img"),
                      "--work-path", str(tmp_path / "work"), cid, timeout=120)
        _one_line_error(res, "No space left on device", str(full))
        assert res.returncode in (1, 2)
    finally:
        subprocess.run(["umount", "-l", str(full)], check=True)
    # the container keeps running, untouched
    assert runtime.status(cid) == "running"
    assert runtime.state(cid)["pid"] == pid
