"""The source's frame around every strategy, and the ``Migration`` object.

Every strategy runs in the same frame (``migrate_container``): negotiate,
choose the strategy, let the agent check everything, stream the rootfs
(``--rootfs copy``), lock and plan the dump once, then let the strategy's
``Pipeline`` (``strategies/``) move memory, and roll back on any failure
before the destination confirms. The container's lock is held from the
first pre-dump round to the commit, so no other command can checkpoint,
pause or delete it between rounds. Until then the source container is frozen, not
killed: CRIU's post-dump notification is held while the destination
restores, and answering failure makes CRIU resume it.

Post-copy is the exception: CRIU serves lazy pages only after post-dump
has been answered, so the hold ends when the images are sent. Rollback still
works until the destination resumes the container (CRIU is stopped, the
freezer thawed, the network unlocked). The one window with no rollback is
from that resume until the last page has been pulled: if the source or the
link dies then, the container is lost on both sides. The destination pulls
pages in the background from the first moment, so the window is about the
time to copy the memory once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading

from migrate._record import field, record
from migrate.errors import MigrateError, MigrationError, UsageError
from migrate.checkpoint.externals import TMPFS_COPY
from migrate.migration.strategy import HostFeatures, PreCopyPolicy, Strategy, choose

__all__ = ["MigrateOptions", "Migration", "migrate_container", "pages_moved", "memory_usage"]


@record
class MigrateOptions:
    container_id: str
    host: str
    port: int
    token: bytes
    strategy: Strategy | None = None     # None: auto (``strategy.choose`` picks)
    rootfs: str = "shared"            # "shared" | "copy"
    compress: bool = True
    keep_source: bool = False         # leave the source running too (a live copy)
    tls: object | None = None         # migration.TlsConfig
    criu_policy: object | None = None
    precopy: PreCopyPolicy = field(default_factory=PreCopyPolicy)
    tcp_established: bool = False
    file_locks: bool = False
    ext_unix_sk: bool = False
    work_dir: str | None = None       # where the source keeps its images (default: a temp dir)
    # Raise fs.pipe-max-size for the migration (a lazy dump needs 4 MiB pipes
    # and root here lacks CAP_SYS_RESOURCE); the old value is put back after.
    raise_pipe_max_size: bool = False

    def __post_init__(self) -> None:
        if self.strategy is not None and not isinstance(self.strategy, Strategy):
            # Names are parsed once, at the edge (strategy.parse_strategy).
            raise UsageError(f"strategy {self.strategy!r} is not a Strategy "
                             "(strategy.parse_strategy parses --strategy)")


def _features(d: dict, *, source: bool) -> HostFeatures:
    return HostFeatures(mem_track=bool(d.get("mem_track")), lazy_pages=bool(d.get("lazy_pages")),
                        lazy_dump_ok=bool(d.get("lazy_dump_ok", True)) if source else True,
                        why_lazy_dump_not_ok=str(d.get("why_lazy_dump_not_ok", "")))


def _dir_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class Migration:
    """One migration on the source, built whole by ``migrate_container``:
    the negotiated session, the chosen strategy's ``Pipeline``, and what
    every strategy shares (phases and progress, the agent's controls, the
    images, the restore and the commit, the final iteration's count).

    ``run()`` is the frame; the pipeline moves memory inside it.
    """

    def __init__(self, ctx, opts: MigrateOptions, container, session, strategy: Strategy,
                 report, timeline, progress) -> None:
        import importlib

        from migrate.checkpoint.netns import why_netns_not_plain

        self.ctx, self.opts, self.session = ctx, opts, session
        self.conn = session.conn
        self.report, self.timeline, self.progress = report, timeline, progress
        self.container = container
        self.bundle = container.state.bundle
        self.strategy = strategy
        # The strategy's module, by the enum's name for it: no string
        # dispatch (see strategy.Strategy.module).
        self.pipeline = importlib.import_module(strategy.module).PIPELINE()
        # CRIU's dump statistics add up over the requests of one swrk
        # session: pre-copy's rounds and its final dump share one, so each
        # round's pages are the difference from what was written before.
        self.written_before = 0
        # Page-server bytes by phase: CRIU's memory stream runs through a
        # Relay of ours (see _relay.py), not through the control connection.
        self.memory_bytes: dict[str, int] = {}
        self._lock = threading.Lock()
        # {"net"} (CRIU's name) when the container's netns holds only lo:
        # CRIU then neither dumps nor restores it while the container is
        # frozen. Asked before anything is frozen.
        why = why_netns_not_plain(container.state.pid, container.state.config or {},
                                  proc_root=ctx.proc_root)
        self.empty_ns: frozenset[str] = frozenset({"net"}) if why is None else frozenset()
        self.network_lock = network_lock_for((session.local_features, session.peer_features),
                                             self.empty_ns, opts.tcp_established)
        self.rootfs_size = _dir_size(self.bundle) if opts.rootfs == "copy" else 0
        self._snapshot = None       # the rootfs as first sent (--rootfs copy)
        self._job = None            # the planned dump (run())
        self._rollback = None
        self.workdir = tempfile.mkdtemp(prefix=f"migrate-{opts.container_id}-",
                                        dir=opts.work_dir or None)

    # -- the frame ---------------------------------------------------------------------

    def run(self) -> None:
        """Prepare, send the rootfs, then lock and plan the dump once and
        let the pipeline move the memory, under a rollback that resumes the
        source on any failure before the commit."""
        with _cgroup_yard(self.ctx) as yard:
            self._run(yard)

    def _run(self, yard) -> None:
        from migrate.checkpoint.dump import dump_job
        from migrate.migration.messages import PrepareRequest
        from migrate.migration.source import rollback, shared_marker

        opts, session = self.opts, self.session
        mem = memory_usage(self.container)
        markers = (shared_marker(self.bundle) if opts.rootfs == "shared"
                   else contextlib.nullcontext())
        with markers as marker:
            session.prepare(PrepareRequest(
                container_id=opts.container_id, strategy=self.strategy.value, rootfs=opts.rootfs,
                images_size=mem + (16 << 20), rootfs_size=self.rootfs_size, cpuinfo=True,
                shared_markers=(marker,) if marker else ()))
        if opts.rootfs == "copy":
            self.step("rootfs", self.rootfs_size)
            self._snapshot, _, _ = self.conn.send_tree(self.bundle, label="bundle")
        if self.empty_ns:
            self.report.reason += ("; the network namespace holds only lo: recreated at the "
                                   "destination instead of dumped and restored")

        container = self.container

        def resume(err) -> str:
            # dump_job already asked CRIU and the freezer to resume it.
            return "resumed" if container.is_alive() else "lost"

        with rollback(resume, session=session) as rb:
            self._rollback = rb
            # Locked and planned once: every pre-dump round and the final
            # dump derive their CRIU options from this one plan.
            with dump_job(self.ctx, self.checkpoint_options(lazy_pages=self.pipeline.lazy),
                          features=_criu_features(session.local_features)) as job:
                if yard() is not None:
                    # The hierarchies the dump reads its cgroups through,
                    # mounted before the freeze instead of while frozen (cgyard.py).
                    job.criu_opts = job.criu_opts.replace(cgroup_yard=yard())
                self._job = job
                if any(m.kind == TMPFS_COPY for m in job.meta.mounts):
                    import tarfile  # noqa: F401 - now, not while frozen (tmpfs_copy.save)
                self.pipeline.run(self, job)

    # -- what strategies share ------------------------------------------------------

    def count_memory(self, direction: str, n: int) -> None:
        """A ``Relay``'s ``on_bytes``: book page-server bytes under the
        current phase; pages sent up move the progress bar."""
        from migrate.migration._relay import UP

        with self._lock:
            phase = self.conn.current_phase
            self.memory_bytes[phase] = self.memory_bytes.get(phase, 0) + n
        if direction == UP:      # pages; the other way are requests and answers
            self.progress.advance(n)

    def step(self, name: str, total: int | None = None) -> None:
        """A new phase: its time and bytes are booked under ``name`` in the
        report, its progress bar starts."""
        self.conn.set_phase(name)
        self.progress.phase(name, total)

    def control(self, request):
        """Send a CONTROL request record (``OP``, ``to_header()``: see
        messages.py) to the agent's hook; returns its REPLY decoded by the
        request's ``Reply`` record. Raises MigrationError, ProtocolError."""
        from migrate.migration.protocol import Kind

        self.conn.send(Kind.CONTROL, request.to_header())
        header = self.conn.recv(Kind.REPLY, timeout=self.conn.timeouts.wait).header
        return request.Reply.from_header(header, phase=self.conn.current_phase)

    def lazy_local_ok(self, memory: int) -> bool:
        """Whether the destination should take the pages of ``memory`` bytes
        lazily from the images it holds (see LAZY_LOCAL_MIN_BYTES)."""
        return bool(self.session.peer_features.get("lazy_pages")) and \
            memory >= LAZY_LOCAL_MIN_BYTES

    def restore_request(self, lazy=None, *, lazy_local: bool = False):
        """RESTORE's body (``lazy``: a ``LazySource``, for post-copy;
        ``lazy_local``: lazy pages from the images at the destination)."""
        from migrate.migration.messages import RestoreRequest

        return RestoreRequest(
            container_id=self.opts.container_id,
            bundle=None if self.opts.rootfs == "copy" else self.bundle, lazy=lazy,
            lazy_local=lazy_local,
            tcp_established=self.opts.tcp_established, file_locks=self.opts.file_locks,
            ext_unix_sk=self.opts.ext_unix_sk, leave_stopped=True, empty_ns=self.empty_ns)

    def prepare_restore(self, lazy=None) -> None:
        """Before the freeze: send the checkpoint's metadata (what
        ``dump_job`` wrote into the images directory) and have the agent do
        what the restore needs no CRIU image for (checks, the claim of the
        ID, cgroups, the --root bind), so that RESTORE has only CRIU left
        to run while the container is frozen. Skipped for an agent that
        does not offer it; a failure here leaves the source running."""
        from migrate.migration.messages import RestorePrepare

        if RestorePrepare.OP not in (self.session.peer_features.get("controls") or ()):
            return
        self.step("restore-prepare")
        self.conn.send_tree(self.images_dir, label="images")
        self.control(RestorePrepare(request=self.restore_request(lazy)))

    def send_images(self, images_dir: str) -> None:
        """The images (and, with --rootfs copy, what the container wrote
        since the first pass) to the destination; the container is frozen."""
        self.step("images", _dir_size(images_dir))
        self.conn.send_tree(images_dir, label="images")
        if self.opts.rootfs == "copy":
            self.step("rootfs-diff")
            self.conn.send_tree(self.bundle, only_changed_since=self._snapshot, label="bundle")
        self.timeline.mark("images sent")

    def restore_and_commit(self, lazy=None, before_resume=None, *,
                           lazy_local: bool = False) -> None:
        """Ask the destination to restore (``lazy``: a ``LazySource``;
        ``lazy_local``: see ``restore_request``), then to run it; commit.
        ``before_resume()`` may still refuse (raise) between the two."""
        self.send_restore(lazy, lazy_local=lazy_local)
        self.commit_restored(before_resume)

    def send_restore(self, lazy=None, *, lazy_local: bool = False) -> None:
        """RESTORE (``restore_and_commit``'s first half)."""
        from migrate.migration.protocol import Kind

        self.step("restore")
        self.conn.send(Kind.RESTORE, self.restore_request(lazy, lazy_local=lazy_local).to_header())

    def commit_restored(self, before_resume=None) -> None:
        """Wait for RESTORED, then run it and commit (``restore_and_commit``'s
        second half)."""
        from migrate.migration.messages import Restored
        from migrate.migration.protocol import Kind

        header = self.conn.recv(Kind.RESTORED, timeout=self.conn.timeouts.wait).header
        Restored.from_header(header, phase=self.conn.current_phase)
        self.timeline.mark("restored")
        if before_resume is not None:
            before_resume()
        self.step("resume")
        self.conn.send(Kind.DONE, {})
        self.conn.recv(Kind.DONE, timeout=self.conn.timeouts.wait)
        self.timeline.mark_resumed()
        self._rollback.commit()

    @property
    def committed(self) -> bool:
        """Whether the destination runs the container (no rollback now)."""
        return self._rollback is not None and self._rollback.committed

    def checkpoint_options(self, **kw):
        from migrate.checkpoint.options import CheckpointOptions

        return CheckpointOptions(
            id=self.opts.container_id, image_path=self.images_dir,
            leave_running=self.opts.keep_source, tcp_established=self.opts.tcp_established,
            file_locks=self.opts.file_locks, ext_unix_sk=self.opts.ext_unix_sk,
            empty_ns=self.empty_ns, network_lock=self.network_lock,
            # The destination is migrate: it recreates the masked tmpfs mounts.
            skip_masked_tmpfs=True, copy_tmpfs=True, **kw)

    @property
    def images_dir(self) -> str:
        """Where the final dump writes its images (pre-dump rounds: ``pre/N``)."""
        return os.path.join(self.workdir, "images")

    def page_server_socket(self, ps, secret: str | None = None) -> socket.socket:
        """Connect to the destination's page server ourselves and hand CRIU
        the socket: with keepalive and a user timeout a cut link fails
        CRIU's writes within seconds (CRIU then resumes the tree), where
        CRIU's own connection would retry for many minutes. ``secret``
        opens the stream (criu_rpc/page_stream.py)."""
        from migrate.migration._sockets import configure_socket
        from migrate.criu_rpc.page_stream import present_secret

        try:
            sock = socket.create_connection((ps.address, ps.port),
                                            timeout=self.conn.timeouts.connect)
            if secret is not None:
                present_secret(sock, secret)
        except OSError as err:
            raise MigrationError("memory", f"cannot reach the destination's page server "
                                 f"{ps.address}:{ps.port}: {err.strerror or err}",
                                 source_state="running") from err
        sock.settimeout(None)
        configure_socket(sock, self.conn.timeouts)
        os.set_inheritable(sock.fileno(), True)
        return sock

    @contextlib.contextmanager
    def local_page_relay(self, ps, secret: str):
        """For a swrk that connects to its page server by itself (it cannot
        inherit our socket): a listener on loopback for it, relayed (and
        counted) to the destination's page server over our own connection,
        opened with ``secret`` (criu_rpc/page_stream.py). Yields the
        PageServer to give CRIU; on exit waits for the stream to end."""
        from migrate.criu_rpc import PageServer
        from migrate.criu_rpc.page_stream import listen_on, loopback_for
        from migrate.migration._relay import Relay

        loopback = loopback_for(ps.address)
        listener = listen_on(loopback)
        relays: list = []

        def accept() -> None:
            try:
                listener.settimeout(self.conn.timeouts.wait)
                near, _ = listener.accept()
            except OSError:
                return      # nobody came: CRIU's pre-dump fails and says why
            try:
                far = self.page_server_socket(ps, secret)
            except MigrationError:
                near.close()
                return
            relays.append(Relay(near, far, self.count_memory, name="page-server").start())

        thread = threading.Thread(target=accept, name="page-server-accept", daemon=True)
        thread.start()
        try:
            yield PageServer(address=loopback, port=listener.getsockname()[1])
        finally:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)     # wakes a blocked accept()
            listener.close()
            thread.join(timeout=self.conn.timeouts.connect)
            for r in relays:
                # CRIU closes its side once its CLOSE is answered: the stream
                # is whole then. The destination's side stays open as long
                # as its swrk session holds the socket: cut it.
                r.join_up(timeout=self.conn.timeouts.io)
                r.abort()
                r.join(timeout=self.conn.timeouts.connect)

    def callbacks(self, post_dump) -> dict:
        """CRIU notification callbacks for the final dump: mark and speed up
        the freeze; ``post_dump(note)`` runs while CRIU holds the tree."""
        def frozen(_note) -> bool:
            # CRIU runs pre-dump right before freezing the tree.
            self.timeline.mark_frozen()
            self.conn.source_state = "frozen"
            self.freeze()
            return True

        def dumped(note) -> bool:
            self.timeline.mark("dumped")
            job = self._job
            if job is not None:
                from migrate.checkpoint.tmpfs_copy import save

                # /dev and /dev/shm, which the dump left out (copy_tmpfs):
                # the tasks are frozen, their content is final.
                save(job.meta.mounts, f"{self.ctx.proc_root}/{self.container.state.pid}/root",
                     job.criu_opts.images_dir)
            return post_dump(note)

        return {"pre-dump": frozen, "post-dump": dumped}

    def freeze(self) -> None:
        """Freeze the cgroup ourselves, polling without sleeping, so CRIU
        finds it FROZEN: CRIU writes FROZEN and then checks every 100 ms
        (seize.c), which costs a whole 100 ms on almost every dump. CRIU
        then records the cgroup as frozen, so the destination restores it
        frozen and thaws it when it resumes the container
        (``continue_container``); a failed dump is thawed by ``dump_job``.
        Not with --keep-source: CRIU would leave the source frozen."""
        cg = self.container.cgroups
        if self.opts.keep_source or cg is None:
            return
        try:
            cg.freeze()
        except (MigrateError, OSError):
            pass        # CRIU freezes it then, the slow way

    def final_iteration(self, images_dir: str, seconds: float) -> None:
        """Book the final dump in the report's iterations."""
        from migrate.checkpoint.dump import read_dump_stats
        from migrate.migration.report import Iteration

        stats = read_dump_stats(images_dir)
        # A lazy dump writes only what it must and leaves the rest to be pulled.
        pages = pages_moved(stats) - self.written_before
        if pages <= 0:
            # A lazy dump writes no pages itself (they are pulled later) and
            # may not report them: count what its pagemaps describe.
            pages = _pagemap_pages(images_dir)
        self.report.iterations.append(Iteration(index=len(self.report.iterations) + 1,
                                                pages_written=pages, bytes=pages * 4096,
                                                seconds=seconds, final=True))


