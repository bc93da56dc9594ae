"""The source's side: connect, negotiate, ask the agent to check, and roll
back on any failure.

A strategy (stop-and-copy, pre-copy, post-copy, hybrid) runs like this::

    session = connect_and_negotiate(options, facts=facts)
    with session, rollback(resume_source, session=session) as rb:
        session.prepare(PrepareRequest(container_id=..., images_size=..., ...))
        snap, _, _ = session.conn.send_tree(bundle, label="rootfs")   # --rootfs copy
        ... freeze (hold CRIU's post-dump notification) ...
        session.conn.source_state = "frozen"
        session.conn.send_tree(bundle, only_changed_since=snap, label="rootfs")
        session.conn.send_tree(images_dir, label="images")
        session.conn.send(Kind.RESTORE, RestoreRequest(container_id=...).to_header())
        restored = session.conn.recv(Kind.RESTORED, timeout=timeouts.wait)
        session.conn.send(Kind.DONE)
        session.conn.recv(Kind.DONE)     # the destination runs it now
        rb.commit()                      # from here on, never resume the source
        ... let CRIU kill the source tree ...

``rollback`` runs its callback (resume the frozen source) on any failure
before ``commit()``, tells the agent to abort, and re-raises the error
saying what became of the source container.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import MigrateError, MigrationError
from migrate.migration._sockets import Timeouts, TlsConfig
from migrate.migration.hostfacts import CPUINFO_IMAGE, HostFacts
from migrate.migration.messages import PrepareRequest, Ready, SharedMarker
from migrate.migration.progress import Progress
from migrate.migration.protocol import CriuPolicy, Kind, PeerInfo
from migrate.migration.endpoints import connect
from migrate.migration.transport import Connection

__all__ = ["ConnectOptions", "SourceSession", "connect_and_negotiate", "Rollback", "rollback",
           "shared_marker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectOptions:
    """Where the agent is and how to talk to it."""

    host: str
    port: int
    token: str | bytes = field(repr=False)
    tls: TlsConfig | None = None
    compress: bool = True
    criu_policy: CriuPolicy = CriuPolicy.NOT_OLDER
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(slots=True)
class SourceSession:
    """A negotiated connection to an agent: what the peer can do, and the
    checks it ran. Use as a context manager (closes the connection)."""

    conn: Connection
    peer: PeerInfo
    facts: HostFacts
    local_features: dict[str, Any]
    ready: Ready | None = None
    # This CPU's description, dumped while the connection was made: a
    # function that waits for its directory (see _describe_cpu).
    cpuinfo: Callable[[], str] | None = None

    @property
    def compression(self) -> str | None:
        return self.conn.compression

    @property
    def peer_features(self) -> dict[str, Any]:
        return self.peer.features

    def __enter__(self) -> "SourceSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()
        cpuinfo, self.cpuinfo = self.cpuinfo, None
        if cpuinfo is not None:
            with contextlib.suppress(Exception):    # its error is PREPARE's to report
                shutil.rmtree(cpuinfo(), ignore_errors=True)

    def prepare(self, request: PrepareRequest) -> Ready:
        """Announce the migration and wait for the agent's checks (ID free,
        disk space, CPU, shared rootfs). With ``request.cpuinfo`` this
        host's CPU description goes along. Nothing is frozen yet; returns
        READY. Raises ``MigrationError`` (phase "checks") with the agent's
        reason, ``ProtocolError`` for a malformed READY."""
        conn = self.conn
        with conn.in_phase("prepare"):
            cpu_dir = None
            try:
                if request.cpuinfo:
                    cpuinfo, self.cpuinfo = self.cpuinfo, None
                    cpu_dir = (cpuinfo or _describe_cpu(self.facts, background=False))()
                conn.send(Kind.PREPARE, request.to_header())
                if cpu_dir is not None:
                    conn.send_file(os.path.join(cpu_dir, CPUINFO_IMAGE))
            finally:
                if cpu_dir is not None:
                    shutil.rmtree(cpu_dir, ignore_errors=True)
        with conn.in_phase("checks"):
            header = conn.recv(Kind.READY, timeout=conn.timeouts.wait).header
            self.ready = Ready.from_header(header, phase="checks")
        return self.ready

    def abort(self, reason: str) -> None:
        """Tell the agent to roll back (best effort) and close."""
        self.conn.send_abort(reason)
        self.conn.close(drain=0.5)


def connect_and_negotiate(options: ConnectOptions, *, facts: HostFacts,
                          progress: Progress | None = None,
                          host_name: str | None = None) -> SourceSession:
    """Connect to the agent, authenticate both ways and agree on protocol,
    CRIU versions and compression. Raises ``MigrationError`` (phase
    "connect") or ``ProtocolError`` (phase "handshake") saying who refused
    what."""
    from migrate._light import in_background

    # Each of these asks CRIU (a criu swrk of its own, ~5-15 ms): they run
    # side by side, and the CPU description is ready by PREPARE.
    cpuinfo = _describe_cpu(facts)
    try:
        version = in_background(facts.criu_version)
        features = facts.features()
        conn = connect(options.host, options.port, options.token, tls=options.tls,
                       criu_version=version(), features=features,
                       compress=options.compress, criu_policy=options.criu_policy,
                       timeouts=options.timeouts, host_name=host_name, progress=progress)
    except BaseException:
        with contextlib.suppress(Exception):    # its error is PREPARE's to report
            shutil.rmtree(cpuinfo(), ignore_errors=True)
        raise
    return SourceSession(conn=conn, peer=conn.peer_info, facts=facts, local_features=features,
                         cpuinfo=cpuinfo)


def _describe_cpu(facts: HostFacts, *, background: bool = True) -> Callable[[], str]:
    """This host's ``cpuinfo.img`` dumped into a new temporary directory;
    returns a function that waits for that directory (the caller removes
    it). Raises (from that function) ``MigrationError`` (phase "prepare")."""
    from migrate._light import in_background

    def dump() -> str:
        cpu_dir = tempfile.mkdtemp(prefix="migrate-cpuinfo-")
        try:
            facts.cpuinfo_dump(cpu_dir)
        except MigrateError as err:
            shutil.rmtree(cpu_dir, ignore_errors=True)
            raise MigrationError("prepare", f"cannot describe this CPU: {err}") from err
        except BaseException:
            shutil.rmtree(cpu_dir, ignore_errors=True)
            raise
        return cpu_dir

    if background:
        return in_background(dump)
    return dump


class Rollback:
    """Runs ``on_failure(error)`` once if the block fails before
    ``commit()``; see ``rollback``."""

    def __init__(self, on_failure: Callable[[BaseException], str | None], *,
                 session: SourceSession | None = None) -> None:
        self.on_failure = on_failure
        self.session = session
        self.committed = False
        self.rolled_back = False

    def commit(self) -> None:
        """The destination has the container: failures from now on must not
        resume the source."""
        self.committed = True

    def __enter__(self) -> "Rollback":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or self.committed:
            return False
        self.rolled_back = True
        state = None
        notes = []
        if self.session is not None:
            self.session.conn.send_abort(f"the source failed: {_one_line(exc)}")
        try:
            state = self.on_failure(exc)
        except BaseException as err:  # noqa: BLE001 - reported with the first error
            log.exception("rollback failed")
            notes.append(f"rolling back on the source failed too: {_one_line(err)}")
            state = "in an unknown state (the rollback failed)"
        if self.session is not None:
            self.session.conn.close(drain=0.5)
        if isinstance(exc, MigrationError) and state:
            new = exc.with_source_state(state)
            for note in notes + list(getattr(exc, "__notes__", ())):
                new.add_note(note)
            raise new from exc
        for note in notes + ([f"source container {state}"] if state else []):
            exc.add_note(note)
        return False


def rollback(on_failure: Callable[[BaseException], str | None], *,
             session: SourceSession | None = None) -> Rollback:
    """A context that guarantees ``on_failure`` runs on any failure
    (KeyboardInterrupt included) until ``commit()``.

    ``on_failure`` gets the error and returns what became of the source
    container ("resumed", ...), which the re-raised error then says; with
    ``session`` the agent is told to abort too. If ``on_failure`` itself
    fails, the original error is raised with a note saying so.
    """
    return Rollback(on_failure, session=session)


@contextlib.contextmanager
def shared_marker(directory: str) -> Iterator[SharedMarker]:
    """A marker file in ``directory`` with random content, removed after the
    block: put it in ``PrepareRequest.shared_markers`` and the agent checks
    that it sees the same file (``--rootfs shared``). Raises
    ``MigrationError`` if it cannot be written."""
    content = secrets.token_hex(16)
    path = os.path.join(directory, f".migrate-shared-{content[:8]}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, content.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise MigrationError("prepare", f"cannot write a marker in {directory}: {err.strerror}") from err
    try:
        yield SharedMarker(path=os.path.abspath(path), content=content)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _one_line(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return text.splitlines()[0] if text else type(err).__name__
