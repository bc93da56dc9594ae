"""Process I/O with a terminal: console socket (detached) and our own pty (foreground)."""

import os
import pty
import select
import socket
import subprocess
import time

import pytest

pytestmark = pytest.mark.requires("root", "busybox")


def _read_until(fd, needle: bytes, timeout=10.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_console_socket_receives_the_pty(runtime, bundle, cid, tmp_path):
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    bundle.config["process"]["consoleSize"] = {"height": 33, "width": 101}
    bundle.set_args("sh", terminal=True)
    res = runtime("create", "--bundle", bundle.path, "--console-socket", path, cid)
    res.check()
    conn, _ = server.accept()
    msg, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    assert fds, "no fd received"
    master = fds[0]
    runtime("start", cid).check()
    os.write(master, b"tty; stty size; echo marker-$((40+2))\n")
    out = _read_until(master, b"marker-42")
    assert b"marker-42" in out
    assert b"/dev/pts/0" in out
    assert b"33 101" in out
    os.write(master, b"exit 3\n")
    assert runtime.wait_status(cid, "stopped") == "stopped"
    os.close(master)
    conn.close()
    server.close()


def test_foreground_terminal_is_proxied(runtime, bundle, cid):
    master, slave = pty.openpty()
    bundle.set_args("sh", "-c", "tty; echo fg-$((1+1)); exit 4", terminal=True)
    proc = subprocess.Popen([*runtime.argv, "--root", runtime.root, "run", "--bundle", bundle.path,
                             cid], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        out = _read_until(master, b"fg-2")
        assert proc.wait(timeout=20) == 4
    finally:
        proc.kill()
        proc.wait()
    out += _read_until(master, b"\0", timeout=0.5)
    os.close(master)
    assert b"fg-2" in out
    assert b"/dev/pts/0" in out


def test_exec_with_tty_and_console_socket(runtime, bundle, cid, tmp_path):
    bundle.sh("sleep 300")
    runtime("run", "-d", "--bundle", bundle.path, cid).check()
    path = str(tmp_path / "exec.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    runtime("exec", "--tty", "--detach", "--console-socket", path, cid, "sh").check()
    conn, _ = server.accept()
    _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    master = fds[0]
    os.write(master, b"tty; echo exec-$((3*3))\n")
    out = _read_until(master, b"exec-9")
    assert b"exec-9" in out and b"/dev/pts/" in out
    os.write(master, b"exit\n")
    os.close(master)
    conn.close()
    server.close()


def test_stdio_pipes_are_passed_through(runtime, bundle, cid):
    bundle.sh("read line; echo got:$line; echo to-err >&2")
    proc = subprocess.run([*runtime.argv, "--root", runtime.root, "run", "--bundle", bundle.path,
                           cid], input=b"hello\n", capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"got:hello\n"
    assert proc.stderr == b"to-err\n"


@pytest.mark.parametrize("via", ["run", "exec"])
def test_a_non_root_user_owns_its_terminal(runtime, bundle, cid, via):
    # As runc (tty.bats "tty owner ({u,g}id != 0)"): the owner becomes the
    # process's user, the group stays devpts's tty group (5).
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 100}
    probe = "stat -c owner=%u:%g $(tty); echo done-$((2+2))"
    master, slave = pty.openpty()
    if via == "run":
        bundle.set_args("sh", "-c", probe, terminal=True)
        argv = [*runtime.argv, "--root", runtime.root, "run", "--bundle", bundle.path, cid]
    else:
        bundle.sh("sleep 300")
        runtime("run", "-d", "--bundle", bundle.path, cid).check()
        argv = [*runtime.argv, "--root", runtime.root, "exec", "--tty", cid, "sh", "-c", probe]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    try:
        out = _read_until(master, b"done-4")
        assert proc.wait(timeout=20) == 0, out
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    assert b"owner=1000:5" in out, out