@contextlib.contextmanager
def _cgroup_yard(ctx):
    """A cgroup yard for the migration's dumps, in the temporary directory
    (never inside the work directory, which is removed recursively). A
    thread mounts it (~20 ms of mounts) while the handshake's checks go on;
    yields a function that waits for its path (None: none could be made)."""
    import secrets

    from migrate._light import in_background
    from migrate.checkpoint.cgyard import YARD_NAME, make_yard, remove_yard

    made = in_background(lambda: make_yard(ctx, tempfile.gettempdir(),
                                           name=f"{YARD_NAME}-{secrets.token_hex(4)}"))
    try:
        yield made
    finally:
        path = None
        with contextlib.suppress(Exception):
            path = made()
        if path is not None:
            remove_yard(ctx, path)


def _criu_features(local: dict):
    """The handshake's CRIU features of this host as ``Features`` (None when
    CRIU could not say): ``dump_job`` need not ask CRIU again."""
    from migrate.criu_rpc import Features

    if "criu_error" in local or "lazy_pages" not in local:
        return None
    return Features(mem_track=bool(local.get("mem_track")),
                    lazy_pages=bool(local.get("lazy_pages")),
                    pidfd_store=bool(local.get("pidfd_store")))


def pages_moved(stats: dict) -> int:
    """Pages a dump moved (written, or left to be pulled lazily), from its stats."""
    return int(stats.get("pages_written", 0)) + int(stats.get("pages_lazy", 0))


