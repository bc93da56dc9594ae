"""The launcher's parent/child protocol: JSON packets with optional fds."""

import os
import socket

import pytest

from migrate.runtime.sync import SyncError, SyncSocket, socketpair


@pytest.fixture
def pair():
    parent, child = socketpair()
    yield parent, child
    for end in (parent, child):
        if end.sock.fileno() >= 0:
            end.close()


def test_packets_keep_their_boundaries(pair):
    parent, child = pair
    parent.send({"type": "go"})
    parent.send({"type": "idmap_ok"})
    assert child.recv(1) == ({"type": "go"}, [])
    assert child.recv(1) == ({"type": "idmap_ok"}, [])


def test_ends_are_close_on_exec(pair):
    for end in pair:
        assert not os.get_inheritable(end.fileno())
    assert pair[0].sock.type == socket.SOCK_SEQPACKET


def test_a_file_descriptor_rides_along(pair):
    parent, child = pair
    r, w = os.pipe()
    try:
        child.send({"type": "console"}, (r,))
        msg, fds = parent.expect("console", 1)
        assert msg == {"type": "console"} and len(fds) == 1
        os.write(w, b"hi")
        assert os.read(fds[0], 2) == b"hi"
        os.close(fds[0])
    finally:
        os.close(r)
        os.close(w)


def test_expect_raises_the_childs_error(pair):
    parent, child = pair
    child.send({"type": "error", "msg": 'mount proc on /proc: Operation not permitted'})
    with pytest.raises(SyncError, match="mount proc on /proc: Operation not permitted"):
        parent.expect("ready", 1)


def test_expect_refuses_an_unexpected_message(pair):
    parent, child = pair
    child.send({"type": "hooks"})
    with pytest.raises(SyncError, match='expected "ready" from the container init, got "hooks"'):
        parent.expect("ready", 1)


def test_end_of_file_when_the_child_dies(pair):
    parent, child = pair
    child.close()
    with pytest.raises(SyncError, match="exited before it was ready"):
        parent.recv(1)


def test_malformed_packet(pair):
    parent, child = pair
    child.sock.send(b"{not json")
    with pytest.raises(SyncError, match="malformed message"):
        parent.recv(1)


def test_timeout(pair):
    parent, _child = pair
    with pytest.raises(SyncError, match="timed out"):
        parent.recv(0.01)
    assert parent.sock.gettimeout() is None      # blocking again afterwards


def test_send_to_a_closed_peer(pair):
    parent, child = pair
    child.close()
    with pytest.raises(SyncError, match="sending go"):
        parent.send({"type": "go"})


def test_wraps_any_socket():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sa, sb = SyncSocket(a), SyncSocket(b)
    try:
        sa.send({"type": "pid", "pid": 42})
        assert sb.expect("pid", 1)[0]["pid"] == 42
    finally:
        sa.close()
        sb.close()
