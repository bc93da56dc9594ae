"""The memory stream opens only for the peer that sends the migration's
secret first (criu_rpc.page_stream)."""

import socket
import threading

import pytest

from migrate.criu_rpc.page_stream import accept_with_secret, new_stream_secret, present_secret


def _listener():
    return socket.create_server(("127.0.0.1", 0))


def _connect(port, data=b"", close=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        s.sendall(data)
    if close:
        s.close()
    return s


def test_only_the_peer_with_the_secret_gets_through():
    secret = new_stream_secret()
    assert len(bytes.fromhex(secret)) == 32 and new_stream_secret() != secret
    with _listener() as listener:
        port = listener.getsockname()[1]
        refused = []
        # Rogues first: a wrong secret, a short one that hangs up, garbage.
        rogues = [_connect(port, bytes(32)), _connect(port, b"\x01" * 7, close=True),
                  _connect(port, b"GET / HTTP/1.0\r\n\r\n" + bytes(20))]
        good = _connect(port)
        present_secret(good, secret)
        good.sendall(b"pages")
        got = accept_with_secret(listener, secret, timeout=10, per_peer=2,
                                 refused=refused.append)
        try:
            assert got.recv(16) == b"pages"       # nothing read past the secret
            assert len(refused) == 3
            for r in rogues[::2]:
                r.settimeout(5)
                try:
                    assert r.recv(16) == b""      # closed on them
                except ConnectionResetError:
                    pass                          # closed with their bytes unread
        finally:
            got.close()
            good.close()
            for r in rogues:
                r.close()


def test_a_silent_peer_does_not_hold_the_door():
    """One that connects and says nothing is dropped after ``per_peer``
    seconds; the right peer behind it still gets through."""
    secret = new_stream_secret()
    with _listener() as listener:
        port = listener.getsockname()[1]
        silent = _connect(port)
        good = _connect(port)
        present_secret(good, secret)
        got = accept_with_secret(listener, secret, timeout=10, per_peer=0.3)
        got.close()
        good.close()
        silent.close()


def test_nobody_with_the_secret_times_out():
    with _listener() as listener:
        _connect(listener.getsockname()[1], bytes(32), close=True)
        with pytest.raises(TimeoutError, match="secret"):
            accept_with_secret(listener, new_stream_secret(), timeout=0.5, per_peer=0.2)


def test_a_closed_listener_fails_the_wait():
    listener = _listener()
    threading.Timer(0.2, listener.close).start()
    with pytest.raises(OSError):
        accept_with_secret(listener, new_stream_secret(), timeout=5)