def _pagemap_pages(images_dir: str) -> int:
    """The pages the pagemaps in ``images_dir`` describe, but those a
    pre-dump already sent (PE_PARENT, or ``in_parent`` in old images)."""
    import glob

    from migrate.criu_rpc.images import read_entries

    total = 0
    for path in glob.glob(os.path.join(images_dir, "pagemap-*.img")):
        with contextlib.suppress(MigrateError):
            total += sum(e.nr_pages if e.has("nr_pages") else e.compat_nr_pages
                         for e in read_entries(path, "PAGEMAP")[1:]
                         if not (e.in_parent or e.flags & _PE_PARENT))
    return total


_PE_PARENT = 1      # images/pagemap.proto's pmap.flags, criu/include/pagemap.h


def network_lock_for(features, empty_ns: frozenset[str], tcp_established: bool):
    """CRIU's network lock for the dump. SKIP for a netns CRIU recreates
    empty with no TCP connection to bring back: the lock would guard nothing
    and its rules cost the freeze (the restore's rule is the same:
    checkpoint.restore_plan.restore_network_lock). Else nftables when both
    CRIUs (``features``: each host's) can: the restore then unlocks in-process
    instead of running iptables-restore while frozen. Else CRIU's default."""
    from migrate.criu_rpc import NetworkLock

    if "net" in empty_ns and not tcp_established:
        return NetworkLock.SKIP
    return NetworkLock.NFTABLES if all(f.get("nftables_lock") for f in features) else None


