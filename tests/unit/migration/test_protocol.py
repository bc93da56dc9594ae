"""Frames and the handshake, over socketpairs."""

from __future__ import annotations

import json
import struct

import pytest

from migrate.errors import MigrationError, ProtocolError
from migrate.migration.protocol import (
    HEADER,
    MAGIC,
    MAX_CHUNK,
    MAX_JSON,
    PROTOCOL_VERSION,
    CriuPolicy,
    Kind,
    auth_proof,
    check_criu,
    client_handshake,
    decode_header,
    decode_payload,
    encode_frame,
    parse_criu_version,
    server_handshake,
)
from migration_helpers import Background, config

# -- frames -------------------------------------------------------------------

NEXT = PROTOCOL_VERSION + 1      # a version this side does not speak


def test_frame_layout_is_fixed():
    frame = encode_frame(Kind.READY, {"a": 1})
    magic, version, kind, flags, length = HEADER.unpack(frame[:HEADER.size])
    assert (magic, version, kind, flags) == (b"MGRT", PROTOCOL_VERSION, 17, 0)
    assert HEADER.size == 12
    assert json.loads(frame[HEADER.size:]) == {"a": 1} and length == len(frame) - 12


def test_chunk_payload_is_raw_bytes():
    frame = encode_frame(Kind.CHUNK, data=b"\x00\xffraw")
    assert frame[HEADER.size:] == b"\x00\xffraw"
    version, kind, length = decode_header(frame[:HEADER.size])
    assert (version, kind, length) == (PROTOCOL_VERSION, Kind.CHUNK, 5)


def test_kind_values_never_change():
    assert {k.name: int(k) for k in Kind} == {
        "HELLO": 1, "CHALLENGE": 2, "AUTH": 3, "WELCOME": 4, "REJECT": 5, "PREPARE": 16,
        "READY": 17, "RESTORE": 18, "RESTORED": 19, "DONE": 20, "ABORT": 21, "ERROR": 22,
        "CONTROL": 23, "REPLY": 24, "STREAM": 32, "CHUNK": 33, "END": 34}


@pytest.mark.parametrize("raw,words", [
    (b"HTTP" + bytes(8), "does not speak the migrate protocol"),
    (struct.pack("!4sBBHI", MAGIC, 1, 99, 0, 0), "unknown frame kind 99"),
    (struct.pack("!4sBBHI", MAGIC, 1, Kind.READY, 0, MAX_JSON + 1), "over the"),
    (struct.pack("!4sBBHI", MAGIC, PROTOCOL_VERSION, Kind.CHUNK, 0, MAX_CHUNK + 1), "over the"),
])
def test_bad_headers(raw, words):
    with pytest.raises(ProtocolError, match=words):
        decode_header(raw)


