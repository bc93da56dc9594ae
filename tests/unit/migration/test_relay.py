"""The relay that carries (and counts) CRIU's page-server stream."""

import socket
import threading

from migrate.migration._relay import DOWN, UP, Relay


def _pairs():
    criu, near = socket.socketpair()
    far, peer = socket.socketpair()
    return criu, near, far, peer


def test_copies_and_counts_both_ways_and_passes_the_end_on():
    criu, near, far, peer = _pairs()
    seen = {UP: 0, DOWN: 0}
    lock = threading.Lock()

    def count(direction, n):
        with lock:
            seen[direction] += n

    relay = Relay(near, far, count).start()
    data = bytes(range(256)) * 40000            # ~10 MiB, more than one chunk
    sender = threading.Thread(target=lambda: (criu.sendall(data), criu.shutdown(socket.SHUT_WR)))
    sender.start()
    got = bytearray()
    while chunk := peer.recv(1 << 20):
        got += chunk
    sender.join()
    assert bytes(got) == data
    peer.sendall(b"ok")
    peer.close()
    assert criu.recv(16) == b"ok" and criu.recv(16) == b""
    criu.close()
    assert relay.join(timeout=10)
    assert seen == {UP: len(data), DOWN: 2} == relay.bytes
    assert relay.error is None


def test_a_broken_side_cuts_the_other():
    criu, near, far, peer = _pairs()
    relay = Relay(near, far, lambda d, n: None).start()
    peer.close()                                # the far side is gone
    criu.sendall(b"x" * 4096)
    criu.settimeout(10)
    assert criu.recv(16) == b""                 # CRIU's side sees the end
    criu.close()
    assert relay.join(timeout=10)
