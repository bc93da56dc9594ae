"""One incoming migration on the destination: checks, files, restore.

``Receiver.serve(conn)`` runs the agent's side of one migration on an
authenticated connection (``agent.py`` accepts and authenticates)::

    source                                          receiver
    PREPARE {container_id, sizes, rootfs, ...}  ->                  (PrepareRequest)
    [file stream cpuinfo.img]                   ->  (when PREPARE says cpuinfo)
                                                <-  READY {workdir, free_bytes}  (Ready)
                                                    or ERROR {phase: "checks"}
    then, in whatever order the strategy needs:
    STREAM tree|file {label, phase, ack?}       ->  written under workdir/<label>
                                                <-  REPLY {stats}           (if ack)
    CONTROL {op, ...}                           ->  (Control: a strategy's hook)
                                                <-  REPLY {...}   (the hook's reply)
    RESTORE {request}                           ->  (RestoreRequest)
                                                <-  RESTORED {info}   (restore_fn)
    DONE                                        <-  DONE          (Restored.commit,
                                                                   then Restored.after)
    ABORT {reason}, at any point                    rollback, no answer

The message bodies are the records of ``messages.py``.

Every check runs before the source freezes anything: a restore is possible
here at all, the container ID is free in the destination ``--root``, the
work directory's file system has room for the announced images and rootfs,
the CPU can run what the source's CPU ran (CRIU's cpuinfo check), and a
"shared" rootfs really is shared (marker files). CRIU versions were
checked by the handshake.

The restore is ``restore_fn(workdir, RestoreRequest) -> Restored | dict``, passed
in (``migrate.checkpoint`` provides the real one). On success the work
directory belongs to the restored container and stays; on any failure it
is removed and anything restored is rolled back (``Restored.abort``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from migrate.errors import MigrateError, MigrationError, ProtocolError
from migrate.migration._sockets import Timeouts
from migrate.migration.hostfacts import CPUINFO_IMAGE, HostFacts
from migrate.migration.messages import Control, PrepareRequest, Ready, RestoreRequest, Restored
from migrate.migration.protocol import Frame, Kind
from migrate.migration.transport import Connection
from migrate.migration.tree import check_relpath

__all__ = ["Receiver", "Incoming", "Outcome", "AgentEvent", "RestoreFn", "ControlFn",
           "SPACE_MARGIN"]

log = logging.getLogger(__name__)

# Room kept free beyond the announced sizes (CRIU logs, file system overhead).
SPACE_MARGIN = 64 << 20
MARKER_MAX = 4096

RestoreFn = Callable[[str, RestoreRequest], "Restored | dict[str, Any] | None"]


@dataclass(slots=True)
class Incoming:
    """One migration being received; what control hooks get."""

    conn: Connection
    workdir: str
    prepare: PrepareRequest
    restored: Restored | None = None
    # What control hooks started (a page server ...): kept for later hooks,
    # and cleaned up when the migration ends either way.
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    cleanups: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def cleanup(self) -> list[str]:
        """Run the cleanups (last first); return what failed."""
        problems = []
        while self.cleanups:
            try:
                self.cleanups.pop()()
            except Exception as err:  # noqa: BLE001 - each cleanup gets its chance
                problems.append(str(err))
        return problems

    def path(self, label: str) -> str:
        """``workdir/label`` for a label the source sent (checked: no escape)."""
        parts = check_relpath(label, phase=self.conn.current_phase, allow_root=False)
        return os.path.join(self.workdir, *parts)


# A CONTROL hook: gets the decoded Control (its own request record reads
# ``control.args``); returns a reply record (``to_header()``) or a dict.
ControlFn = Callable[[Incoming, Control], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one served migration ended."""

    peer: str
    container_id: str | None
    succeeded: bool
    error: str | None = None
    workdir: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentEvent:
    """What the agent tells its owner (the CLI prints these)."""

    kind: str            # listening, refused, started, succeeded, failed
    peer: str = ""
    container_id: str | None = None
    message: str = ""


