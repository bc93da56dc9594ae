"""The migration transport and agent between two network-namespace hosts.

Host a (10.250.0.1) is the source, host b (10.250.0.2) runs the agent; the
two are joined by a veth pair (netns_hosts.py). The agent runs in this
process (its listening socket made inside b) or, to be killed, in its own
process inside b. The restore is a fake (FakeRestore): what is tested here
is the transport, the agent's life and the failure detection, not CRIU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from migrate.errors import MigrationError, ProtocolError
from migrate.migration import (
    Agent,
    ConnectOptions,
    Kind,
    Listener,
    PrepareRequest,
    RestoreRequest,
    Timeouts,
    connect,
    connect_and_negotiate,
)
from migrate.testing import FakeHostFacts, FakeRestore

pytestmark = [pytest.mark.requires("root", "netns"), pytest.mark.timeout(120)]

TOKEN = "integration-token"
MIB = 1 << 20
HELPERS = Path(__file__).parent / "helpers"


def compressible(total: int, piece: int = MIB, *, on_chunk=None):
    """``total`` bytes in ``piece``-sized chunks, a sixteenth of each random
    (so about 16:1 for zstd); ``on_chunk(i)`` runs before chunk i."""
    zeros = bytes(piece - piece // 16)
    for i in range(total // piece):
        if on_chunk is not None:
            on_chunk(i)
        yield os.urandom(piece // 16) + zeros


def file_stream(total: int):
    """The header of a file stream the agent writes into its work directory."""
    return {"what": "file", "label": "images", "name": "pages-1.img", "size": total,
            "mode": 0o600}


class RunningAgent:
    """An in-process agent listening inside host b, served by a thread."""

    def __init__(self, hosts, tmp_path: Path, **kw) -> None:
        self.root = tmp_path / "dest-root"
        self.work = tmp_path / "dest-work"
        self.root.mkdir(exist_ok=True)
        self.events = []
        kw.setdefault("restore_fn", FakeRestore())
        kw.setdefault("facts", FakeHostFacts())
        with hosts.b.entered():
            self.agent = Agent(hosts.b.address, 0, TOKEN, str(self.root), work_root=str(self.work),
                               on_event=self.events.append, **kw)
        self.port = self.agent.address[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.agent.serve, kwargs={"stop": self.stop},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.agent.close()
        self.thread.join(15)
        assert not self.thread.is_alive()

    def wait_outcomes(self, n: int, timeout: float = 20) -> list:
        deadline = time.monotonic() + timeout
        while len(self.agent.outcomes) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.agent.outcomes) >= n, (self.agent.outcomes, self.events)
        return self.agent.outcomes


@pytest.fixture
def agent(netns_hosts, tmp_path):
    running = RunningAgent(netns_hosts, tmp_path)
    yield running
    running.close()


def negotiate(hosts, port, *, token=TOKEN, **kw):
    options = ConnectOptions(host=hosts.b.address, port=port, token=token, **kw)
    with hosts.a.entered():
        return connect_and_negotiate(options, facts=FakeHostFacts())


# -- handshake and bulk data ---------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zstd"])
def test_handshake_and_a_64_mib_stream(netns_hosts, compress):
    total = 64 * MIB
    with netns_hosts.b.entered():
        listener = Listener(netns_hosts.b.address, 0, TOKEN, criu_version="4.2.1",
                            features={"lazy_pages": True}, host_name="host-b")
    received = {}

    def serve():
        conn = listener.accept(timeout=10)
        with conn, conn.in_phase("memory"):
            stream = conn.recv_stream(what="pages")
            received["bytes"] = sum(len(d) for d in stream)
            received["counters"] = dict(conn.counters)
            conn.send(Kind.DONE)
            received["peer"] = conn.peer_info

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    with netns_hosts.a.entered():
        conn = connect(netns_hosts.b.address, listener.address[1], TOKEN, criu_version="4.2.1",
                       compress=compress, host_name="host-a")
    with conn:
        assert conn.peer_info.host == "host-b" and conn.peer_info.features == {"lazy_pages": True}
        assert conn.compression == ("zstd" if compress else None)
        started = time.monotonic()
        with conn.in_phase("memory"):
            sent = conn.send_stream({"what": "pages"}, compressible(total))
            conn.recv(Kind.DONE)
        seconds = time.monotonic() - started
    server.join(30)
    listener.close()
    assert received["bytes"] == total == sent.raw
    assert received["peer"].host == "host-a"
    mine, theirs = conn.counters["memory"], received["counters"]["memory"]
    assert mine.bytes_on_wire == theirs.bytes_on_wire     # counted alike on both hosts
    assert mine.bytes_raw == theirs.bytes_raw > total
    if compress:
        assert total / 20 < mine.bytes_on_wire < total / 8
    else:
        assert total < mine.bytes_on_wire < total * 1.001
    print(f"64 MiB {'zstd' if compress else 'raw'}: {seconds:.2f} s, "
          f"{mine.bytes_on_wire / MIB:.1f} MiB on the wire")


def test_wrong_token_is_rejected_and_the_agent_goes_on(netns_hosts, agent):
    with pytest.raises(ProtocolError) as info:
        negotiate(netns_hosts, agent.port, token="not-the-token")
    assert "the destination refused: authentication failed (wrong token)" in str(info.value)
    with negotiate(netns_hosts, agent.port) as session:
        assert session.peer.criu_version == "4.2.1"
        session.abort("only checking")
    assert [e.kind for e in agent.events][:2] == ["listening", "refused"]
    assert "wrong token" in agent.events[1].message


# -- the agent's life ------------------------------------------------------------------


def migrate_once(hosts, port, tmp_path, cid):
    rootfs = tmp_path / f"rootfs-{cid}"
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "hostname").write_text(cid)
    with negotiate(hosts, port) as session:
        session.prepare(PrepareRequest(container_id=cid, rootfs="copy", rootfs_size=1000,
                                       images_size=MIB, cpuinfo=True))
        conn = session.conn
        with conn.in_phase("rootfs"):
            conn.send_tree(str(rootfs), label="rootfs")
        with conn.in_phase("restore"):
            conn.send(Kind.RESTORE, RestoreRequest(container_id=cid).to_header())
            info = conn.recv(Kind.RESTORED, timeout=30).header["info"]
            conn.send(Kind.DONE)
            conn.recv(Kind.DONE)
        return info


def test_agent_survives_failures_and_serves_the_next(netns_hosts, tmp_path):
    restore = FakeRestore(fail_on=frozenset({1}))
    running = RunningAgent(netns_hosts, tmp_path, restore_fn=restore)
    try:
        # 1: the restore fails; the source hears why, the agent cleans up.
        with pytest.raises(MigrationError, match=r"the destination failed \(restore\): "
                                                 "criu restore failed: fake restore failed"):
            migrate_once(netns_hosts, running.port, tmp_path, "c1")
        running.wait_outcomes(1)   # until then the agent is busy cleaning up
        # 2: the source vanishes in the middle of a stream.
        session = negotiate(netns_hosts, running.port)
        session.prepare(PrepareRequest(container_id="c2"))
        stream = compressible(64 * MIB, on_chunk=lambda i: i == 3 and session.conn._sock.close())
        with pytest.raises((MigrationError, OSError)):
            session.conn.send_stream(file_stream(64 * MIB), stream)
        running.wait_outcomes(2)
        # 3: a whole migration works.
        assert migrate_once(netns_hosts, running.port, tmp_path, "c3") == {"pid": 4242, "call": 2}
        outcomes = running.wait_outcomes(3)
    finally:
        running.close()
    assert [o.succeeded for o in outcomes] == [False, False, True]
    assert not os.path.exists(outcomes[0].workdir) and not os.path.exists(outcomes[1].workdir)
    assert os.listdir(running.work) == [os.path.basename(outcomes[2].workdir)]
    assert (Path(outcomes[2].workdir) / "rootfs" / "etc" / "hostname").read_text() == "c3"
    assert restore.committed == 1


def test_a_second_source_is_told_the_agent_is_busy(netns_hosts, agent):
    first = negotiate(netns_hosts, agent.port)
    first.prepare(PrepareRequest(container_id="c1"))
    with pytest.raises(ProtocolError, match="the agent is busy with another migration"):
        negotiate(netns_hosts, agent.port)
    first.abort("done")
    agent.wait_outcomes(1)
    with negotiate(netns_hosts, agent.port) as again:   # free again
        again.abort("done")


# -- failures of the link and of the peer ------------------------------------------------


def test_link_down_mid_transfer_is_detected_on_both_sides(netns_hosts, agent):
    session = negotiate(netns_hosts, agent.port)
    session.prepare(PrepareRequest(container_id="c1"))
    cut = {}

    def on_chunk(i):
        if i == 8:
            netns_hosts.b.link_down()
            cut["at"] = time.monotonic()

    with pytest.raises(MigrationError) as info:
        with session.conn.in_phase("images"):
            session.conn.send_stream(file_stream(4096 * MIB),
                                     compressible(4096 * MIB, on_chunk=on_chunk))
    source_seconds = time.monotonic() - cut["at"]
    outcomes = agent.wait_outcomes(1, timeout=20)
    agent_seconds = time.monotonic() - cut["at"]
    session.close()
    err = info.value
    print(f"link down: source knew after {source_seconds:.1f} s ({err}); "
          f"agent after at most {agent_seconds:.1f} s ({outcomes[0].error})")
    assert err.phase == "images" and str(err).startswith("migration failed during images: ")
    assert "host down or link cut" in str(err)
    assert "host down or link cut" in outcomes[0].error
    assert source_seconds < 15 and agent_seconds < 20
    assert not outcomes[0].succeeded and not os.path.exists(outcomes[0].workdir)


def test_link_down_while_waiting_for_an_answer(netns_hosts, tmp_path):
    hold = threading.Event()

    def slow_restore(workdir, request):
        hold.wait(30)
        return {"pid": 1}

    running = RunningAgent(netns_hosts, tmp_path, restore_fn=slow_restore)
    try:
        session = negotiate(netns_hosts, running.port)
        session.prepare(PrepareRequest(container_id="c1"))
        with session.conn.in_phase("restore"):
            session.conn.send(Kind.RESTORE, RestoreRequest(container_id="c1").to_header())
            netns_hosts.b.link_down()
            cut = time.monotonic()
            # Nothing in flight: TCP keepalive finds out the agent is gone.
            with pytest.raises(MigrationError) as info:
                session.conn.recv(Kind.RESTORED, timeout=60)
        seconds = time.monotonic() - cut
        session.close()
    finally:
        hold.set()
        running.close()
    print(f"link down while waiting: detected after {seconds:.1f} s: {info.value}")
    assert info.value.phase == "restore" and "host down or link cut" in str(info.value)
    assert seconds < 15


def test_agent_killed_mid_transfer(netns_hosts, tmp_path):
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    log = open(tmp_path / "agent.log", "w+")
    proc = netns_hosts.b.popen([sys.executable, str(HELPERS / "migration_agent.py"),
                                netns_hosts.b.address, TOKEN, str(root), str(work)],
                               stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()   # bounded: the helper prints first, or dies
        assert line.startswith("listening "), (line, open(tmp_path / "agent.log").read())
        session = negotiate(netns_hosts, int(line.split()[1]))
        session.prepare(PrepareRequest(container_id="c1"))
        killed = {}

        def on_chunk(i):
            if i == 8:
                proc.send_signal(signal.SIGKILL)
                killed["at"] = time.monotonic()

        with pytest.raises(MigrationError) as info:
            with session.conn.in_phase("images"):
                session.conn.send_stream(file_stream(4096 * MIB),
                                         compressible(4096 * MIB, on_chunk=on_chunk))
        seconds = time.monotonic() - killed["at"]
        session.close()
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        log.close()
    print(f"agent killed: detected after {seconds:.2f} s: {info.value}")
    assert info.value.phase == "images"
    assert "the destination went away" in str(info.value) or "closed the connection" in str(info.value)
    assert seconds < 5


@pytest.mark.requires("criu")
def test_real_cpuinfo_check_between_the_hosts(netns_hosts, tmp_path):
    from migrate.migration import CriuHostFacts

    running = RunningAgent(netns_hosts, tmp_path, facts=CriuHostFacts())
    try:
        options = ConnectOptions(host=netns_hosts.b.address, port=running.port, token=TOKEN,
                                 timeouts=dataclasses.replace(Timeouts(), io=30))
        with netns_hosts.a.entered():
            session = connect_and_negotiate(options, facts=CriuHostFacts())
        with session:
            assert session.peer.criu_version == session.facts.criu_version()
            assert "lazy_pages" in session.peer_features
            ready = session.prepare(PrepareRequest(container_id="c1", cpuinfo=True))
            assert ready.free_bytes > 0
            session.abort("checks only")
    finally:
        running.close()


# -- the commands ---------------------------------------------------------------------------


@pytest.mark.requires("criu")
def test_receive_and_migrate_commands(netns_hosts, tmp_path):
    from runtime_helpers import runtime_argv

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    dst_root, src_root = tmp_path / "dst-root", tmp_path / "src-root"
    (src_root / "c1").mkdir(parents=True)
    (src_root / "c1" / "state.json").write_text('{"id": "c1", "bundle": "/b", "rootfs": "/b/r"}')
    port = 7465   # inside host b's own namespace: nothing else listens there
    err_path = tmp_path / "receive.err"
    with open(err_path, "w") as err:
        agent = netns_hosts.b.popen([*runtime_argv(), "--root", str(dst_root), "receive",
                                     "--listen", f"{netns_hosts.b.address}:{port}",
                                     "--token-file", str(token_file),
                                     "--work-dir", str(tmp_path / "work")],
                                    stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while "listening" not in err_path.read_text() and time.monotonic() < deadline:
            assert agent.poll() is None, err_path.read_text()
            time.sleep(0.1)
        assert "listening" in err_path.read_text()
        # The agent's checks pass (nothing is frozen by them); the source gives up.
        with negotiate(netns_hosts, port) as session:
            ready = session.prepare(PrepareRequest(container_id="c1"))
            assert ready.free_bytes > 0
            session.abort("the source cannot migrate yet")
        # A container that is not running is refused before any connection.
        res = netns_hosts.a.run([*runtime_argv(), "--root", str(src_root), "migrate", "c1",
                                 "--to", f"{netns_hosts.b.address}:{port}",
                                 "--token-file", str(token_file),
                                 "--report", str(tmp_path / "report.json")], timeout=60)
        assert res.returncode == 2, res.stderr
        assert "only a running container can migrate" in res.stderr
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["container_id"] == "c1" and report["succeeded"] is False
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    log = err_path.read_text()
    assert "the source aborted: the source cannot migrate yet" in log
