"""One migration's control connection: frames, streams, files and trees.

``connect()`` (source) and ``Listener.accept()`` (agent), in
``endpoints.py``, return a ``Connection`` once the handshake
(``protocol.py``) has passed. Then::

    conn.send(Kind.PREPARE, {...})             a control message
    conn.recv(expect=Kind.READY)               the next one, or MigrationError
    conn.send_stream({"what": ...}, chunks)    bulk bytes, zstd if negotiated
    conn.recv_stream()                         ... iterated on the other side
    conn.send_file(path) / recv_file(dir)      one file (a CRIU image)
    conn.send_tree(dir) / recv_tree(dir)       a directory tree (tree.py)

Every blocking call has a deadline and the socket has keepalive and a user
timeout (``_sockets.py``), so a dead peer or a link that went down turns
into a ``MigrationError`` naming the current phase within seconds. Bytes are
counted per phase (``with conn.in_phase("images"):``): ``bytes_on_wire``
(every byte sent or received) and ``bytes_raw`` (the same, with stream
contents counted before compression).

An ERROR, ABORT or REJECT from the peer where something else was expected
raises ``MigrationError`` with the peer's reason; anything out of protocol
raises ``ProtocolError``. A connection that failed once is not used again.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import socket
import ssl
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from migrate.errors import MigrationError, ProtocolError
from migrate.migration._sockets import Timeouts
from migrate.migration.progress import Progress, SilentProgress
from migrate.migration.protocol import (
    HEADER,
    MAX_CHUNK,
    PROTOCOL_VERSION,
    Abort,
    Failure,
    Frame,
    Kind,
    PeerInfo,
    Reject,
    StreamEnd,
    decode_header,
    decode_payload,
    encode_frame,
)
from migrate.migration.tree import (
    TreeSnapshot,
    TreeStats,
    TreeWriter,
    check_relpath,
    encode_entry,
    encode_tree,
)

__all__ = ["Connection", "IncomingStream", "PhaseBytes", "StreamStats", "available_compression"]

# Stream pieces smaller than this are gathered into one CHUNK frame.
COALESCE = 256 << 10
READ_SIZE = 1 << 20
ZSTD_LEVEL = 3
DRAIN_IDLE = 0.2


def available_compression() -> tuple[str, ...]:
    """The stream compressions this host can do (zstd needs ``zstandard``)."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return ()
    return ("zstd",)


@dataclass(slots=True)
class PhaseBytes:
    """Bytes moved during one phase, both directions together."""

    bytes_on_wire: int = 0
    bytes_raw: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"bytes_on_wire": self.bytes_on_wire, "bytes_raw": self.bytes_raw,
                "seconds": round(self.seconds, 6)}


@dataclass(frozen=True, slots=True)
class StreamStats:
    raw: int
    wire: int


