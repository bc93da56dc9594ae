"""PrefetchRelay against a page server and a daemon that speak CRIU's
page-server protocol as criu/page-xfer.c does (real sockets; the real CRIU
pair runs in the post-copy migration tests)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import pytest

from migrate.criu_rpc import _messages
from migrate.criu_rpc.lazy_prefetch import (
    PAGE,
    PS_IOV_FORCE_CLOSE,
    PS_IOV_GET,
    PrefetchRelay,
    lazy_ranges,
)

PS_IOV_ADD_F = 6
PE_PRESENT = 1 << 2


def page(dst_id: int, address: int) -> bytes:
    tag = f"{dst_id}:{address:#x}".encode()
    return (tag * (PAGE // len(tag) + 1))[:PAGE]


def psi(cmd: int, nr: int = 0, vaddr: int = 0, dst_id: int = 0) -> bytes:
    return (cmd.to_bytes(4, sys.byteorder) + bytes(4) + nr.to_bytes(8, sys.byteorder)
            + vaddr.to_bytes(8, sys.byteorder) + dst_id.to_bytes(8, sys.byteorder))


def unpack(head: bytes) -> tuple[int, int, int, int]:
    return (int.from_bytes(head[:4], sys.byteorder),
            *(int.from_bytes(head[i:i + 8], sys.byteorder) for i in (8, 16, 24)))


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


class PageServer:
    """CRIU's lazy page server: answers each GET with the pages from the
    address to the end of its range (``clamp``: ranges split there too), or
    fails (closes) for an address outside every range; answers the close
    with a status."""

    def __init__(self, sock: socket.socket, ranges, *, clamp: int | None = None) -> None:
        self.sock, self.ranges, self.clamp = sock, ranges, clamp
        self.gets: list[tuple[int, int, int]] = []
        self.closed_with: int | None = None
        self.failed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                head = self.sock.recv(32, socket.MSG_WAITALL)
                if len(head) < 32:
                    return
                cmd, nr, vaddr, dst_id = unpack(head)
                if cmd & 0xFFFF in (0x1023, PS_IOV_FORCE_CLOSE):
                    self.closed_with = cmd & 0xFFFF
                    self.sock.sendall((0).to_bytes(4, sys.byteorder))
                    return
                assert cmd == PS_IOV_GET, cmd
                self.gets.append((dst_id, vaddr, nr))
                end = next((s + n * PAGE for d, s, n in self.ranges
                            if d == dst_id and s <= vaddr < s + n * PAGE), None)
                if end is None:
                    self.failed = True
                    return
                if self.clamp:
                    end = min(end, (vaddr // self.clamp + 1) * self.clamp)
                n = min(nr, (end - vaddr) // PAGE)
                self.sock.sendall(psi(PS_IOV_ADD_F | PE_PRESENT << 16, n, vaddr, dst_id)
                                  + b"".join(page(dst_id, vaddr + i * PAGE) for i in range(n)))
        except OSError:
            pass            # the relay went away: CRIU's page server fails
        finally:
            self.sock.close()

    def pages_served(self) -> list[tuple[int, int]]:
        return [(d, v + i * PAGE) for d, v, n in self.gets for i in range(n)]


class Daemon:
    """criu lazy-pages' side: GETs, each answer checked page by page."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get(self, dst_id: int, vaddr: int, nr: int) -> int:
        self.sock.sendall(psi(PS_IOV_GET, nr, vaddr, dst_id))
        cmd, n, got_vaddr, got_id = unpack(recv_exactly(self.sock, 32))
        assert (cmd & 0xFFFF, got_vaddr, got_id) == (PS_IOV_ADD_F, vaddr, dst_id)
        assert 1 <= n <= nr
        data = recv_exactly(self.sock, n * PAGE)
        for i in range(n):
            assert data[i * PAGE:(i + 1) * PAGE] == page(dst_id, vaddr + i * PAGE)
        return n

    def get_all(self, dst_id: int, vaddr: int, nr: int) -> None:
        """As its background transfer does: 64 KiB first, 64 KiB more
        each time, up to 4 MiB (uffd.c update_xfer_len)."""
        step = 16
        while nr:
            n = self.get(dst_id, vaddr, min(nr, step))
            vaddr += n * PAGE
            nr -= n
            step = min(step + 16, 1024)

    def close(self) -> int:
        self.sock.sendall(psi(PS_IOV_FORCE_CLOSE))
        return int.from_bytes(recv_exactly(self.sock, 4), sys.byteorder)


MIB = 1 << 20
RANGES = [(1, 0x10000000, 512), (1, 0x20000000, 3), (7, 0x30000000, 300)]


