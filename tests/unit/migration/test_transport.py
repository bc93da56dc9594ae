"""Connection: messages, streams, files, counters, failures; TLS."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from migrate.errors import MigrationError, ProtocolError
from migrate.migration._sockets import Timeouts, TlsConfig, client_tls_context, server_tls_context
from migrate.migration.protocol import Kind, client_handshake, server_handshake
from migrate.migration.transport import Connection, available_compression
from migration_helpers import Background, config

zstd = pytest.mark.skipif("zstd" not in available_compression(), reason="zstandard missing")


def compressible(total: int, piece: int = 1 << 20):
    block = (os.urandom(4096) + bytes(60 * 1024))   # about 16:1 for zstd
    for _ in range(total // piece):
        yield block * (piece // len(block)) + block[:piece % len(block)]


def test_messages_round_trip(pair):
    src, dst = pair
    src.send(Kind.PREPARE, {"container_id": "c1", "n": [1, 2]})
    frame = dst.recv(Kind.PREPARE)
    assert frame.header == {"container_id": "c1", "n": [1, 2]}


@pytest.mark.parametrize("codec", [None, pytest.param("zstd", marks=zstd)])
def test_stream_and_counters(pair, codec):
    src, dst = pair
    src.compression = dst.compression = codec
    total = 16 << 20
    with src.in_phase("images"):
        sender = Background(lambda: src.send_stream({"what": "blob", "size": total},
                                                    compressible(total)))
        with dst.in_phase("images"):
            stream = dst.recv_stream(what="blob")
            got = sum(len(d) for d in stream)
        sent = sender.result()
    assert got == total == sent.raw == stream.raw
    assert stream.header["compression"] == codec and stream.header["size"] == total
    c_src, c_dst = src.counters["images"], dst.counters["images"]
    assert c_src.bytes_on_wire == c_dst.bytes_on_wire   # every byte counted on both ends
    assert c_src.bytes_raw == c_dst.bytes_raw
    if codec:
        assert sent.wire < total / 8 and c_src.bytes_on_wire < total / 8
        assert c_src.bytes_raw > total
    else:
        assert total < c_src.bytes_on_wire < total * 1.01
    assert src.bytes_on_wire == c_src.bytes_on_wire  # nothing else was sent
    assert src.current_phase == "handshake"          # the phase block ended


def test_compression_can_be_refused_per_stream(pair):
    src, dst = pair
    src.compression = "zstd"
    sender = Background(lambda: src.send_stream({"what": "x"}, [b"a" * 1000], compress=False))
    stream = dst.recv_stream()
    assert stream.read_all() == b"a" * 1000 and stream.header["compression"] is None
    sender.result()


def test_small_pieces_are_coalesced(pair):
    src, dst = pair
    sender = Background(lambda: src.send_stream({"what": "x"}, [b"ab"] * 10_000))
    stream = dst.recv_stream()
    chunks = list(stream)
    sender.result()
    assert b"".join(chunks) == b"ab" * 10_000 and len(chunks) == 1


def test_file_round_trip(pair, tmp_path):
    src, dst = pair
    f = tmp_path / "pages-1.img"
    f.write_bytes(os.urandom(3_000_000))
    f.chmod(0o640)
    sender = Background(lambda: src.send_file(str(f), name="images/pages-1.img"))
    path = dst.recv_file(str(tmp_path / "dest"))
    sender.result()
    assert path == str(tmp_path / "dest" / "images" / "pages-1.img")
    assert open(path, "rb").read() == f.read_bytes()
    assert os.stat(path).st_mode & 0o777 == 0o640


@pytest.mark.parametrize("name", ["../escape", "/abs/file", "a/../../b"])
def test_file_names_cannot_escape(pair, tmp_path, name):
    src, dst = pair
    f = tmp_path / "f"
    f.write_bytes(b"x")
    sender = Background(lambda: src.send_file(str(f), name=name))
    with pytest.raises(ProtocolError, match="refusing"):
        dst.recv_file(str(tmp_path / "dest"))
    sender.error()
    assert not (tmp_path / "escape").exists()


def test_expecting_one_kind_and_getting_another(pair):
    src, dst = pair
    src.send(Kind.RESTORE, {})
    with pytest.raises(ProtocolError, match="expected READY from the source, got RESTORE"):
        dst.recv(Kind.READY)


def test_peer_error_is_raised_with_its_reason(pair):
    src, dst = pair
    dst.send_error("not enough free space", phase="checks")
    with src.in_phase("prepare"), pytest.raises(MigrationError) as info:
        src.recv(Kind.READY)
    assert info.value.phase == "prepare"
    assert "the destination failed (checks): not enough free space" in str(info.value)


def test_peer_abort(pair):
    src, dst = pair
    src.send_abort("resumed the source")
    with pytest.raises(MigrationError, match="the source aborted: resumed the source"):
        dst.recv()


def test_error_in_the_middle_of_a_stream(pair):
    src, dst = pair

    def chunks():
        yield b"x" * 1000
        raise OSError(5, "Input/output error")

    sender = Background(lambda: src.send_stream({"what": "x"}, chunks()))
    stream = dst.recv_stream()
    with pytest.raises(MigrationError, match="reading the data to send failed"):
        stream.read_all()
    assert isinstance(sender.error(), OSError)


def test_peer_closing_is_detected_with_the_phase(pair):
    src, dst = pair
    dst.close()
    with src.in_phase("restore"), pytest.raises(MigrationError) as info:
        src.recv(Kind.RESTORED)
    assert info.value.phase == "restore"
    assert "the destination (dest) closed the connection" in str(info.value)
    with pytest.raises(MigrationError, match="already failed"):
        src.send(Kind.DONE)


def test_a_silent_peer_times_out():
    a, b = socket.socketpair()
    conn = Connection(a, peer="p", peer_role="destination", timeouts=Timeouts(io=0.3))
    started = time.monotonic()
    with pytest.raises(MigrationError, match="no progress for 0 s while waiting for"):
        conn.recv(timeout=0.3)
    assert time.monotonic() - started < 2
    b.close()
    conn.close()


def test_a_stream_left_half_read_makes_the_connection_unusable(pair):
    src, dst = pair
    sender = Background(lambda: src.send_stream({"what": "x"}, [b"a" * 300_000] * 4))
    stream = dst.recv_stream()
    with pytest.raises(RuntimeError):
        dst.recv()
    it = iter(stream)
    next(it)
    it.close()
    with pytest.raises(MigrationError, match="abandoned"):
        dst.recv()
    dst.close()
    sender.error()


def test_the_reason_of_a_peer_that_hung_up_while_we_sent(pair):
    src, dst = pair
    dst.send_error("refusing path '../x'", phase="rootfs")
    dst._sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(MigrationError, match=r"the destination failed \(rootfs\): refusing path"):
        # Sends until the socket notices the peer is gone, then reads its last words.
        src.send_stream({"what": "x"}, (b"z" * 65536 for _ in range(1000)))


# -- TLS ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")

    def run(*argv):
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60, cwd=d,
                       stdin=subprocess.DEVNULL)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA")
    for name in ("agent", "source", "rogue"):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{name}.test,IP:10.250.0.2\n")
        signer = ("-signkey", f"{name}.key") if name == "rogue" else (
            "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial")
        run("x509", "-req", "-in", f"{name}.csr", *signer, "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext")
    return d


def tls_pair(server: TlsConfig, client: TlsConfig):
    a, b = socket.socketpair()
    sctx, cctx = server_tls_context(server), client_tls_context(client)
    wrapped = Background(lambda: sctx.wrap_socket(b, server_side=True))
    try:
        ca = cctx.wrap_socket(a, server_hostname=client.server_name)
    except ssl.SSLError:
        wrapped.error()
        raise
    sb = wrapped.result()
    return (Connection(ca, peer="agent", peer_role="destination"),
            Connection(sb, peer="source", peer_role="source"))


def test_tls_handshake_and_stream(certs):
    src, dst = tls_pair(TlsConfig(cert=str(certs / "agent.pem"), key=str(certs / "agent.key")),
                        TlsConfig(ca=str(certs / "ca.pem"), server_name="agent.test"))
    server = Background(lambda: server_handshake(dst, config()))
    _, compression = client_handshake(src, config())
    server.result()
    dst.compression = src.compression = compression
    sender = Background(lambda: src.send_stream({"what": "x"}, compressible(4 << 20)))
    assert sum(len(d) for d in dst.recv_stream()) == 4 << 20
    sender.result()
    src.close()
    dst.close()


def test_tls_mutual(certs):
    server = TlsConfig(cert=str(certs / "agent.pem"), key=str(certs / "agent.key"),
                       ca=str(certs / "ca.pem"))
    src, dst = tls_pair(server, TlsConfig(ca=str(certs / "ca.pem"), server_name="agent.test",
                                          cert=str(certs / "source.pem"),
                                          key=str(certs / "source.key")))
    src.close()
    dst.close()
    with pytest.raises(ssl.SSLError):
        tls_pair(server, TlsConfig(ca=str(certs / "ca.pem"), server_name="agent.test",
                                   cert=str(certs / "rogue.pem"), key=str(certs / "rogue.key")))


def test_tls_refuses_an_agent_the_ca_did_not_sign(certs):
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_pair(TlsConfig(cert=str(certs / "rogue.pem"), key=str(certs / "rogue.key")),
                 TlsConfig(ca=str(certs / "ca.pem"), server_name="rogue.test"))


def test_tls_config_errors(tmp_path):
    from migrate.errors import UsageError

    with pytest.raises(UsageError, match="both a certificate and its key"):
        TlsConfig(cert="x")
    with pytest.raises(UsageError, match="cannot load TLS certificate"):
        server_tls_context(TlsConfig(cert=str(tmp_path / "no.pem"), key=str(tmp_path / "no.key")))
    with pytest.raises(UsageError, match="needs a certificate"):
        server_tls_context(TlsConfig(ca=str(tmp_path / "ca.pem")))