# From this much memory on, a restore from images the destination holds
# takes their pages lazily (a local `criu lazy-pages` copies them in after
# the tasks resume; nothing crosses the link then). Starting that daemon
# costs ~100 ms here, what CRIU's restore takes to read ~100 MiB; reading
# 1 GiB while frozen took 1.7-4.6 s (first-touch memory is slow here, more
# so while the source's copy is still held for a rollback).
LAZY_LOCAL_MIN_BYTES = 128 << 20


def memory_usage(container) -> int:
    """The container's memory use (its cgroup's), to announce the image size."""
    try:
        stats = container.cgroups.stats() if container.cgroups is not None else {}
        return int((stats.get("memory") or {}).get("usage") or 0)
    except (MigrateError, OSError, ValueError, TypeError):
        return 0


def migrate_container(ctx, opts: MigrateOptions, *, progress=None, facts=None):
    """Move a running container to the agent at ``opts.host:opts.port``.

    Returns the MigrationReport. Raises MigrationError (the error says what
    became of the source container: resumed, or deleted after success),
    UsageError, NotFoundError, UnsupportedError before anything is frozen.
    """
    from migrate.migration.progress import SilentProgress
    from migrate.migration.report import Timeline
    from migrate.runtime.container import Container, Status
    from migrate.runtime.state import StateStore

    if opts.rootfs not in ("shared", "copy"):
        raise UsageError(f"--rootfs {opts.rootfs!r}: use shared or copy")
    progress = progress or SilentProgress()
    container = Container.load(StateStore(ctx.root), opts.container_id, ctx.proc_root)
    if container.status() is not Status.RUNNING:
        raise UsageError(f'container "{opts.container_id}" is {container.status()}: '
                         f"only a running container can migrate")
    if opts.rootfs == "copy":
        root = container.state.rootfs
        if os.path.relpath(root, container.state.bundle).startswith(".."):
            raise UsageError(f"--rootfs copy needs the rootfs inside the bundle "
                             f"({root} is not under {container.state.bundle})")
    timeline = Timeline()
    if opts.raise_pipe_max_size:
        from migrate.criu_rpc import raised_pipe_max_size

        # Before the handshake: the host facts it sends (and auto's choice)
        # must see the raised limit.
        with raised_pipe_max_size() as old:
            note = (f"fs.pipe-max-size raised from {old} for this migration and put back"
                    if old is not None else "")
            return _migrate(ctx, opts, container, timeline, progress, facts, note)
    return _migrate(ctx, opts, container, timeline, progress, facts, "")