@pytest.fixture
def wired():
    made = []

    def make(ranges=RANGES, *, clamp=None, **kw):
        d_near, d_far = socket.socketpair()
        s_near, s_far = socket.socketpair()
        server = PageServer(s_far, ranges, clamp=clamp)
        relay = PrefetchRelay(d_far, s_near, list(ranges), **kw).start()
        made.append((relay, d_near))
        return Daemon(d_near), server, relay

    yield make
    for relay, sock in made:
        relay.abort()
        sock.close()
        assert relay.join(5)


def test_the_daemon_gets_every_page_and_the_source_each_once(wired):
    daemon, server, relay = wired(chunk=64 << 10, in_flight=256 << 10)
    for dst_id, start, nr in RANGES:
        daemon.get_all(dst_id, start, nr)
    assert daemon.close() == 0
    assert relay.join(5) and relay.error is None
    server.thread.join(5)
    assert server.closed_with == PS_IOV_FORCE_CLOSE and not server.failed
    served = server.pages_served()
    assert sorted(served) == sorted(set(served))            # no page twice
    assert len(served) == sum(n for _, _, n in RANGES)
    # Pages went out ahead of the daemon's requests: most were answered
    # from what had come in.
    assert relay.stats["prefetched"] > relay.stats["demanded"]


def test_a_fault_ahead_of_the_prefetch_is_fetched_at_once_and_only_once(wired):
    daemon, server, relay = wired(chunk=16 << 10, in_flight=32 << 10, ahead=64 << 10)
    far = RANGES[0][1] + 400 * PAGE
    assert daemon.get(1, far, 1) == 1               # a fault near the end of the range
    daemon.get_all(1, RANGES[0][1], 400)
    daemon.get_all(1, far + PAGE, 111)
    daemon.get_all(*RANGES[1])
    daemon.get_all(*RANGES[2])
    assert daemon.close() == 0
    served = server.pages_served()
    assert served.count((1, far)) == 1
    assert sorted(served) == sorted(set(served))
    assert relay.stats["demanded"] >= 1


def test_ranges_cut_short_by_the_page_server_are_asked_again(wired):
    daemon, server, relay = wired(clamp=16 * PAGE, chunk=MIB)
    for dst_id, start, nr in RANGES:
        daemon.get_all(dst_id, start, nr)
    assert daemon.close() == 0
    assert not server.failed
    assert len(set(server.pages_served())) == sum(n for _, _, n in RANGES)


def test_the_prefetch_never_asks_outside_the_lazy_ranges(wired):
    daemon, server, relay = wired(chunk=MIB)
    daemon.get_all(*RANGES[2])
    daemon.get_all(*RANGES[0])
    daemon.get_all(*RANGES[1])
    assert daemon.close() == 0
    for dst_id, vaddr, nr in server.gets:
        assert any(d == dst_id and s <= vaddr and vaddr + nr * PAGE <= s + n * PAGE
                   for d, s, n in RANGES)


def test_the_prefetch_stays_within_its_window(wired):
    daemon, server, relay = wired(chunk=16 << 10, in_flight=32 << 10, ahead=64 << 10)
    daemon.get(1, RANGES[0][1], 1)
    time.sleep(0.3)     # let it run ahead as far as it may
    assert len(server.pages_served()) * PAGE <= (64 << 10) + PAGE


def test_a_source_that_ends_early_ends_the_daemons_stream(wired):
    daemon, server, relay = wired(chunk=MIB)
    daemon.get(1, RANGES[0][1], 4)
    server.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises((EOFError, ConnectionError, AssertionError)):
        daemon.get_all(1, RANGES[0][1] + 4 * PAGE, 508)
    assert relay.join(5)
    assert relay.error is not None


def test_a_daemon_that_ends_before_its_close_ends_the_source_stream(wired):
    daemon, server, relay = wired(chunk=MIB)
    daemon.get(1, RANGES[0][1], 4)
    daemon.sock.shutdown(socket.SHUT_WR)
    assert relay.join(5)
    server.thread.join(5)
    assert not server.thread.is_alive() and server.closed_with is None
    assert "before it had every page" in str(relay.error)


def test_an_answer_for_the_wrong_range_is_refused(wired):
    d_near, d_far = socket.socketpair()
    s_near, s_far = socket.socketpair()
    relay = PrefetchRelay(d_far, s_near, RANGES).start()
    d_near.sendall(psi(PS_IOV_GET, 1, RANGES[0][1], 1))
    recv_exactly(s_far, 32)
    s_far.sendall(psi(PS_IOV_ADD_F, 1, RANGES[0][1] + PAGE, 1) + bytes(PAGE))
    assert relay.join(5)
    assert "answered pages" in str(relay.error)
    assert d_near.recv(1) == b""
    for s in (d_near, s_far):
        s.close()


