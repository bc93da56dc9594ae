"""The migration protocol: frames on one stream socket, and the handshake.

Every frame is a fixed 12-byte header and a payload::

    magic    4 bytes  b"MGRT"
    version  1 byte   the sender's PROTOCOL_VERSION
    kind     1 byte   ``Kind``
    flags    2 bytes  zero (reserved)
    length   4 bytes  big-endian size of the payload

The payload of a ``CHUNK`` is raw bytes (a piece of a stream); every other
kind carries one JSON object. Nothing is ever unpickled or evaluated. The
header layout never changes between versions, so a peer speaking another
version can still be read far enough to be told why it is refused.

Bulk data is a stream: ``STREAM`` announces it (a JSON header saying what it
is and whether it is compressed), ``CHUNK`` frames carry it, ``END`` closes
it with the byte counts the receiver checks::

    STREAM {"what": ..., "compression": "zstd"|null, ...}  CHUNK*  END {"raw": n, "wire": m}

Handshake (the client is the source, the server the destination agent)::

    client                                      server
    HELLO {protocol, migrate, criu, features,
           host, compression: [...], nonce} ->
                                            <-  CHALLENGE {nonce}        or REJECT {reason}
    AUTH {hmac}                             ->
                                            <-  WELCOME {protocol, migrate, criu, features,
                                                         host, compression, hmac}
                                                                         or REJECT {reason}

``AUTH.hmac`` is HMAC-SHA256(token, "client" + server nonce), which proves
the source knows the token; ``WELCOME.hmac`` is HMAC-SHA256(token, "server"
+ client nonce), which proves the same of the agent (so a source never
sends a container to a host that merely answers on the port). A peer with
another protocol version is refused before authentication; a CRIU that is
too old (``CriuPolicy``) after it. Either side that refuses sends REJECT
with the reason, so both sides can say why.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import secrets
import struct
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Protocol

from migrate.errors import ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "MAGIC",
    "Kind",
    "Frame",
    "CriuPolicy",
    "HandshakeConfig",
    "PeerInfo",
    "encode_frame",
    "decode_header",
    "decode_payload",
    "auth_proof",
    "check_criu",
    "parse_criu_version",
    "client_handshake",
    "server_handshake",
]

PROTOCOL_VERSION = 1
MAGIC = b"MGRT"
HEADER = struct.Struct("!4sBBHI")
# A JSON header is a few hundred bytes; the limits only stop a confused or
# hostile peer from making us allocate gigabytes before anything is checked.
MAX_JSON = 1 << 20
MAX_CHUNK = 8 << 20
PHASE = "handshake"


class Kind(enum.IntEnum):
    """What a frame is. Values are on the wire: never renumber."""

    HELLO = 1
    CHALLENGE = 2
    AUTH = 3
    WELCOME = 4
    REJECT = 5
    PREPARE = 16     # source -> agent: what is coming; the agent runs its checks
    READY = 17       # agent -> source: checks passed, send
    RESTORE = 18     # source -> agent: restore now
    RESTORED = 19    # agent -> source: the container runs (or is held) here
    DONE = 20        # source -> agent: commit; agent -> source: committed
    ABORT = 21       # either way: roll back, with a reason
    ERROR = 22       # either way: this side failed {phase, message}
    CONTROL = 23     # source -> agent: a strategy's own request {op, ...}
    REPLY = 24       # agent -> source: the answer to a CONTROL
    STREAM = 32
    CHUNK = 33
    END = 34


@dataclass(frozen=True, slots=True)
class Frame:
    kind: Kind
    header: dict[str, Any] = field(default_factory=dict)
    data: bytes = b""
    version: int = PROTOCOL_VERSION


def encode_frame(kind: Kind, header: dict[str, Any] | None = None, data: bytes = b"", *,
                 version: int = PROTOCOL_VERSION) -> bytes:
    """One frame's bytes: ``data`` for a CHUNK, ``header`` as JSON otherwise.

    Raises ``ProtocolError`` if the header is not JSON-able or too large.
    """
    if kind == Kind.CHUNK:
        payload = bytes(data)
        limit = MAX_CHUNK
    else:
        try:
            payload = json.dumps(header or {}, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as err:
            raise ProtocolError(PHASE, f"cannot encode a {kind.name} header: {err}") from err
        limit = MAX_JSON
    if len(payload) > limit:
        raise ProtocolError(PHASE, f"{kind.name} frame of {len(payload)} bytes is over the "
                                   f"{limit}-byte limit")
    return HEADER.pack(MAGIC, version, int(kind), 0, len(payload)) + payload


def decode_header(raw: bytes, *, phase: str = PHASE) -> tuple[int, Kind, int]:
    """(version, kind, payload length) of a 12-byte frame header.

    Raises ``ProtocolError`` for a bad magic, unknown kind or oversized frame.
    """
    magic, version, kind, _flags, length = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ProtocolError(phase, f"the peer does not speak the migrate protocol "
                                   f"(frame starts with {magic!r})")
    try:
        kind = Kind(kind)
    except ValueError:
        raise ProtocolError(phase, f"unknown frame kind {kind} (protocol version {version})") from None
    limit = MAX_CHUNK if kind == Kind.CHUNK else MAX_JSON
    if length > limit:
        raise ProtocolError(phase, f"{kind.name} frame of {length} bytes is over the "
                                   f"{limit}-byte limit")
    return version, kind, length


def decode_payload(kind: Kind, payload: bytes, *, phase: str = PHASE) -> dict[str, Any]:
    """The JSON object of a non-CHUNK frame. Raises ``ProtocolError``."""
    try:
        header = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as err:
        raise ProtocolError(phase, f"{kind.name} frame is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise ProtocolError(phase, f"{kind.name} frame holds {type(header).__name__}, "
                                   "not a JSON object")
    return header


# -- authentication ----------------------------------------------------------

def auth_proof(token: bytes, nonce: str, role: str) -> str:
    """HMAC-SHA256 of ``role`` + ``nonce`` under the shared token, as hex.

    The role ("client" or "server") keeps one side's proof from being
    replayed as the other's.
    """
    return hmac.new(token, role.encode() + b"\0" + nonce.encode(), hashlib.sha256).hexdigest()


def _proof_matches(expected: str, got: Any) -> bool:
    if not isinstance(got, str):
        return False
    return hmac.compare_digest(expected.encode(), got.encode("utf-8", "replace"))


# -- CRIU versions -----------------------------------------------------------

class CriuPolicy(enum.Enum):
    """Which CRIU versions may meet.

    Images are written by the source's CRIU and read by the destination's;
    a newer CRIU reads older images, not always the reverse. So by default
    (``NOT_OLDER``) the destination's CRIU must not be older than the
    source's: each side refuses a peer on the wrong side of that. ``SAME``
    asks for equal versions, ``ANY`` checks nothing.
    """

    NOT_OLDER = "not-older"
    SAME = "same"
    ANY = "any"


_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def parse_criu_version(text: str | None) -> tuple[int, int, int] | None:
    """"4.2.1" -> (4, 2, 1); ``None`` or junk -> ``None``."""
    if not isinstance(text, str):
        return None
    m = _VERSION_RE.match(text.strip())
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def check_criu(source: str | None, destination: str | None, policy: CriuPolicy) -> str | None:
    """Why the source's and destination's CRIU cannot work together, or
    ``None`` when they can."""
    if policy is CriuPolicy.ANY:
        return None
    src, dst = parse_criu_version(source), parse_criu_version(destination)
    if src is None:
        return f"the source did not report a usable CRIU version ({source!r})"
    if dst is None:
        return f"the destination did not report a usable CRIU version ({destination!r})"
    if policy is CriuPolicy.SAME and src != dst:
        return f"CRIU versions differ: source {source}, destination {destination} (policy: same)"
    if policy is CriuPolicy.NOT_OLDER and dst < src:
        return (f"the destination's CRIU {destination} is older than the source's {source}: "
                "it may not read the source's images")
    return None


# -- handshake ---------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeConfig:
    """What this side says about itself and what it accepts.

    ``compression``: the client offers these, in order of preference; the
    server picks the first it also has. ``features`` is free-form JSON
    (CRIU features, what the strategies need to pick one).
    """

    token: bytes
    host: str
    migrate_version: str
    criu_version: str | None
    features: dict[str, Any] = field(default_factory=dict)
    compression: tuple[str, ...] = ()
    criu_policy: CriuPolicy = CriuPolicy.NOT_OLDER

    def __post_init__(self) -> None:
        if not isinstance(self.token, bytes) or not self.token:
            raise ProtocolError(PHASE, "the shared token is empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerInfo:
    """What the handshake learned about the other side."""

    host: str
    migrate_version: str
    criu_version: str | None
    features: dict[str, Any]
    protocol: int = PROTOCOL_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "migrate_version": self.migrate_version,
                "criu_version": self.criu_version, "features": dict(self.features),
                "protocol": self.protocol}


class FrameIO(Protocol):
    """What the handshake needs from a connection."""

    def send(self, kind: Kind, header: dict[str, Any] | None = None) -> None: ...

    def recv_frame(self) -> Frame: ...


def _peer_info(header: dict[str, Any], version: int) -> PeerInfo:
    features = header.get("features", {})
    if not isinstance(features, dict):
        raise ProtocolError(PHASE, "the peer's features are not a JSON object")
    return PeerInfo(host=str(header.get("host", "?")),
                    migrate_version=str(header.get("migrate", "?")),
                    criu_version=header.get("criu") if isinstance(header.get("criu"), str) else None,
                    features=features, protocol=version)


def _refuse(io: FrameIO, peer: str, reason: str) -> ProtocolError:
    try:
        io.send(Kind.REJECT, {"reason": reason})
    except Exception:  # noqa: BLE001 - the peer may be gone; the reason is raised anyway
        pass
    return ProtocolError(PHASE, f"refused the {peer}: {reason}")


def _expect(io: FrameIO, peer: str, *kinds: Kind) -> Frame:
    frame = io.recv_frame()
    if frame.kind == Kind.REJECT:
        reason = frame.header.get("reason", "no reason given")
        raise ProtocolError(PHASE, f"the {peer} refused: {reason}")
    if frame.kind not in kinds:
        names = " or ".join(k.name for k in kinds)
        raise ProtocolError(PHASE, f"expected {names} from the {peer}, got {frame.kind.name}")
    return frame


def _version_reason(version: int, header: dict[str, Any]) -> str | None:
    announced = header.get("protocol")
    if version != PROTOCOL_VERSION or announced != PROTOCOL_VERSION:
        return (f"protocol version {announced if announced is not None else version} is not "
                f"supported (this side speaks {PROTOCOL_VERSION})")
    return None


def client_handshake(io: FrameIO, config: HandshakeConfig) -> tuple[PeerInfo, str | None]:
    """Run the client's side; returns the server's ``PeerInfo`` and the
    compression it chose (``None``: none).

    Raises ``ProtocolError`` saying who refused whom and why.
    """
    nonce = secrets.token_hex(32)
    io.send(Kind.HELLO, {"protocol": PROTOCOL_VERSION, "migrate": config.migrate_version,
                         "criu": config.criu_version, "features": config.features,
                         "host": config.host, "compression": list(config.compression),
                         "nonce": nonce})
    peer_name = "destination"
    challenge = _expect(io, peer_name, Kind.CHALLENGE)
    server_nonce = challenge.header.get("nonce")
    if not isinstance(server_nonce, str) or len(server_nonce) < 32:
        raise _refuse(io, peer_name, "the challenge carries no usable nonce")
    io.send(Kind.AUTH, {"hmac": auth_proof(config.token, server_nonce, "client")})
    welcome = _expect(io, peer_name, Kind.WELCOME)
    header = welcome.header
    if not _proof_matches(auth_proof(config.token, nonce, "server"), header.get("hmac")):
        raise _refuse(io, peer_name, "the destination could not prove it knows the token")
    reason = _version_reason(welcome.version, header)
    if reason is not None:
        raise _refuse(io, peer_name, reason)
    peer = _peer_info(header, welcome.version)
    reason = check_criu(config.criu_version, peer.criu_version, config.criu_policy)
    if reason is not None:
        raise _refuse(io, peer_name, reason)
    compression = header.get("compression")
    if compression is not None and compression not in config.compression:
        raise _refuse(io, peer_name, f"the destination chose compression {compression!r}, "
                          "which was not offered")
    return peer, compression


def server_handshake(io: FrameIO, config: HandshakeConfig, *,
                     admit: Callable[[PeerInfo], str | None] | None = None
                     ) -> tuple[PeerInfo, str | None]:
    """Run the server's side; returns the client's ``PeerInfo`` and the
    compression chosen for the connection. ``admit``, asked once the client
    is authenticated and its CRIU accepted, may refuse it with a reason
    (the agent is busy); only an authenticated client hears that.

    Raises ``ProtocolError`` (after sending REJECT with the same reason).
    """
    peer_name = "source"
    hello = _expect(io, peer_name, Kind.HELLO)
    reason = _version_reason(hello.version, hello.header)
    if reason is not None:
        raise _refuse(io, peer_name, reason)
    client_nonce = hello.header.get("nonce")
    if not isinstance(client_nonce, str) or len(client_nonce) < 32:
        raise _refuse(io, peer_name, "HELLO carries no usable nonce")
    peer = _peer_info(hello.header, hello.version)
    nonce = secrets.token_hex(32)
    io.send(Kind.CHALLENGE, {"nonce": nonce})
    auth = _expect(io, peer_name, Kind.AUTH)
    if not _proof_matches(auth_proof(config.token, nonce, "client"), auth.header.get("hmac")):
        raise _refuse(io, peer_name, "authentication failed (wrong token)")
    reason = check_criu(peer.criu_version, config.criu_version, config.criu_policy)
    if reason is not None:
        raise _refuse(io, peer_name, reason)
    if admit is not None:
        reason = admit(peer)
        if reason is not None:
            raise _refuse(io, peer_name, reason)
    offered = hello.header.get("compression") or []
    if not isinstance(offered, list):
        raise _refuse(io, peer_name, "HELLO compression is not a list")
    compression = next((c for c in offered if c in config.compression), None)
    io.send(Kind.WELCOME, {"protocol": PROTOCOL_VERSION, "migrate": config.migrate_version,
                           "criu": config.criu_version, "features": config.features,
                           "host": config.host, "compression": compression,
                           "hmac": auth_proof(config.token, client_nonce, "server")})
    return peer, compression
