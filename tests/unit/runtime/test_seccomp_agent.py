"""The message to a seccomp agent (runtime-spec ContainerProcessState)."""

import json
import os
import socket

import pytest

from migrate.errors import NotFoundError
from migrate.runtime.seccomp_agent import process_state, send_listener

STATE = {"ociVersion": "1.0.2", "id": "c1", "pid": 42, "status": "creating",
         "bundle": "/b", "rootfs": "/b/rootfs", "created": "x", "owner": "",
         "annotations": {}}


def test_process_state_has_the_spec_fields_only():
    msg = process_state(oci_version="1.0.2", pid=43, metadata="bar", state=STATE)
    assert msg == {"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 43, "metadata": "bar",
                   "state": {"ociVersion": "1.0.2", "id": "c1", "pid": 42,
                             "status": "creating", "bundle": "/b"}}
    assert "metadata" not in process_state(oci_version="1", pid=1, metadata="", state=STATE)


def test_send_listener_passes_one_message_with_the_fd(tmp_path):
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    r, w = os.pipe()
    try:
        send_listener(path, {"fds": ["seccompFd"]}, r)
        conn, _ = server.accept()
        data, fds, _, _ = socket.recv_fds(conn, 4096, 2)
        assert json.loads(data) == {"fds": ["seccompFd"]} and len(fds) == 1
        os.write(w, b"x")
        assert os.read(fds[0], 1) == b"x"      # the same pipe
        os.close(fds[0])
        conn.close()
    finally:
        server.close()
        os.close(r)
        os.close(w)


def test_no_agent_is_one_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="failed to connect with seccomp agent .*nobody"):
        send_listener(str(tmp_path / "nobody"), {}, 0)
