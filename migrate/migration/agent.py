"""The destination agent behind ``migrate receive``.

It listens, authenticates each source (``protocol.py``) and hands the
migration to a ``Receiver`` (``receiver.py``: checks, files, restore). One
migration runs at a time, many run one after another; an authenticated
source that comes while one runs is told "busy" at once (the slot is
claimed at the end of the handshake, so a refused or slow handshake never
holds it). A failed migration is
cleaned up by the receiver and the agent goes on; a bug in one migration's
handling is logged and does not stop the agent either.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from migrate.errors import MigrateError, MigrationError
from migrate.migration._sockets import Timeouts, TlsConfig
from migrate.migration.hostfacts import HostFacts
from migrate.migration.protocol import CriuPolicy, PeerInfo
from migrate.migration.receiver import (
    SPACE_MARGIN,
    AgentEvent,
    ControlFn,
    Incoming,
    Outcome,
    Receiver,
    RestoreFn,
)
from migrate.migration.endpoints import Listener
from migrate.migration.transport import Connection, available_compression

__all__ = ["Agent", "AgentEvent", "Incoming", "Outcome", "RestoreFn", "ControlFn",
           "DEFAULT_WORK_ROOT"]

log = logging.getLogger(__name__)

DEFAULT_WORK_ROOT = "/var/lib/migrate/incoming"
# Connections authenticating at once (one of them at most migrates).
MAX_CONNECTIONS = 8


class Agent:
    """Receives migrations on ``listen_addr:port`` (port 0: any; see
    ``address``) into work directories under ``work_root``, for containers
    of the runtime whose state directory is ``root``.

    ``restore_fn(workdir, request)`` restores (None: every migration is
    refused at its checks); ``facts`` answers CRIU questions (default: the
    real CRIU, ``criu``); ``controls`` maps CONTROL operations to hooks;
    ``on_event`` hears about each connection. Raises ``MigrationError`` if it
    cannot listen or create ``work_root``.
    """

    def __init__(self, listen_addr: str, port: int, token: str | bytes, root: str, *,
                 restore_fn: RestoreFn | None = None, work_root: str | None = None,
                 tls: TlsConfig | None = None, facts: HostFacts | None = None,
                 controls: Mapping[str, ControlFn] | None = None, criu: str = "criu",
                 criu_policy: CriuPolicy = CriuPolicy.NOT_OLDER,
                 timeouts: Timeouts | None = None, compression: tuple[str, ...] | None = None,
                 on_event: Callable[[AgentEvent], None] | None = None,
                 host_name: str | None = None, space_margin: int = SPACE_MARGIN) -> None:
        if facts is None:
            from migrate.migration.hostfacts import CriuHostFacts

            facts = CriuHostFacts(criu)
        self.timeouts = timeouts or Timeouts()
        work_root = work_root or DEFAULT_WORK_ROOT
        try:
            os.makedirs(work_root, mode=0o700, exist_ok=True)
        except OSError as err:
            raise MigrationError("listen", f"cannot create the work directory {work_root}: "
                                 f"{err.strerror}", source_state="unknown") from err
        clean_stale_workdirs(work_root, root, criu=criu)
        self.receiver = Receiver(root, work_root, restore_fn=restore_fn, facts=facts,
                                 controls=controls, timeouts=self.timeouts,
                                 space_margin=space_margin, on_event=on_event)
        self.listener = Listener(listen_addr, port, token, tls=tls,
                                 criu_version=facts.criu_version(),
                                 # The CONTROL operations it serves, for the source to ask.
                                 features={**facts.features(), "controls": sorted(controls or ())},
                                 compression=available_compression() if compression is None
                                 else compression, criu_policy=criu_policy,
                                 timeouts=self.timeouts, host_name=host_name)
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._busy = False      # under _lock: the migration slot is taken
        self._active: Connection | None = None
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.address

    @property
    def work_root(self) -> str:
        return self.receiver.work_root

    def serve(self, *, stop: threading.Event | None = None,
              max_migrations: int | None = None, poll: float = 0.2) -> list[Outcome]:
        """Serve until ``stop`` is set, ``close()`` is called, or
        ``max_migrations`` migrations (that passed the handshake) have
        ended; returns their outcomes. A failed migration never stops it."""
        stop = stop or threading.Event()
        host, port = self.address
        self.receiver.event("listening", message=f"{host}:{port}")
        first = len(self.outcomes)
        try:
            while not stop.is_set() and not self._closed:
                if max_migrations is not None and len(self.outcomes) - first >= max_migrations:
                    break
                try:
                    got = self.listener.accept_socket(timeout=poll)
                except OSError:
                    if self._closed:
                        break
                    raise
                if got is None:
                    continue
                sock, peer = got
                with self._lock:
                    self._threads = {t for t in self._threads if t.is_alive()}
                    full = len(self._threads) >= MAX_CONNECTIONS
                    if not full:
                        # Each connection authenticates in its own thread, so a
                        # slow or refused one never delays the next; the one
                        # migration slot is claimed after authentication.
                        thread = threading.Thread(target=self._serve_socket, args=(sock, peer),
                                                  name=f"migrate-agent {peer}", daemon=True)
                        self._threads.add(thread)
                        thread.start()
                if full:
                    self.receiver.event("refused", peer=peer, message="too many connections")
                    self.listener.refuse(sock, "the agent is busy: too many connections")
        finally:
            self._stop_threads()
        return self.outcomes[first:]

    def close(self) -> None:
        """Stop listening (``serve`` returns) and end a running migration."""
        self._closed = True
        self.listener.close()
        self._stop_threads()

    def _stop_threads(self) -> None:
        active = self._active
        if active is not None:
            # The receiver sees the connection fail and rolls back.
            active.send_abort("the agent is shutting down")
            active.close()
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + self.timeouts.connect
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _admit(self, peer: PeerInfo) -> str | None:
        with self._lock:
            if self._busy:
                return "the agent is busy with another migration; try again later"
            self._busy = True
            return None

    def _serve_socket(self, sock: socket.socket, peer: str) -> None:
        admitted = False
        outcome = None
        try:
            conn = self.listener.handshake(sock, peer, admit=self._admit)
            admitted = True
            self._active = conn
            outcome = self.receiver.serve(conn)
        except MigrateError as err:
            self.receiver.event("refused", peer=peer, message=getattr(err, "message", str(err)))
        except Exception as err:  # noqa: BLE001 - a bug must not stop the agent
            log.exception("migration from %s", peer)
            self.receiver.event("failed", peer=peer, message=f"internal error: {err!r}")
        finally:
            if admitted:
                self._active = None
                with self._lock:
                    self._busy = False
                    if outcome is not None:
                        self.outcomes.append(outcome)


def clean_stale_workdirs(work_root: str, root: str, *, criu: str = "criu") -> list[str]:
    """Remove work directories an earlier agent left behind when it died
    mid-migration: those whose container never became a container here
    (a restored one keeps its work directory: it may hold its bundle), and
    finish the undo of a restore it had prepared for one (``restore_prepare``:
    the claim of the ID, cgroups, the --root bind)."""
    import shutil

    from migrate.migration.content.destination import memory_store_path

    removed = []
    try:
        names = os.listdir(work_root)
    except OSError:
        return removed
    for name in names:
        cid, sep, _ = name.rpartition("-")
        path = os.path.join(work_root, name)
        if not sep or not os.path.isdir(path) or os.path.islink(path):
            continue
        # content pre-copy's page store, if it was in memory (before the
        # work directory: once that is gone, all is); a restored container
        # no longer needs it either
        store = memory_store_path(path)
        if os.path.isdir(store):
            shutil.rmtree(store, ignore_errors=True)
            removed.append(store)
        state = os.path.join(root, cid, "state.json")
        if not os.path.exists(state):
            if os.path.isdir(os.path.join(root, cid)):
                _undo_half_made(root, cid, criu)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _undo_half_made(root: str, cid: str, criu: str) -> None:
    from migrate.errors import MigrateError
    from migrate.runtime.context import RuntimeContext
    from migrate.runtime.lifecycle.delete import delete

    try:
        delete(RuntimeContext(root=root, criu=criu), cid, force=True)
    except (MigrateError, OSError) as err:
        log.warning("cannot undo the restore an earlier agent prepared for %s: %s", cid, err)