class Receiver:
    """Serves single migrations into work directories under ``work_root``,
    for containers of the runtime whose state directory is ``root``."""

    def __init__(self, root: str, work_root: str, *, restore_fn: RestoreFn | None,
                 facts: HostFacts, controls: Mapping[str, ControlFn] | None = None,
                 timeouts: Timeouts | None = None, space_margin: int = SPACE_MARGIN,
                 on_event: Callable[[AgentEvent], None] | None = None) -> None:
        self.root = root
        self.work_root = work_root
        self.restore_fn = restore_fn
        self.facts = facts
        self.controls = dict(controls or {})
        self.timeouts = timeouts or Timeouts()
        self.space_margin = space_margin
        self.on_event = on_event

    def event(self, kind: str, **kw: Any) -> None:
        event = AgentEvent(kind=kind, **kw)
        log.info("%s %s %s %s", event.kind, event.peer, event.container_id or "", event.message)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the agent
                log.exception("agent event callback failed")

    def serve(self, conn: Connection) -> Outcome:
        """Serve one migration on an authenticated connection, to its end;
        always closes it. Never raises for the migration's own failures
        (they are in the outcome)."""
        started = time.monotonic()
        incoming: Incoming | None = None
        workdir: str | None = None
        prep: PrepareRequest | None = None
        try:
            with conn.in_phase("prepare"):
                frame = conn.recv(Kind.PREPARE)
                prep = PrepareRequest.from_header(frame.header)
                workdir = self._make_workdir(prep.container_id)
                self.event("started", peer=conn.peer, container_id=prep.container_id,
                       message=f"strategy {prep.strategy or '?'}, rootfs {prep.rootfs}")
                # Read what the source sent along before judging anything, so
                # a refusal is not lost in a reset of unread data.
                cpuinfo_dir = None
                if prep.cpuinfo:
                    cpuinfo_dir = os.path.join(workdir, "cpuinfo")
                    conn.recv_file(cpuinfo_dir)
            with conn.in_phase("checks"):
                free = self._check(prep, cpuinfo_dir)
                conn.send(Kind.READY, Ready(workdir=os.path.basename(workdir),
                                            free_bytes=free).to_header())
            incoming = Incoming(conn=conn, workdir=workdir, prepare=prep)
            self._converse(incoming)
        except BaseException as err:
            outcome = self._failed(conn, err, prep, workdir, incoming, started)
            if not isinstance(err, Exception):
                raise
            return outcome
        for problem in incoming.cleanup():
            log.warning("after migrating %s: %s", prep.container_id, problem)
        conn.close()
        outcome = Outcome(peer=conn.peer, container_id=prep.container_id, succeeded=True,
                          workdir=workdir, seconds=time.monotonic() - started)
        self.event("succeeded", peer=conn.peer, container_id=prep.container_id,
                   message=f"in {outcome.seconds:.2f} s")
        return outcome

    def _failed(self, conn: Connection, err: BaseException, prep: PrepareRequest | None,
                workdir: str | None, incoming: Incoming | None, started: float) -> Outcome:
        if isinstance(err, MigrationError):
            message = err.message
            conn.send_error(message, phase=err.phase)
        elif isinstance(err, MigrateError):
            message = str(err)
            conn.send_error(message)
        elif isinstance(err, Exception):
            log.exception("migration from %s", conn.peer)
            message = f"internal error in the agent: {type(err).__name__}: {err}"
            conn.send_error(message)
        else:
            message = f"interrupted ({type(err).__name__})"
            conn.send_abort(message)
        conn.close(drain=1.0)
        notes = []
        if incoming is not None:
            notes += [f"cleanup: {p}" for p in incoming.cleanup()]
        if incoming is not None and incoming.restored is not None and incoming.restored.abort:
            try:
                incoming.restored.abort()
            except Exception as abort_err:  # noqa: BLE001 - reported, the cleanup goes on
                log.exception("rolling back the restore")
                notes.append(f"rolling back the restore failed: {abort_err}")
        if workdir is not None:
            try:
                shutil.rmtree(workdir)
            except FileNotFoundError:
                pass
            except OSError as rm_err:
                notes.append(f"cannot remove {workdir}: {rm_err.strerror}")
        if notes:
            message += " (" + "; ".join(notes) + ")"
        outcome = Outcome(peer=conn.peer, container_id=prep.container_id if prep else None,
                          succeeded=False, error=message, workdir=workdir,
                          seconds=time.monotonic() - started)
        self.event("failed", peer=conn.peer, container_id=outcome.container_id, message=message)
        return outcome

    def _make_workdir(self, container_id: str) -> str:
        from migrate.runtime.state import validate_id

        try:
            validate_id(container_id)
        except MigrateError as err:
            raise MigrationError("prepare", str(err), source_state="unknown") from err
        try:
            return tempfile.mkdtemp(prefix=f"{container_id}-", dir=self.work_root)
        except OSError as err:
            raise MigrationError("prepare", f"cannot create a work directory in {self.work_root}: "
                                 f"{err.strerror}", source_state="unknown") from err

    # -- checks before the source freezes anything -----------------------------------

    def _check(self, prep: PrepareRequest, cpuinfo_dir: str | None) -> int:
        def fail(message: str) -> MigrationError:
            return MigrationError("checks", message, source_state="unknown")

        if self.restore_fn is None:
            raise fail("this agent cannot restore containers: its migrate.checkpoint has no "
                       "restore for migrations")
        state_dir = os.path.join(self.root, prep.container_id)
        if os.path.lexists(state_dir):
            raise fail(f'container "{prep.container_id}" already exists in {self.root} '
                       "on the destination")
        try:
            st = os.statvfs(self.work_root)
        except OSError as err:
            raise fail(f"cannot stat {self.work_root}: {err.strerror}") from err
        free = st.f_bavail * st.f_frsize
        need = prep.images_size + (prep.rootfs_size if prep.rootfs == "copy" else 0)
        if need + self.space_margin > free:
            raise fail(f"not enough free space in {self.work_root} on the destination: "
                       f"{_mib(need)} needed (+{_mib(self.space_margin)} margin), {_mib(free)} free")
        for marker in prep.shared_markers:
            self._check_marker(marker.path, marker.content, fail)
        if cpuinfo_dir is not None:
            if not os.path.exists(os.path.join(cpuinfo_dir, CPUINFO_IMAGE)):
                raise fail(f"the source sent no {CPUINFO_IMAGE}")
            try:
                self.facts.cpuinfo_check(cpuinfo_dir)
            except MigrateError as err:
                raise fail(f"this CPU cannot run what the source's CPU ran: {err}") from err
        return free

    @staticmethod
    def _check_marker(path: str, content: str, fail: Callable[[str], MigrationError]) -> None:
        if not os.path.isabs(path):
            raise fail(f"shared path check: {path!r} is not absolute")
        try:
            with open(path, "rb") as f:
                seen = f.read(MARKER_MAX + 1)
        except OSError as err:
            raise fail(f"the rootfs is not shared: {path} is not visible on the destination "
                       f"({err.strerror})") from err
        if seen.decode(errors="replace") != content:
            raise fail(f"the rootfs is not shared: {path} has other content on the destination")

    # -- the conversation -----------------------------------------------------------------

    def _converse(self, incoming: Incoming) -> None:
        conn = incoming.conn
        while True:
            conn.set_phase("waiting")
            # The source may dump for a long while between two messages;
            # keepalive still notices if it is gone.
            frame = conn.recv(timeout=self.timeouts.wait)
            h = frame.header
            phase = h.get("phase")
            if isinstance(phase, str) and phase:
                conn.set_phase(phase)
            if frame.kind == Kind.STREAM:
                self._receive(incoming, frame)
            elif frame.kind == Kind.CONTROL:
                self._control(incoming, h)
            elif frame.kind == Kind.RESTORE:
                conn.set_phase(phase or "restore")
                self._restore(incoming, h)
            elif frame.kind == Kind.DONE:
                conn.set_phase(phase or "commit")
                self._commit(incoming)
                return
            else:
                raise conn._unexpected(frame, (Kind.STREAM, Kind.CONTROL, Kind.RESTORE, Kind.DONE))

    def _receive(self, incoming: Incoming, frame: Frame) -> None:
        conn = incoming.conn
        h = frame.header
        label = h.get("label") or "data"
        dest = incoming.path(label)
        stream = conn.open_stream(frame, timeout=self.timeouts.io)
        if h.get("what") == "tree":
            _, stats = conn.recv_tree(dest, stream=stream)
            reply = {"label": label, **stats.to_json()}
        elif h.get("what") == "file":
            path = conn.recv_file(dest, stream=stream)
            reply = {"label": label, "path": os.path.relpath(path, incoming.workdir),
                     "bytes": stream.raw}
        else:
            raise ProtocolError(conn.current_phase, f"unknown stream {h.get('what')!r}")
        if h.get("ack"):
            conn.send(Kind.REPLY, reply)

    def _control(self, incoming: Incoming, h: dict[str, Any]) -> None:
        control = Control.from_header(h, phase=incoming.conn.current_phase)
        fn = self.controls.get(control.op)
        if fn is None:
            raise ProtocolError(incoming.conn.current_phase,
                                f"this agent has no control operation {control.op!r}")
        reply = fn(incoming, control)
        header = dict(reply or {}) if reply is None or isinstance(reply, Mapping) \
            else reply.to_header()
        incoming.conn.send(Kind.REPLY, header)

    def _restore(self, incoming: Incoming, h: dict[str, Any]) -> None:
        conn = incoming.conn
        if self.restore_fn is None:
            raise MigrationError(conn.current_phase, "this agent cannot restore containers "
                                 "(migrate.checkpoint provides no restore)", source_state="unknown")
        request = RestoreRequest.from_header(h, phase=conn.current_phase)
        if request.container_id != incoming.prepare.container_id:
            raise ProtocolError(conn.current_phase,
                                f'RESTORE names container "{request.container_id}", PREPARE '
                                f'"{incoming.prepare.container_id}"')
        try:
            result = self.restore_fn(incoming.workdir, request)
        except MigrationError:
            raise
        except MigrateError as err:
            raise MigrationError(conn.current_phase, str(err), source_state="unknown") from err
        restored = result if isinstance(result, Restored) else Restored(info=dict(result or {}))
        incoming.restored = restored
        conn.send(Kind.RESTORED, restored.to_header())

    def _commit(self, incoming: Incoming) -> None:
        conn = incoming.conn
        if incoming.restored is None:
            raise ProtocolError(conn.current_phase, "DONE before the container was restored")
        if incoming.restored.commit is not None:
            try:
                incoming.restored.commit()
            except MigrateError as err:
                raise MigrationError(conn.current_phase, f"commit failed: {err}",
                                     source_state="unknown") from err
        with contextlib.suppress(MigrationError):
            # The source decides on the DONE it sent; this answer only
            # confirms, so losing it is not a failure here.
            conn.send(Kind.DONE, {})
        incoming.restored = dataclasses.replace(incoming.restored, abort=None)
        if incoming.restored.after is not None:
            try:
                incoming.restored.after()
            except Exception:  # noqa: BLE001 - the migration is done; only clean-up failed
                log.exception("clean-up after migrating %s", incoming.prepare.container_id)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