def test_lazy_ranges_reads_the_lazy_entries_of_each_task(tmp_path):
    from migrate.migration.content.store import write_pagemap

    write_pagemap(str(tmp_path / "pagemap-7.img"), 1, [(0x1000, 2, 1 << 1), (0x5000, 1, 1 << 2)])
    write_pagemap(str(tmp_path / "pagemap-1.img"), 2, [(0x9000, 3, (1 << 1) | (1 << 2)),
                                                       (0x3000, 4, 1)])
    (tmp_path / "pagemap-shmem-5.img").write_bytes(b"")
    assert lazy_ranges(str(tmp_path)) == [(1, 0x9000, 3), (7, 0x1000, 2)]
    assert _messages.pagemap_entry   # the table lazy_ranges reads with


def test_a_range_function_that_fails_leaves_a_plain_relay(wired):
    def broken():
        raise OSError("no images")

    d_near, d_far = socket.socketpair()
    s_near, s_far = socket.socketpair()
    server = PageServer(s_far, RANGES)
    relay = PrefetchRelay(d_far, s_near, broken).start()
    daemon = Daemon(d_near)
    daemon.get_all(*RANGES[1])
    assert daemon.close() == 0
    assert relay.join(5) and relay.error is None
    assert relay.stats["prefetched"] == 0
    d_near.close()
    assert os.path.exists("/") and server.closed_with == PS_IOV_FORCE_CLOSE


@pytest.mark.parametrize("slots", [2 * PAGE, 256 * PAGE])
def test_a_range_is_read_whole_whether_or_not_its_pipe_holds_it(slots):
    from migrate.criu_rpc.lazy_prefetch import _Range

    a, b = socket.socketpair()
    want = b"".join(page(3, 0x1000 * i) for i in range(16))
    threading.Thread(target=lambda: [b.sendall(want[i:i + 1000])
                                     for i in range(0, len(want), 1000)], daemon=True).start()
    rng = _Range(0, 16 * PAGE)
    try:
        assert rng.fill(a.fileno(), slots)
        if rng.data is not None:
            got = bytes(rng.data)
        else:
            got = b""
            while len(got) < len(want):
                got += os.read(rng.r, len(want) - len(got))
        assert got == want
        # 1000-byte writes take a slot each: 66 of them fit 256, not 2.
        assert (rng.data is not None) == (slots < 66 * PAGE)
    finally:
        rng.close()
        a.close()
        b.close()


def _with_verdict(wired_make):
    r, w = os.pipe()
    daemon, server, relay = wired_make(control=r, chunk=MIB)
    os.write(w, b"g")
    daemon.get_all(*RANGES[1])
    return daemon, server, relay, w


def test_before_go_only_single_pages_reach_the_source(wired):
    """The container is held until the migration commits: the daemon's
    background pull waits for b"g"; a fault (one page) does not."""
    r, w = os.pipe()
    daemon, server, relay = wired(control=r, chunk=MIB)
    assert daemon.get(7, RANGES[2][1] + 5 * PAGE, 1) == 1       # a fault: served at once
    daemon.sock.sendall(psi(PS_IOV_GET, 16, RANGES[0][1], 1))    # the background pull
    time.sleep(0.3)
    assert server.pages_served() == [(7, RANGES[2][1] + 5 * PAGE)]
    os.write(w, b"g")
    cmd, n, vaddr, dst_id = unpack(recv_exactly(daemon.sock, 32))
    assert (vaddr, dst_id) == (RANGES[0][1], 1) and 1 <= n <= 16
    recv_exactly(daemon.sock, n * PAGE)
    _wait = time.monotonic() + 5
    while len(server.pages_served()) < 100 and time.monotonic() < _wait:
        time.sleep(0.01)
    assert len(server.pages_served()) >= 100        # and the prefetch runs
    os.close(w)


def test_the_daemons_close_waits_for_its_exit_status(wired):
    daemon, server, relay, w = _with_verdict(wired)
    assert daemon.close() == 0          # answered at once, on the source's behalf
    time.sleep(0.1)
    assert server.closed_with is None   # the source still serves
    os.write(w, b"1")                   # the daemon exited 0
    os.close(w)
    assert relay.join(5) and relay.error is None
    server.thread.join(5)
    assert server.closed_with == PS_IOV_FORCE_CLOSE


def test_a_daemon_that_failed_never_closes_the_source_stream(wired):
    daemon, server, relay, w = _with_verdict(wired)
    assert daemon.close() == 0
    os.write(w, b"0")                   # it exited 1, although it sent its close
    os.close(w)
    assert relay.join(5)
    server.thread.join(5)
    assert server.closed_with is None and not server.thread.is_alive()
    assert "daemon failed" in str(relay.error)


def test_without_anyone_to_say_the_close_goes_on(wired):
    daemon, server, relay, w = _with_verdict(wired)
    os.close(w)
    assert daemon.close() == 0
    assert relay.join(5) and relay.error is None
    server.thread.join(5)
    assert server.closed_with == PS_IOV_FORCE_CLOSE