def _migrate(ctx, opts: MigrateOptions, container, timeline, progress, facts, note: str):
    from migrate.migration.hostfacts import CriuHostFacts
    from migrate.migration.report import MigrationReport
    from migrate.migration.source import ConnectOptions, connect_and_negotiate

    report = MigrationReport(container_id=opts.container_id, destination=f"{opts.host}:{opts.port}",
                             source=os.uname().nodename)
    facts = facts or CriuHostFacts(ctx.criu)
    connect_opts = {"host": opts.host, "port": opts.port, "token": opts.token,
                    "tls": opts.tls, "compress": opts.compress}
    if opts.criu_policy is not None:
        connect_opts["criu_policy"] = opts.criu_policy
    migration = None
    try:
        with connect_and_negotiate(ConnectOptions(**connect_opts), facts=facts,
                                   progress=progress) as session:
            report.compression = session.compression
            choice = choose(opts.strategy, _features(session.local_features, source=True),
                            _features(session.peer_features, source=False),
                            memory=memory_usage(container))
            report.strategy, report.reason = choice.strategy.value, choice.reason
            if note:
                report.reason += f"; {note}"
            progress.phase("checks")
            migration = Migration(ctx, opts, container, session, choice.strategy, report,
                                  timeline, progress)
            migration.run()
        report.succeeded = True
    except BaseException as err:
        report.error = str(err)
        raise
    finally:
        timeline.end()
        report.downtime_s = timeline.downtime
        report.total_s = timeline.total
        report.frozen_steps = timeline.frozen_steps()
        if migration is not None:
            from migrate.migration.report import PhaseReport

            # Before the connection: local CRIU checks, connecting.
            report.phases.append(PhaseReport(name="start",
                                             seconds=migration.conn.created - timeline.started))
            # The connection is closed by now: its last phase is timed.
            report.add_phases(migration.conn.counters)
            report.add_bytes(migration.memory_bytes)
            shutil.rmtree(migration.workdir, ignore_errors=True)
        progress.done()
    return report
