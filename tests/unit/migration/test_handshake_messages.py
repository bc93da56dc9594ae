"""The handshake's messages are typed like the control messages: what goes
on the wire, and what a receiver refuses."""

import pytest

from migrate.errors import ProtocolError
from migrate.migration.protocol import (PROTOCOL_VERSION, Auth, Challenge, Hello, Reject,
                                        Welcome)

NONCE = "ab" * 32


def _hello(**over):
    base = dict(protocol=PROTOCOL_VERSION, migrate="1.0", criu="4.2.1", features={"lazy": True},
                host="a", compression=("zstd",), nonce=NONCE)
    return Hello(**{**base, **over})


def test_hello_round_trip():
    h = _hello()
    assert Hello.from_header(h.to_header()) == h
    assert h.to_header()["compression"] == ["zstd"]      # JSON has no tuples


def test_welcome_round_trip():
    w = Welcome(protocol=PROTOCOL_VERSION, migrate="1.0", criu=None, features={}, host="b",
                compression=None, hmac="00" * 32)
    assert Welcome.from_header(w.to_header()) == w


@pytest.mark.parametrize("header,message", [
    ({"nonce": "short"}, "HELLO carries no usable nonce"),
    ({"nonce": 7}, "HELLO carries no usable nonce"),
    ({"nonce": NONCE, "compression": "zstd"}, "HELLO compression is not a list"),
    ({"nonce": NONCE, "features": []}, "features are not a JSON object"),
])
def test_hello_refusals(header, message):
    with pytest.raises(ProtocolError, match=message):
        Hello.from_header(header)


def test_challenge_needs_a_nonce():
    assert Challenge.from_header({"nonce": NONCE}).nonce == NONCE
    with pytest.raises(ProtocolError, match="the challenge carries no usable nonce"):
        Challenge.from_header({})


def test_a_missing_proof_is_a_wrong_one_not_a_crash():
    assert Auth.from_header({}).hmac is None
    assert Auth.from_header({"hmac": 5}).hmac is None
    assert Welcome.from_header({}).hmac is None


def test_welcome_compression_is_one_name():
    with pytest.raises(ProtocolError, match="WELCOME compression is not a name"):
        Welcome.from_header({"compression": ["zstd"]})


def test_reject_always_has_a_reason():
    assert Reject.from_header({}).reason == "no reason given"
    assert Reject.from_header({"reason": ""}).reason == "no reason given"
    assert Reject(reason="busy").to_header() == {"reason": "busy"}


def test_failure_abort_and_end():
    from migrate.migration.protocol import Abort, Failure, StreamEnd

    assert Failure.from_header({}) == Failure(phase=None, message="no reason given")
    assert Failure.from_header(Failure(phase="memory", message="x").to_header()).phase == "memory"
    assert Abort.from_header({"reason": 3}).reason == "no reason given"
    assert StreamEnd.from_header({"raw": 10, "wire": 4}) == StreamEnd(raw=10, wire=4)
    for bad in ({}, {"raw": -1}, {"raw": True}, {"raw": 1, "wire": "2"}):
        with pytest.raises(ProtocolError, match="is not a byte count"):
            StreamEnd.from_header(bad)