@pytest.mark.parametrize("payload,words", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_bad_payloads(payload, words):
    with pytest.raises(ProtocolError, match=words):
        decode_payload(Kind.READY, payload)


def test_headers_must_be_json():
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode_frame(Kind.READY, {"x": object()})
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode_frame(Kind.READY, {"x": float("nan")})


def test_errors_are_migration_errors_naming_the_phase():
    with pytest.raises(MigrationError) as info:
        decode_header(b"nope" + bytes(8), phase="images")
    assert info.value.phase == "images"
    assert str(info.value).startswith("migration failed during images: ")


# -- pure helpers -------------------------------------------------------------------


def test_auth_proof_depends_on_token_nonce_and_role():
    p = auth_proof(b"t", "n" * 32, "client")
    assert len(p) == 64
    assert p != auth_proof(b"u", "n" * 32, "client")
    assert p != auth_proof(b"t", "m" * 32, "client")
    assert p != auth_proof(b"t", "n" * 32, "server")


@pytest.mark.parametrize("text,parsed", [
    ("4.2.1", (4, 2, 1)), ("4.2", (4, 2, 0)), ("3.17.1-dirty", (3, 17, 1)),
    ("", None), (None, None), ("four", None),
])
def test_parse_criu_version(text, parsed):
    assert parse_criu_version(text) == parsed


@pytest.mark.parametrize("src,dst,policy,ok", [
    ("4.2.1", "4.2.1", CriuPolicy.NOT_OLDER, True),
    ("4.1.1", "4.2.1", CriuPolicy.NOT_OLDER, True),
    ("4.2.1", "4.1.1", CriuPolicy.NOT_OLDER, False),
    ("4.1.1", "4.2.1", CriuPolicy.SAME, False),
    ("4.2.1", "3.17", CriuPolicy.ANY, True),
    (None, "4.2.1", CriuPolicy.NOT_OLDER, False),
    ("4.2.1", None, CriuPolicy.ANY, True),
])
def test_check_criu(src, dst, policy, ok):
    assert (check_criu(src, dst, policy) is None) is ok


# -- the handshake ---------------------------------------------------------------------


def shake(pair, client_cfg, server_cfg):
    src, dst = pair
    server = Background(lambda: server_handshake(dst, server_cfg))
    try:
        client = client_handshake(src, client_cfg)
        client_err = None
    except ProtocolError as err:
        client, client_err = None, err
    server_err = server.error()
    return client, client_err, (None if server_err else server.result()), server_err


def test_good_token(pair):
    client, cerr, server, serr = shake(pair, config(host="src"),
                                       config(host="dst", features={"mem_track": False}))
    assert cerr is None and serr is None
    peer, compression = client
    assert (peer.host, peer.criu_version, peer.features, compression) == \
        ("dst", "4.2.1", {"mem_track": False}, "zstd")
    peer, compression = server
    assert (peer.host, peer.migrate_version, compression) == ("src", "0.1.0", "zstd")


def test_wrong_token_is_refused_on_both_sides(pair):
    _, cerr, _, serr = shake(pair, config(token=b"wrong"), config())
    assert isinstance(cerr, ProtocolError) and isinstance(serr, ProtocolError)
    assert "the destination refused: authentication failed (wrong token)" in str(cerr)
    assert "refused the source: authentication failed (wrong token)" in str(serr)
    assert cerr.phase == serr.phase == "handshake"


def test_agent_that_does_not_know_the_token_is_refused(pair):
    src, dst = pair

    def fake_server():
        dst.recv_frame()
        dst.send(Kind.CHALLENGE, {"nonce": "n" * 64})
        auth = dst.recv_frame()
        # It cannot compute the proof of the client's nonce without the token.
        dst.send(Kind.WELCOME, {"protocol": PROTOCOL_VERSION, "criu": "4.2.1",
                                 "hmac": auth.header["hmac"]})
        return dst.recv_frame()

    server = Background(fake_server)
    with pytest.raises(ProtocolError, match="could not prove it knows the token"):
        client_handshake(src, config())
    reject = server.result()
    assert reject.kind == Kind.REJECT


def test_other_protocol_version_is_refused_on_both_sides(pair):
    src, dst = pair
    server = Background(lambda: server_handshake(dst, config()))
    # A client of the next version: its frames and its HELLO say so.
    src._sendall(encode_frame(Kind.HELLO, {"protocol": NEXT, "nonce": "n" * 64}, version=NEXT),
                 None)
    reply = src.recv_frame()
    assert reply.kind == Kind.REJECT
    assert reply.header["reason"] == (f"protocol version {NEXT} is not supported "
                                      f"(this side speaks {PROTOCOL_VERSION})")
    with pytest.raises(ProtocolError, match=f"refused the source: protocol version {NEXT}"):
        server.result()


def test_other_protocol_version_of_the_agent_is_refused(pair):
    src, dst = pair

    def v2_server():
        hello = dst.recv_frame()
        dst.send(Kind.CHALLENGE, {"nonce": "n" * 64})
        dst.recv_frame()
        dst._sendall(encode_frame(Kind.WELCOME, {
            "protocol": NEXT, "criu": "4.2.1",
            "hmac": auth_proof(b"s3cret", hello.header["nonce"], "server")}, version=NEXT), None)
        return dst.recv_frame()

    server = Background(v2_server)
    with pytest.raises(ProtocolError, match=f"protocol version {NEXT} is not supported"):
        client_handshake(src, config())
    assert server.result().header["reason"].startswith(f"protocol version {NEXT}")


def test_older_criu_at_the_destination_is_refused_on_both_sides(pair):
    _, cerr, _, serr = shake(pair, config(criu_version="4.2.1"), config(criu_version="4.1.1"))
    expected = "the destination's CRIU 4.1.1 is older than the source's 4.2.1"
    assert expected in str(cerr) and "the destination refused" in str(cerr)
    assert expected in str(serr) and "refused the source" in str(serr)


def test_the_source_refuses_an_older_criu_even_if_the_agent_allows_it(pair):
    _, cerr, _, serr = shake(pair, config(criu_version="4.2.1"),
                             config(criu_version="4.1.1", criu_policy=CriuPolicy.ANY))
    assert "refused the destination: the destination's CRIU 4.1.1 is older" in str(cerr)
    assert serr is None  # the agent finished its side; it hears REJECT on its next recv


def test_newer_criu_at_the_destination_is_fine(pair):
    _, cerr, _, serr = shake(pair, config(criu_version="4.1.1"), config(criu_version="4.2.1"))
    assert cerr is None and serr is None


def test_same_policy(pair):
    _, cerr, _, serr = shake(pair, config(criu_version="4.1.1", criu_policy=CriuPolicy.SAME),
                             config(criu_version="4.2.1", criu_policy=CriuPolicy.SAME))
    assert "CRIU versions differ" in str(serr) and "CRIU versions differ" in str(cerr)


def test_compression_only_when_both_have_it(pair):
    client, _, server, _ = shake(pair, config(compression=("zstd",)), config(compression=()))
    assert client[1] is None and server[1] is None


def test_compression_only_when_offered(pair):
    client, _, server, _ = shake(pair, config(compression=()), config())
    assert client[1] is None and server[1] is None


def test_empty_token_is_refused_before_anything():
    with pytest.raises(ProtocolError, match="token is empty"):
        config(token=b"")


def test_a_busy_agent_rejects_at_once(pair):
    src, dst = pair
    dst.send(Kind.REJECT, {"reason": "the agent is busy with another migration"})
    with pytest.raises(ProtocolError, match="the destination refused: the agent is busy"):
        client_handshake(src, config())


def test_garbage_instead_of_hello(pair):
    src, dst = pair
    server = Background(lambda: server_handshake(dst, config()))
    src._sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ProtocolError, match="does not speak the migrate protocol"):
        server.result()
