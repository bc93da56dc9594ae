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
    "Hello",
    "Challenge",
    "Auth",
    "Welcome",
    "Reject",
    "Failure",
    "Abort",
    "StreamEnd",
]

# 2: the memory streams open with a secret agreed here (criu_rpc/page_stream.py).
PROTOCOL_VERSION = 2
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
        payload = data      # copied once, by the join below (not first by bytes())
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
    return b"".join((HEADER.pack(MAGIC, version, int(kind), 0, len(payload)), payload))


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


# The handshake's messages, typed as the control messages are
# (messages.py): ``to_header()`` is what goes on the wire, ``from_header()``
# what a receiver accepts; a malformed one raises ProtocolError, which the
# receiver sends back as REJECT.

NONCE_MIN = 32


def _nonce(header: dict[str, Any], what: str) -> str:
    value = header.get("nonce")
    if not isinstance(value, str) or len(value) < NONCE_MIN:
        raise ProtocolError(PHASE, f"{what} carries no usable nonce")
    return value


def _features(header: dict[str, Any]) -> dict[str, Any]:
    value = header.get("features", {})
    if not isinstance(value, dict):
        raise ProtocolError(PHASE, "the peer's features are not a JSON object")
    return value


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """HELLO, client -> server: who it is, what it offers, its nonce."""

    protocol: Any
    migrate: str
    criu: str | None
    features: dict[str, Any]
    host: str
    compression: tuple[str, ...]
    nonce: str

    def to_header(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "migrate": self.migrate, "criu": self.criu,
                "features": self.features, "host": self.host,
                "compression": list(self.compression), "nonce": self.nonce}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> "Hello":
        offered = header.get("compression") or []
        if not isinstance(offered, list):
            raise ProtocolError(PHASE, "HELLO compression is not a list")
        return cls(protocol=header.get("protocol"), migrate=str(header.get("migrate", "?")),
                   criu=_optional_str(header.get("criu")), features=_features(header),
                   host=str(header.get("host", "?")),
                   compression=tuple(c for c in offered if isinstance(c, str)),
                   nonce=_nonce(header, "HELLO"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """CHALLENGE, server -> client: the nonce the client's proof covers."""

    nonce: str

    def to_header(self) -> dict[str, Any]:
        return {"nonce": self.nonce}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> "Challenge":
        return cls(nonce=_nonce(header, "the challenge"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth:
    """AUTH, client -> server: its proof that it knows the token."""

    hmac: str | None

    def to_header(self) -> dict[str, Any]:
        return {"hmac": self.hmac}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> "Auth":
        # A missing or non-string proof is a wrong one (checked in constant time).
        return cls(hmac=_optional_str(header.get("hmac")))


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """WELCOME, server -> client: who it is, the compression it chose, and
    its proof that it knows the token."""

    protocol: Any
    migrate: str
    criu: str | None
    features: dict[str, Any]
    host: str
    compression: str | None
    hmac: str | None

    def to_header(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "migrate": self.migrate, "criu": self.criu,
                "features": self.features, "host": self.host,
                "compression": self.compression, "hmac": self.hmac}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> "Welcome":
        compression = header.get("compression")
        if compression is not None and not isinstance(compression, str):
            raise ProtocolError(PHASE, f"WELCOME compression is not a name: {compression!r}")
        return cls(protocol=header.get("protocol"), migrate=str(header.get("migrate", "?")),
                   criu=_optional_str(header.get("criu")), features=_features(header),
                   host=str(header.get("host", "?")), compression=compression,
                   hmac=_optional_str(header.get("hmac")))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """REJECT, either way: why this side will not go on."""

    reason: str

    def to_header(self) -> dict[str, Any]:
        return {"reason": self.reason}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> "Reject":
        reason = header.get("reason")
        return cls(reason=reason if isinstance(reason, str) and reason else "no reason given")


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """ERROR, either way: this side failed in ``phase``."""

    phase: str | None
    message: str

    def to_header(self) -> dict[str, Any]:
        return {"phase": self.phase, "message": self.message}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> "Failure":
        phase, message = header.get("phase"), header.get("message")
        return cls(phase=phase if isinstance(phase, str) and phase else None,
                   message=message if isinstance(message, str) and message else "no reason given")


@dataclass(frozen=True, slots=True, kw_only=True)
class Abort:
    """ABORT, either way: roll back, and why."""

    reason: str
    phase: str | None = None

    def to_header(self) -> dict[str, Any]:
        return {"reason": self.reason, "phase": self.phase}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> "Abort":
        reason, phase = header.get("reason"), header.get("phase")
        return cls(reason=reason if isinstance(reason, str) and reason else "no reason given",
                   phase=phase if isinstance(phase, str) and phase else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnd:
    """END: a stream is complete; ``raw`` bytes before compression (the
    receiver checks it against what it decoded), ``wire`` after."""

    raw: int
    wire: int

    def to_header(self) -> dict[str, Any]:
        return {"raw": self.raw, "wire": self.wire}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> "StreamEnd":
        raw, wire = header.get("raw"), header.get("wire", 0)
        for key, value in (("raw", raw), ("wire", wire)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ProtocolError("transfer", f"END {key} is not a byte count: {value!r}")
        return cls(raw=raw, wire=wire)


def _peer_info(msg: Hello | Welcome, version: int) -> PeerInfo:
    return PeerInfo(host=msg.host, migrate_version=msg.migrate, criu_version=msg.criu,
                    features=msg.features, protocol=version)


def _refuse(io: FrameIO, peer: str, reason: str) -> ProtocolError:
    try:
        io.send(Kind.REJECT, Reject(reason=reason).to_header())
    except Exception:  # noqa: BLE001 - the peer may be gone; the reason is raised anyway
        pass
    return ProtocolError(PHASE, f"refused the {peer}: {reason}")


def _expect(io: FrameIO, peer: str, *kinds: Kind) -> Frame:
    frame = io.recv_frame()
    if frame.kind == Kind.REJECT:
        raise ProtocolError(PHASE, f"the {peer} refused: {Reject.from_header(frame.header).reason}")
    if frame.kind not in kinds:
        names = " or ".join(k.name for k in kinds)
        raise ProtocolError(PHASE, f"expected {names} from the {peer}, got {frame.kind.name}")
    return frame


def _decode(io: FrameIO, peer: str, decode: Callable[[dict[str, Any]], Any],
            header: dict[str, Any]):
    """``decode(header)``, or REJECT with its reason and raise."""
    try:
        return decode(header)
    except ProtocolError as err:
        raise _refuse(io, peer, err.message) from None


def _version_reason(version: int, announced: Any) -> str | None:
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
    io.send(Kind.HELLO, Hello(protocol=PROTOCOL_VERSION, migrate=config.migrate_version,
                              criu=config.criu_version, features=config.features,
                              host=config.host, compression=config.compression,
                              nonce=nonce).to_header())
    peer_name = "destination"
    frame = _expect(io, peer_name, Kind.CHALLENGE)
    challenge = _decode(io, peer_name, Challenge.from_header, frame.header)
    io.send(Kind.AUTH, Auth(hmac=auth_proof(config.token, challenge.nonce, "client")).to_header())
    frame = _expect(io, peer_name, Kind.WELCOME)
    welcome = _decode(io, peer_name, Welcome.from_header, frame.header)
    if not _proof_matches(auth_proof(config.token, nonce, "server"), welcome.hmac):
        raise _refuse(io, peer_name, "the destination could not prove it knows the token")
    reason = _version_reason(frame.version, welcome.protocol)
    if reason is not None:
        raise _refuse(io, peer_name, reason)
    peer = _peer_info(welcome, frame.version)
    reason = check_criu(config.criu_version, peer.criu_version, config.criu_policy)
    if reason is not None:
        raise _refuse(io, peer_name, reason)
    if welcome.compression is not None and welcome.compression not in config.compression:
        raise _refuse(io, peer_name, f"the destination chose compression {welcome.compression!r}, "
                          "which was not offered")
    return peer, welcome.compression


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
    frame = _expect(io, peer_name, Kind.HELLO)
    # The version first: a peer of another version is told so, whatever
    # else its HELLO holds.
    reason = _version_reason(frame.version, frame.header.get("protocol"))
    if reason is not None:
        raise _refuse(io, peer_name, reason)
    hello = _decode(io, peer_name, Hello.from_header, frame.header)
    peer = _peer_info(hello, frame.version)
    nonce = secrets.token_hex(32)
    io.send(Kind.CHALLENGE, Challenge(nonce=nonce).to_header())
    auth = Auth.from_header(_expect(io, peer_name, Kind.AUTH).header)
    if not _proof_matches(auth_proof(config.token, nonce, "client"), auth.hmac):
        raise _refuse(io, peer_name, "authentication failed (wrong token)")
    reason = check_criu(peer.criu_version, config.criu_version, config.criu_policy)
    if reason is not None:
        raise _refuse(io, peer_name, reason)
    if admit is not None:
        reason = admit(peer)
        if reason is not None:
            raise _refuse(io, peer_name, reason)
    compression = next((c for c in hello.compression if c in config.compression), None)
    io.send(Kind.WELCOME, Welcome(protocol=PROTOCOL_VERSION, migrate=config.migrate_version,
                                  criu=config.criu_version, features=config.features,
                                  host=config.host, compression=compression,
                                  hmac=auth_proof(config.token, hello.nonce, "server")).to_header())
    return peer, compression