class Connection:
    """A socket that speaks the migration protocol; see the module doc.

    ``peer_role`` ("destination" or "source") words the errors.
    ``source_state`` is what errors say about the source container; the
    source updates it as the migration goes (running, frozen ...).
    """

    def __init__(self, sock: socket.socket, *, peer: str, peer_role: str,
                 timeouts: Timeouts | None = None, progress: Progress | None = None) -> None:
        self._sock = sock
        self.peer = peer
        self.peer_role = peer_role
        self.timeouts = timeouts or Timeouts()
        self.progress: Progress = progress or SilentProgress()
        self.peer_info: PeerInfo | None = None
        self.compression: str | None = None
        self.source_state = "running"
        self.current_phase = "handshake"
        self.counters: dict[str, PhaseBytes] = {}
        self._phase_started = self.created = time.monotonic()
        # _broken: out of step, only a last ERROR/ABORT may still be sent;
        # _dead: the socket failed, or the peer already gave up.
        self._broken: MigrationError | None = None
        self._dead = False
        self._stream_open = False
        self._closed = False

    # -- life --------------------------------------------------------------

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, *, drain: float = 0.0) -> None:
        """Close; with ``drain`` seconds, first shut down our side and read
        what the peer still sends (up to then), so a last ERROR we sent is
        not destroyed by the reset that closing with unread data causes."""
        if self._closed:
            return
        self._closed = True
        self._tick()
        if drain > 0:
            with contextlib.suppress(OSError, ssl.SSLError, ValueError):
                self._sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + drain
                while (left := deadline - time.monotonic()) > 0:
                    # A peer that is not sending is reading: it has our message.
                    self._sock.settimeout(min(left, DRAIN_IDLE))
                    if not self._sock.recv(1 << 16):
                        break
        with contextlib.suppress(OSError):
            self._sock.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def local_address(self) -> str:
        """Our address on this connection (where the peer reached us)."""
        return self._sock.getsockname()[0]

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- phases and counters --------------------------------------------------

    @contextlib.contextmanager
    def in_phase(self, name: str) -> Iterator[None]:
        """Count bytes under ``name`` and name it in errors, until the block ends."""
        previous = self.current_phase
        self.set_phase(name)
        try:
            yield
        finally:
            self.set_phase(previous)

    def set_phase(self, name: str) -> None:
        self._tick()
        self.current_phase = name
        self.counters.setdefault(name, PhaseBytes())

    def _tick(self) -> None:
        now = time.monotonic()
        self.counters.setdefault(self.current_phase, PhaseBytes()).seconds += now - self._phase_started
        self._phase_started = now

    def _count(self, wire: int, raw: int) -> None:
        c = self.counters.setdefault(self.current_phase, PhaseBytes())
        c.bytes_on_wire += wire
        c.bytes_raw += raw

    @property
    def bytes_on_wire(self) -> int:
        return sum(c.bytes_on_wire for c in self.counters.values())

    @property
    def bytes_raw(self) -> int:
        return sum(c.bytes_raw for c in self.counters.values())

    # -- errors ------------------------------------------------------------------

    def _fail(self, message: str, *, cls: type[MigrationError] = MigrationError,
              dead: bool = True) -> MigrationError:
        err = cls(self.current_phase, message, source_state=self.source_state)
        self._broken = self._broken or err
        self._dead = self._dead or dead
        return err

    def _io_error(self, err: BaseException, doing: str) -> MigrationError:
        who = f"the {self.peer_role} ({self.peer})"
        if isinstance(err, ssl.SSLError):
            return self._fail(f"TLS error while {doing} {who}: {err.reason or err}")
        code = getattr(err, "errno", None)
        if code == _errno.ETIMEDOUT:
            return self._fail(f"the connection to {who} timed out while {doing} it: the peer "
                              "stopped answering (host down or link cut)")
        if isinstance(err, (socket.timeout, TimeoutError)):
            return self._fail(f"no progress for {self._last_timeout:.0f} s while {doing} {who}")
        if code in (_errno.EHOSTUNREACH, _errno.ENETUNREACH, _errno.ENETDOWN):
            # What a cut link usually looks like: TCP gave up (user timeout
            # or keepalive) and reports the last routing error it saw.
            return self._fail(f"{who} became unreachable while {doing} it "
                              f"({os.strerror(code)}): host down or link cut")
        if isinstance(err, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return self._fail(f"connection to {who} lost while {doing} it "
                              f"({os.strerror(code or 0)}): the {self.peer_role} went away")
        if isinstance(err, OSError):
            return self._fail(f"connection to {who} failed while {doing} it: "
                              f"{err.strerror or err}")
        return self._fail(f"connection to {who} failed while {doing} it: {err}")

    def _check_usable(self, *, last: bool = False) -> None:
        if self._dead or (self._broken is not None and not last):
            why = self._broken.message if self._broken is not None else "this side gave up"
            raise MigrationError(self.current_phase, f"the connection to the {self.peer_role} "
                                 f"already failed: {why}", source_state=self.source_state)
        if self._closed:
            raise MigrationError(self.current_phase, f"the connection to the {self.peer_role} "
                                 "is closed", source_state=self.source_state)

    # -- raw frames ----------------------------------------------------------------

    _last_timeout = 0.0

    def _settimeout(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline passed")
        self._sock.settimeout(left)

    def _sendall(self, data: bytes | memoryview, timeout: float | None, *, last: bool = False) -> None:
        self._check_usable(last=last)
        self._last_timeout = timeout or self.timeouts.io
        deadline = time.monotonic() + self._last_timeout
        try:
            self._settimeout(deadline)
            self._sock.sendall(data)
        except (OSError, ssl.SSLError) as err:
            words = self._last_words() if isinstance(err, (ConnectionResetError, BrokenPipeError)) else None
            if words is not None:
                raise words from err
            raise self._io_error(err, "sending to") from err

    def _last_words(self) -> MigrationError | None:
        """After a send failed because the peer closed: the ERROR, ABORT or
        REJECT it sent before closing, if it still waits in our receive
        buffer (Linux keeps queued data readable after a reset)."""
        try:
            self._sock.settimeout(0.5)
            raw = self._sock.recv(HEADER.size, socket.MSG_WAITALL)
            if len(raw) != HEADER.size:
                return None
            _version, kind, length = decode_header(raw, phase=self.current_phase)
            if kind not in (Kind.ERROR, Kind.ABORT, Kind.REJECT):
                return None
            payload = self._sock.recv(length, socket.MSG_WAITALL) if length else b""
            if len(payload) != length:
                return None
            frame = Frame(kind, decode_payload(kind, payload, phase=self.current_phase))
        except Exception:  # noqa: BLE001 - only a better message is at stake
            return None
        return self._unexpected(frame, ())

    def _read_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        try:
            while got < n:
                self._settimeout(deadline)
                k = self._sock.recv_into(view[got:], n - got)
                if k == 0:
                    raise self._fail(f"the {self.peer_role} ({self.peer}) closed the connection"
                                     + (" in the middle of a frame" if got else ""))
                got += k
        except MigrationError:
            raise
        except (OSError, ssl.SSLError) as err:
            raise self._io_error(err, "waiting for") from err
        return bytes(buf)

    def recv_frame(self, *, timeout: float | None = None) -> Frame:
        """The next frame, whatever it is (the handshake reads frames of any
        version). Raises ``MigrationError`` / ``ProtocolError``."""
        self._check_usable()
        self._last_timeout = timeout or self.timeouts.io
        deadline = time.monotonic() + self._last_timeout
        raw = self._read_exact(HEADER.size, deadline)
        try:
            version, kind, length = decode_header(raw, phase=self.current_phase)
        except ProtocolError as err:
            self._broken = self._broken or err
            raise
        payload = self._read_exact(length, deadline) if length else b""
        self._count(HEADER.size + length, 0 if kind == Kind.CHUNK else HEADER.size + length)
        if kind == Kind.CHUNK:
            return Frame(kind, {}, payload, version)
        try:
            header = decode_payload(kind, payload, phase=self.current_phase)
        except ProtocolError as err:
            self._broken = self._broken or err
            raise
        return Frame(kind, header, b"", version)

    def _send_frame(self, kind: Kind, header: dict[str, Any] | None = None, data: bytes = b"",
                    *, timeout: float | None = None, raw: int | None = None,
                    last: bool = False) -> int:
        frame = encode_frame(kind, header, data)
        self._sendall(frame, timeout, last=last)
        self._count(len(frame), len(frame) if raw is None else raw)
        return len(frame)

    # -- control messages ------------------------------------------------------------

    def send(self, kind: Kind, header: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> None:
        """Send one control message. Raises ``MigrationError``."""
        if kind in (Kind.CHUNK, Kind.STREAM, Kind.END):
            raise ValueError(f"{kind.name} frames are sent by send_stream()")
        if self._stream_open:
            raise RuntimeError("a stream is being received: read it to the end first")
        self._send_frame(kind, header, timeout=timeout)

    def send_error(self, message: str, *, phase: str | None = None) -> None:
        """Tell the peer this side failed; best effort (the link may be gone).
        After this only ``close()`` makes sense."""
        if self._dead or self._closed:
            return
        with contextlib.suppress(MigrationError):
            self._send_frame(Kind.ERROR, Failure(phase=phase or self.current_phase,
                                                 message=message).to_header(),
                             timeout=min(5.0, self.timeouts.io), last=True)
        self._dead = True

    def send_abort(self, reason: str) -> None:
        """Ask the peer to roll back; best effort. After this only
        ``close()`` makes sense."""
        if self._dead or self._closed:
            return
        with contextlib.suppress(MigrationError):
            self._send_frame(Kind.ABORT, Abort(reason=reason, phase=self.current_phase).to_header(),
                             timeout=min(5.0, self.timeouts.io), last=True)
        self._dead = True

    def recv(self, expect: Kind | tuple[Kind, ...] | None = None, *,
             timeout: float | None = None) -> Frame:
        """The next control message, of a kind in ``expect`` if given.

        Raises ``MigrationError`` for the peer's ERROR, ABORT or REJECT (with
        its reason) and for I/O failures, ``ProtocolError`` for anything
        out of protocol (a stream where a message was expected included).
        """
        if self._stream_open:
            raise RuntimeError("a stream is being received: read it to the end first")
        kinds = (expect,) if isinstance(expect, Kind) else tuple(expect or ())
        frame = self.recv_frame(timeout=timeout)
        if frame.version != PROTOCOL_VERSION:
            raise self._fail(f"the {self.peer_role} switched to protocol version {frame.version}",
                             cls=ProtocolError, dead=False)
        if kinds and frame.kind not in kinds:
            raise self._unexpected(frame, kinds)
        if not kinds and frame.kind in (Kind.CHUNK, Kind.END, Kind.ERROR, Kind.ABORT, Kind.REJECT):
            raise self._unexpected(frame, ())
        return frame

    def _unexpected(self, frame: Frame, kinds: tuple[Kind, ...]) -> MigrationError:
        if frame.kind == Kind.ERROR:
            failure = Failure.from_header(frame.header)
            return self._fail(f"the {self.peer_role} failed "
                              f"({failure.phase or self.current_phase}): {failure.message}")
        if frame.kind == Kind.ABORT:
            return self._fail(f"the {self.peer_role} aborted: "
                              f"{Abort.from_header(frame.header).reason}")
        if frame.kind == Kind.REJECT:
            return self._fail(f"the {self.peer_role} refused: "
                              f"{Reject.from_header(frame.header).reason}", cls=ProtocolError)
        wanted = " or ".join(k.name for k in kinds) or "a control message"
        return self._fail(f"expected {wanted} from the {self.peer_role}, got {frame.kind.name}",
                          cls=ProtocolError, dead=False)

    # -- streams --------------------------------------------------------------------

    def send_stream(self, header: dict[str, Any], chunks: Iterable[bytes], *,
                    compress: bool | None = None, timeout: float | None = None) -> StreamStats:
        """Send ``chunks`` as one stream announced by ``header``.

        ``compress``: None uses what the handshake negotiated, False sends
        raw (already compressed data). If ``chunks`` raises, the peer gets
        an ERROR and the exception goes on. Raises ``MigrationError``.
        """
        if self._stream_open:
            raise RuntimeError("a stream is being received: read it to the end first")
        codec = self.compression if compress is None or compress else None
        compressor = None
        if codec == "zstd":
            import zstandard

            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        self._send_frame(Kind.STREAM, {**header, "compression": codec}, timeout=timeout)
        raw = wire = 0
        pending: list[bytes] = []
        pending_size = 0

        def emit(data: bytes | memoryview, raw_size: int) -> None:
            nonlocal wire
            view = memoryview(data)
            first = True
            while view or first:
                piece, view = view[:MAX_CHUNK], view[MAX_CHUNK:]
                wire += self._send_frame(Kind.CHUNK, data=piece, timeout=timeout,
                                         raw=raw_size if first else 0)
                first = False

        def flush() -> None:
            nonlocal pending, pending_size
            if pending:
                emit(b"".join(pending), pending_size)
                pending, pending_size = [], 0

        try:
            for data in chunks:
                if not data:
                    continue
                raw += len(data)
                self.progress.advance(len(data))
                if compressor is not None:
                    out = compressor.compress(data)
                    if out:
                        emit(out, len(data))
                    else:
                        self._count(0, len(data))
                    continue
                if len(data) >= COALESCE:
                    flush()
                    emit(data, len(data))
                    continue
                pending.append(bytes(data))
                pending_size += len(data)
                if pending_size >= COALESCE:
                    flush()
            flush()
            if compressor is not None:
                out = compressor.flush()
                if out:
                    emit(out, 0)
        except MigrationError:
            raise
        except BaseException as err:
            self.send_error(f"reading the data to send failed: {err}")
            raise
        self._send_frame(Kind.END, StreamEnd(raw=raw, wire=wire).to_header(), timeout=timeout)
        return StreamStats(raw=raw, wire=wire)

    def recv_stream(self, *, what: str | None = None, timeout: float | None = None) -> "IncomingStream":
        """Wait for a STREAM (with ``header["what"] == what`` if given); read
        its content by iterating the result to the end. Raises
        ``MigrationError`` / ``ProtocolError``."""
        frame = self.recv(Kind.STREAM, timeout=timeout)
        if what is not None and frame.header.get("what") != what:
            raise self._fail(f"expected a {what} stream from the {self.peer_role}, got "
                             f"{frame.header.get('what')!r}", cls=ProtocolError, dead=False)
        return IncomingStream(self, frame.header, timeout=timeout)

    def open_stream(self, frame: Frame, *, timeout: float | None = None) -> "IncomingStream":
        """The content of a STREAM frame that ``recv()`` returned."""
        if frame.kind != Kind.STREAM:
            raise ValueError(f"{frame.kind.name} is not a stream")
        return IncomingStream(self, frame.header, timeout=timeout)

    # -- files -------------------------------------------------------------------------

    def send_file(self, path: str, *, name: str | None = None, compress: bool | None = None,
                  **header: Any) -> StreamStats:
        """Send one regular file (a CRIU image, say) as a ``file`` stream;
        ``name`` (default: its base name) is where it lands under the
        receiver's directory. Raises ``MigrationError``."""
        name = name or os.path.basename(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise self._fail(f"cannot open {path}: {err.strerror}") from err
        with os.fdopen(fd, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise self._fail(f"{path} is not a regular file")

            def chunks() -> Iterator[bytes]:
                while data := f.read(READ_SIZE):
                    yield data

            return self.send_stream({**header, "what": "file", "name": name, "size": st.st_size,
                                     "mode": stat.S_IMODE(st.st_mode)}, chunks(), compress=compress)

    def recv_file(self, dest_dir: str, *, stream: "IncomingStream | None" = None,
                  timeout: float | None = None) -> str:
        """Receive a ``file`` stream into ``dest_dir`` (its name must be a
        safe relative path), or read ``stream``, a file stream already
        announced; returns the path written. Raises ``MigrationError`` /
        ``ProtocolError``."""
        stream = stream or self.recv_stream(what="file", timeout=timeout)
        name = stream.header.get("name")
        mode = stream.header.get("mode", 0o600)
        try:
            parts = check_relpath(name, phase=self.current_phase, allow_root=False)
        except ProtocolError as err:
            self._broken = self._broken or err
            raise
        if not isinstance(mode, int):
            raise self._fail(f"file {name!r}: bad mode {mode!r}", cls=ProtocolError, dead=False)
        now = time.time_ns()
        entries = [{"op": "put", "path": "/".join(parts[:i + 1]), "type": "dir", "mode": 0o755,
                    "uid": 0, "gid": 0, "mtime_ns": now} for i in range(len(parts) - 1)]
        with TreeWriter(dest_dir, phase=self.current_phase, preserve_owner=False) as writer:
            for entry in entries:
                if not os.path.isdir(os.path.join(dest_dir, entry["path"])):
                    writer.feed(encode_entry(entry))
            size = stream.header.get("size")
            if not isinstance(size, int) or size < 0:
                raise self._fail(f"file {name!r}: bad size {size!r}", cls=ProtocolError, dead=False)
            writer.feed(encode_entry({"op": "put", "path": name, "type": "file", "mode": mode,
                                      "uid": 0, "gid": 0, "mtime_ns": now, "size": size}))
            for data in stream:
                writer.feed(data)
            writer.finish()
        if stream.raw != size:
            raise self._fail(f"file {name!r}: announced {size} bytes, got {stream.raw}",
                             cls=ProtocolError, dead=False)
        return os.path.join(dest_dir, *parts)

    # -- trees -----------------------------------------------------------------------------

    def send_tree(self, path: str, *, only_changed_since: TreeSnapshot | int | None = None,
                  label: str = "tree", compress: bool | None = None,
                  racy_ns: int | None = None) -> tuple[TreeSnapshot, TreeStats, StreamStats]:
        """Stream the tree at ``path`` (all of it, or what changed since a
        snapshot or a time in ns, with deletions for a snapshot). ``label``
        tells the receiver what it is (e.g. ``rootfs``). Returns this pass's
        snapshot (for the next pass), what was sent, and the byte counts.
        Raises ``MigrationError``."""
        snapshot = TreeSnapshot(root=path)
        stats = TreeStats()
        kwargs = {} if racy_ns is None else {"racy_ns": racy_ns}
        header = {"what": "tree", "label": label,
                  "pass": "full" if only_changed_since is None else "changes"}
        sent = self.send_stream(header, encode_tree(path, since=only_changed_since,
                                                    snapshot=snapshot, stats=stats, **kwargs),
                                compress=compress)
        return snapshot, stats, sent

    def recv_tree(self, dest: str, *, preserve_owner: bool | None = None,
                  stream: "IncomingStream | None" = None,
                  timeout: float | None = None) -> tuple[dict[str, Any], TreeStats]:
        """Receive a tree stream into ``dest`` (or read ``stream``, a tree
        stream already announced); returns its header and what was written.
        Raises ``MigrationError`` / ``ProtocolError`` (escapes included)."""
        stream = stream or self.recv_stream(what="tree", timeout=timeout)
        try:
            with TreeWriter(dest, phase=self.current_phase, preserve_owner=preserve_owner) as writer:
                for data in stream:
                    writer.feed(data)
                stats = writer.finish()
        except MigrationError as err:
            # The sender is still streaming: the connection cannot be resynchronised.
            self._broken = self._broken or err
            raise
        return stream.header, stats


class IncomingStream:
    """The content of a received stream: iterate it to the end (END checks
    the byte count). ``raw`` and ``wire`` count what arrived."""

    def __init__(self, conn: Connection, header: dict[str, Any], *, timeout: float | None) -> None:
        self.conn = conn
        self.header = header
        self.timeout = timeout
        self.raw = 0
        self.wire = 0
        self.finished = False
        codec = header.get("compression")
        self._decompressor = None
        if codec == "zstd":
            try:
                import zstandard
            except ImportError:
                raise conn._fail("the peer sent zstd, which this host cannot decompress "
                                 "(zstandard is not installed)", cls=ProtocolError,
                                 dead=False) from None
            self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        elif codec is not None:
            raise conn._fail(f"unknown stream compression {codec!r}", cls=ProtocolError, dead=False)
        conn._stream_open = True

    def __iter__(self) -> Iterator[bytes]:
        conn = self.conn
        try:
            while not self.finished:
                frame = conn.recv_frame(timeout=self.timeout)
                if frame.kind == Kind.CHUNK:
                    self.wire += len(frame.data)
                    data = frame.data
                    if self._decompressor is not None:
                        try:
                            data = self._decompressor.decompress(data)
                        except Exception as err:  # noqa: BLE001 - zstd's own error type
                            raise conn._fail(f"corrupt zstd stream: {err}",
                                             cls=ProtocolError, dead=False) from None
                    conn._count(0, len(data))
                    self.raw += len(data)
                    conn.progress.advance(len(data))
                    if data:
                        yield data
                elif frame.kind == Kind.END:
                    self.finished = True
                    conn._stream_open = False
                    try:
                        sent = StreamEnd.from_header(frame.header).raw
                    except ProtocolError as err:
                        raise conn._fail(err.message, cls=ProtocolError, dead=False) from None
                    if sent != self.raw:
                        raise conn._fail(f"stream ended after {self.raw} bytes, the "
                                         f"{conn.peer_role} sent {sent}",
                                         cls=ProtocolError, dead=False)
                else:
                    conn._stream_open = False
                    raise conn._unexpected(frame, (Kind.CHUNK, Kind.END))
        finally:
            if not self.finished:
                conn._stream_open = False
                if conn._broken is None:
                    # Abandoned half-way: what follows is the rest of this
                    # stream, so the connection cannot be used again.
                    conn._broken = MigrationError(conn.current_phase, "a stream was abandoned "
                                                  "half-way", source_state=conn.source_state)

    def read_all(self, limit: int = 64 << 20) -> bytes:
        """All content (small streams only); raises ``ProtocolError`` over ``limit``."""
        out = bytearray()
        for data in self:
            out += data
            if len(out) > limit:
                raise self.conn._fail(f"stream is over {limit} bytes", cls=ProtocolError, dead=False)
        return bytes(out)

    def discard(self) -> None:
        for _ in self:
            pass
