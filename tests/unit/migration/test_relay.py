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


# -- the lazy-pages stream: CRIU's page server must not take a cut for the end --

def _psi(cmd: int, nr_pages: int = 0, vaddr: int = 0) -> bytes:
    import struct
    import sys

    order = "<" if sys.byteorder == "little" else ">"
    return struct.pack(order + "I4xQQQ", cmd, nr_pages, vaddr, 0)


def _requests(sock, n: int) -> list[int]:
    """The commands of the next ``n`` requests CRIU reads (or fewer at EOF)."""
    import sys

    from migrate.migration._relay import PS_IOV_SIZE

    sock.settimeout(10)
    out, buf = [], b""
    while len(out) < n:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= PS_IOV_SIZE:
            out.append(int.from_bytes(buf[:4], sys.byteorder))
            buf = buf[PS_IOV_SIZE:]
    return out


def test_lazy_stream_closed_by_the_daemon_ends_cleanly():
    from migrate.migration._relay import PS_IOV_CLOSE, LazyPagesRelay

    criu, near, far, daemon = _pairs()
    relay = LazyPagesRelay(near, far, lambda d, n: None).start()
    get = _psi(7, 4, 0x1000)
    # A request split across writes still reaches CRIU whole.
    daemon.sendall(get[:5])
    daemon.sendall(get[5:] + _psi(PS_IOV_CLOSE))
    assert _requests(criu, 2) == [7, PS_IOV_CLOSE]
    criu.sendall(b"\0" * 4)                     # the answer to CLOSE
    assert daemon.recv(16) == b"\0" * 4
    daemon.close()
    assert criu.recv(64) == b""                 # EOF: CRIU's page server ends, dump succeeds
    criu.close()
    assert relay.join(timeout=10)
    assert relay.closed and relay.error is None


def test_lazy_stream_cut_before_close_is_refused():
    """The daemon goes away (or the link) before PS_IOV_CLOSE: CRIU reads a
    request it refuses instead of an EOF it would take for success, and a
    request cut in half never reaches it."""
    from migrate.migration._relay import PS_IOV_REFUSED, LazyPagesRelay

    criu, near, far, daemon = _pairs()
    relay = LazyPagesRelay(near, far, lambda d, n: None).start()
    daemon.sendall(_psi(7, 4, 0x1000) + _psi(7, 8, 0x9000)[:10])
    daemon.close()
    assert _requests(criu, 3) == [7, PS_IOV_REFUSED]
    criu.close()
    assert relay.join(timeout=10)
    assert not relay.closed and "before it had every page" in str(relay.error)


def test_lazy_stream_broken_on_the_pages_side_is_refused():
    from migrate.migration._relay import PS_IOV_REFUSED, LazyPagesRelay

    criu, near, far, daemon = _pairs()
    relay = LazyPagesRelay(near, far, lambda d, n: None).start()
    daemon.sendall(_psi(7, 1, 0x1000))
    assert _requests(criu, 1) == [7]
    daemon.close()                              # gone while pages are on their way
    try:
        for _ in range(64):
            criu.sendall(b"p" * 65536)
    except OSError:
        pass
    assert PS_IOV_REFUSED in _requests(criu, 1)
    criu.close()
    assert relay.join(timeout=10)
    assert not relay.closed
