"""The source's pipelines: stop-and-copy, pre-copy, post-copy and hybrid.

Every pipeline runs the same frame (``migrate_container``): negotiate,
choose the strategy, let the agent check everything, stream the rootfs
(``--rootfs copy``), then move memory, and roll back on any failure before
the destination confirms. Until then the source container is frozen, not
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
import select
import shutil
import socket
import tempfile
import threading
import time

from migrate._record import field, record
from migrate.errors import MigrateError, MigrationError, UsageError
from migrate.migration.strategy import HostFeatures, PreCopyController, PreCopyPolicy, choose

__all__ = ["MigrateOptions", "migrate_container"]


@record
class MigrateOptions:
    container_id: str
    host: str
    port: int
    token: bytes
    strategy: str = "auto"
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


class _Run:
    """One migration on the source: the pieces every pipeline shares."""

    def __init__(self, ctx, opts: MigrateOptions, container, session, report, timeline, progress):
        self.ctx, self.opts, self.session = ctx, opts, session
        self.conn = session.conn
        self.report, self.timeline, self.progress = report, timeline, progress
        self.container = container
        self.bundle = container.state.bundle
        self.rb = None
        self.snapshot = None
        # CRIU's dump statistics add up over the requests of one swrk
        # session: pre-copy's rounds and its final dump share one, so each
        # round's pages are the difference from what was written before.
        self.written_before = 0
        self.workdir = tempfile.mkdtemp(prefix=f"migrate-{opts.container_id}-",
                                        dir=opts.work_dir or None)
        # Page-server bytes by phase: CRIU's memory stream runs through a
        # Relay of ours (see _relay.py), not through the control connection.
        self.memory_bytes: dict[str, int] = {}
        self._lock = threading.Lock()
        # {"net"} when the container's netns holds only lo: CRIU then
        # neither dumps nor restores it while the container is frozen.
        self.empty_ns: frozenset[str] = frozenset()
        # nftables when both CRIUs can: the restore then unlocks the network
        # in-process instead of running iptables-restore while frozen.
        both = (session.local_features, session.peer_features)
        from migrate.criu_rpc import NetworkLock

        self.network_lock = (NetworkLock.NFTABLES if all(f.get("nftables_lock") for f in both)
                             else None)

    def count_memory(self, direction: str, n: int) -> None:
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

    # -- talking to the agent ----------------------------------------------------

    def control(self, op: str, **body) -> dict:
        from migrate.migration.protocol import Kind

        self.conn.send(Kind.CONTROL, {"op": op, **body})
        return self.conn.recv(Kind.REPLY, timeout=self.conn.timeouts.wait).header

    def request(self, lazy: dict | None = None) -> dict:
        return {"container_id": self.opts.container_id,
                "bundle": None if self.opts.rootfs == "copy" else self.bundle,
                "lazy": lazy, "tcp_established": self.opts.tcp_established,
                "file_locks": self.opts.file_locks, "ext_unix_sk": self.opts.ext_unix_sk,
                "leave_stopped": True,
                "empty_ns": ["network"] if "net" in self.empty_ns else []}

    def send_images(self, images_dir: str) -> None:
        self.step("images", _dir_size(images_dir))
        self.conn.send_tree(images_dir, label="images")
        if self.opts.rootfs == "copy":
            # What the container wrote since the first pass; it is frozen now.
            self.step("rootfs-diff")
            self.conn.send_tree(self.bundle, only_changed_since=self.snapshot, label="bundle")
        self.timeline.mark("images sent")

    def restore_and_commit(self, lazy: dict | None = None) -> None:
        """Ask the destination to restore, then to run it; commit."""
        from migrate.migration.protocol import Kind

        self.step("restore")
        self.conn.send(Kind.RESTORE, {"request": self.request(lazy)})
        self.conn.recv(Kind.RESTORED, timeout=self.conn.timeouts.wait)
        self.timeline.mark("restored")
        self.step("resume")
        self.conn.send(Kind.DONE, {})
        self.conn.recv(Kind.DONE, timeout=self.conn.timeouts.wait)
        self.timeline.mark_resumed()
        self.rb.commit()

    def checkpoint_options(self, **kw):
        from migrate.checkpoint.options import CheckpointOptions

        return CheckpointOptions(
            id=self.opts.container_id, image_path=os.path.join(self.workdir, "images"),
            leave_running=self.opts.keep_source, tcp_established=self.opts.tcp_established,
            file_locks=self.opts.file_locks, ext_unix_sk=self.opts.ext_unix_sk,
            empty_ns=self.empty_ns, network_lock=self.network_lock, **kw)

    def page_server_socket(self, ps: dict) -> socket.socket:
        """Connect to the destination's page server ourselves and hand CRIU
        the socket: with keepalive and a user timeout a cut link fails
        CRIU's writes within seconds (CRIU then resumes the tree), where
        CRIU's own connection would retry for many minutes."""
        from migrate.migration._sockets import configure_socket

        try:
            sock = socket.create_connection((ps["address"], ps["port"]),
                                            timeout=self.conn.timeouts.connect)
        except OSError as err:
            raise MigrationError("memory", f"cannot reach the destination's page server "
                                 f"{ps['address']}:{ps['port']}: {err.strerror or err}",
                                 source_state="running") from err
        sock.settimeout(None)
        configure_socket(sock, self.conn.timeouts)
        os.set_inheritable(sock.fileno(), True)
        return sock

    def callbacks(self, post_dump) -> dict:
        def frozen(_note) -> bool:
            # CRIU runs pre-dump right before freezing the tree.
            self.timeline.mark_frozen()
            self.conn.source_state = "frozen"
            self.freeze()
            return True

        def dumped(note) -> bool:
            self.timeline.mark("dumped")
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

    def final_iteration(self, images_dir: str, index: int, seconds: float) -> None:
        from migrate.checkpoint.dump import read_dump_stats
        from migrate.migration.report import Iteration

        stats = read_dump_stats(images_dir)
        # A lazy dump writes only what it must and leaves the rest to be pulled.
        pages = _pages_moved(stats) - self.written_before
        if pages <= 0:
            # A lazy dump writes no pages itself (they are pulled later) and
            # may not report them: count what its pagemaps describe.
            pages = _pagemap_pages(images_dir)
        self.report.iterations.append(Iteration(index=index, pages_written=pages,
                                                bytes=pages * 4096, seconds=seconds, final=True))

    # -- strategies ------------------------------------------------------------------

    def stop_and_copy(self, parent: str | None = None, session=None) -> None:
        """Dump straight into the destination's page server (memory is
        written once, over the network), send the other images, restore."""
        from migrate.checkpoint.dump import dump_job
        from migrate.criu_rpc import Client, PageServer, SwrkOptions
        from migrate.migration._relay import Relay

        # Freeze, dump, and the memory through the page server: one phase,
        # CRIU does them together.
        self.step("memory", _memory_usage(self.container) or None)
        ps = self.control("page_server", dir="images",
                          parent=f"../pre/{parent}" if parent else None)
        images = os.path.join(self.workdir, "images")
        relay = None

        def post_dump(_note) -> bool:
            self.control("page_server_wait")
            self.send_images(images)
            self.restore_and_commit()
            return True

        started = time.monotonic()
        with dump_job(self.ctx, self.checkpoint_options()) as job:
            if session is not None:
                # An existing swrk cannot inherit our socket: CRIU connects
                # (and its bytes go uncounted).
                ps_opt = PageServer(address=ps["address"], port=ps["port"])
                s = contextlib.nullcontext(session)
            else:
                # CRIU writes to its end of a socketpair; the relay moves
                # (and counts) the stream to the destination's page server.
                near, criu_end = socket.socketpair()
                relay = Relay(near, self.page_server_socket(ps), self.count_memory,
                              name="page-server").start()
                os.set_inheritable(criu_end.fileno(), True)
                ps_opt = PageServer(fd=criu_end.fileno())
                s = Client(SwrkOptions(criu=self.ctx.criu)).session(pass_fds=(criu_end.fileno(),))
                # swrk holds its own copy now; ours would keep the stream open
                # after CRIU closes it.
                criu_end.close()
            criu_opts = job.criu_opts.replace(
                ps=ps_opt, parent_img=f"../pre/{parent}" if parent else None,
                track_mem=bool(parent))
            try:
                with s as swrk:
                    swrk.dump(criu_opts, self.callbacks(post_dump))
            except BaseException:
                job.failed()
                if relay is not None:
                    relay.abort()
                raise
            finally:
                if relay is not None:
                    relay.join(timeout=self.conn.timeouts.io)
            job.succeeded(still_running=self.opts.keep_source)
        self.step("finish")
        self.final_iteration(images, len(self.report.iterations) + 1, time.monotonic() - started)

    def post_copy(self, parent: str | None = None, session=None) -> None:
        """Lazy final dump: the destination runs the container at once and
        pulls its memory from the source's page server."""
        from migrate.checkpoint.dump import dump_job
        from migrate.criu_rpc import Client, SwrkOptions

        address = self.conn.local_address
        # CRIU's lazy page server listens on ``port``; the destination's
        # lazy-pages daemon connects to our relay's listener instead, so the
        # pages it pulls are counted (see _relay.py).
        port = _free_port(address)
        listener = socket.create_server((address, 0), family=socket.AF_INET6 if ":" in address
                                        else socket.AF_INET)
        relay_port = listener.getsockname()[1]
        relays: list = []
        memory = _memory_usage(self.container)
        images = os.path.join(self.workdir, "images")
        ready_r, ready_w = os.pipe()
        failure: list[BaseException] = []
        swrk = {}

        def post_dump(_note) -> bool:
            self.send_images(images)
            return True

        def relay_pages() -> None:
            from migrate.migration._relay import Relay
            from migrate.migration._sockets import configure_socket

            try:
                listener.settimeout(self.conn.timeouts.wait)
                far, _ = listener.accept()
                configure_socket(far, self.conn.timeouts)
                near = socket.create_connection((address, port), timeout=self.conn.timeouts.connect)
            except OSError:
                return      # no connection: the restore fails and says why
            relays.append(Relay(near, far, self.count_memory, name="lazy-pages").start())

        def finish() -> None:
            # CRIU writes \0 to status_fd once its lazy page server listens.
            try:
                if not select.select([ready_r], [], [], self.conn.timeouts.wait)[0] or \
                        os.read(ready_r, 1) != b"\0":
                    raise MigrationError("memory", "the lazy page server never got ready",
                                         source_state="frozen")
                self.restore_and_commit(lazy={"address": address, "port": relay_port})
                # The container runs at the destination; what is left is
                # its memory, pulled through the relay until the last page.
                self.step("memory (lazy)", memory or None)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                failure.append(err)
                # Stop CRIU's page server: the dump then fails and the frozen
                # source is resumed by the rollback.
                if swrk.get("pid"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(swrk["pid"], 9)

        started = time.monotonic()
        opts = self.checkpoint_options(lazy_pages=True, page_server=f"{address}:{port}",
                                       status_fd=ready_w)
        waiter = threading.Thread(target=finish, name="post-copy-restore", daemon=True)
        acceptor = threading.Thread(target=relay_pages, name="post-copy-accept", daemon=True)
        self.step("dump")
        try:
            with dump_job(self.ctx, opts) as job:
                criu_opts = job.criu_opts
                if parent:
                    criu_opts = criu_opts.replace(parent_img=f"../pre/{parent}", track_mem=True)
                s = session or Client(SwrkOptions(criu=self.ctx.criu)).session(pass_fds=(ready_w,))
                swrk["pid"] = s.pid
                acceptor.start()
                waiter.start()
                try:
                    with s if session is None else contextlib.nullcontext():
                        s.dump(criu_opts, self.callbacks(post_dump))
                except BaseException as err:
                    job.failed()
                    for r in relays:
                        r.abort()
                    from migrate.checkpoint.netns import unlock_network

                    unlock_network(self.container.state.pid)
                    if failure:
                        raise failure[0] from err
                    raise
                if failure:                     # CRIU finished, our side did not
                    job.failed()
                    raise failure[0]
                job.succeeded(still_running=self.opts.keep_source)
        finally:
            if waiter.ident is not None:
                waiter.join(timeout=5)
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)     # wakes a blocked accept()
            listener.close()
            if acceptor.ident is not None:
                acceptor.join(timeout=5)
            for r in relays:
                r.join(timeout=5)
            os.close(ready_r)
            os.close(ready_w)
        self.step("finish")
        self.final_iteration(images, len(self.report.iterations) + 1, time.monotonic() - started)

    def pre_copy(self, lazy_tail: bool) -> None:
        """Pre-dump rounds into the destination's page servers while the
        container runs, each only what changed since the last; stop by the
        policy; then the final dump (or a lazy one: hybrid)."""
        from migrate.checkpoint.dump import dump_job, read_dump_stats
        from migrate.criu_rpc import Client, PageServer, SwrkOptions
        from migrate.migration.report import Iteration

        controller = PreCopyController(self.opts.precopy)
        client = Client(SwrkOptions(criu=self.ctx.criu))
        with client.session() as session:
            with dump_job(self.ctx, self.checkpoint_options(pre_dump=True)) as job:
                base = job.criu_opts
                round_ = 0
                while controller.should_continue():
                    round_ += 1
                    local = os.path.join(self.workdir, "pre", str(round_))
                    os.makedirs(local)
                    parent = f"../{round_ - 1}" if round_ > 1 else None
                    opts = base.replace(images_dir=local, work_dir=local, track_mem=True,
                                        parent_img=parent, log_file=f"pre-dump-{round_}.log")
                    with self.conn.in_phase("pre-copy"):
                        if not lazy_tail:
                            ps = self.control("page_server", dir=f"pre/{round_}", parent=parent)
                            opts = opts.replace(ps=PageServer(address=ps["address"],
                                                              port=ps["port"]))
                        started = time.monotonic()
                        try:
                            session.pre_dump(opts)
                        except BaseException:
                            job.failed()
                            raise
                        if lazy_tail:
                            # Hybrid's lazy final dump marks a page as "in the
                            # parent" only against parent pagemaps it can open
                            # here (CRIU opens them locally, never through a
                            # page server); without them every page would be
                            # lazy again and the rounds wasted. So its rounds
                            # are written here and streamed.
                            self.conn.send_tree(local, label=f"pre/{round_}")
                        else:
                            self.control("page_server_wait")
                    written = _pages_moved(read_dump_stats(local))
                    pages, self.written_before = written - self.written_before, written
                    controller.record(pages)
                    self.report.iterations.append(Iteration(
                        index=round_, pages_written=pages, bytes=pages * 4096,
                        seconds=time.monotonic() - started))
                    self.progress.iteration(round_, pages)
                job.succeeded(still_running=True)
            # The rule that ended the rounds, on the last round and in the reason.
            self.report.iterations[-1].stop_reason = controller.stop_reason
            self.report.reason += f"; pre-copy stopped: {controller.stop_reason}"
            if lazy_tail:
                self.post_copy(parent=str(round_), session=session)
            else:
                self.stop_and_copy(parent=str(round_), session=session)


def _pages_moved(stats: dict) -> int:
    return int(stats.get("pages_written", 0)) + int(stats.get("pages_lazy", 0))


def _pagemap_pages(images_dir: str) -> int:
    import glob

    from migrate.checkpoint.inspect import load_image

    def in_parent(entry: dict) -> bool:
        # An entry a pre-dump already sent (PE_PARENT, "in_parent" in old images).
        flags = entry.get("flags", 0)
        return bool(entry.get("in_parent")) or (
            "PARENT" in flags if isinstance(flags, str) else bool(int(flags) & 1))

    total = 0
    for path in glob.glob(os.path.join(images_dir, "pagemap-*.img")):
        with contextlib.suppress(Exception):
            total += sum(e.get("nr_pages", 0) for e in load_image(path)[1:] if not in_parent(e))
    return total


def _memory_usage(container) -> int:
    """The container's memory use (its cgroup's), to announce the image size."""
    try:
        stats = container.cgroups.stats() if container.cgroups is not None else {}
        return int((stats.get("memory") or {}).get("usage") or 0)
    except (MigrateError, OSError, ValueError, TypeError):
        return 0


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


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
    from migrate.migration.messages import PrepareRequest
    from migrate.migration.report import MigrationReport
    from migrate.migration.source import (ConnectOptions, connect_and_negotiate, rollback,
                                          shared_marker)

    report = MigrationReport(container_id=opts.container_id, destination=f"{opts.host}:{opts.port}",
                             source=os.uname().nodename)
    facts = facts or CriuHostFacts(ctx.criu)
    connect_opts = {"host": opts.host, "port": opts.port, "token": opts.token,
                    "tls": opts.tls, "compress": opts.compress}
    if opts.criu_policy is not None:
        connect_opts["criu_policy"] = opts.criu_policy
    run = None
    try:
        with connect_and_negotiate(ConnectOptions(**connect_opts), facts=facts,
                                   progress=progress) as session:
            report.compression = session.compression
            choice = choose(opts.strategy, _features(session.local_features, source=True),
                            _features(session.peer_features, source=False))
            report.strategy, report.reason = choice.strategy, choice.reason
            if note:
                report.reason += f"; {note}"
            progress.phase("checks")
            run = _Run(ctx, opts, container, session, report, timeline, progress)
            mem = _memory_usage(container)
            rootfs_size = _dir_size(run.bundle) if opts.rootfs == "copy" else 0
            markers = shared_marker(run.bundle) if opts.rootfs == "shared" else contextlib.nullcontext()
            with markers as marker:
                session.prepare(PrepareRequest(
                    container_id=opts.container_id, strategy=choice.strategy, rootfs=opts.rootfs,
                    images_size=mem + (16 << 20), rootfs_size=rootfs_size, cpuinfo=True,
                    shared_markers=(marker,) if marker else ()))
            if opts.rootfs == "copy":
                run.step("rootfs", rootfs_size)
                run.snapshot, _, _ = session.conn.send_tree(run.bundle, label="bundle")

            from migrate.checkpoint.netns import why_netns_not_plain

            # Before the freeze: is the network namespace worth dumping?
            why = why_netns_not_plain(container.state.pid, container.state.config or {},
                                      proc_root=ctx.proc_root)
            if why is None:
                run.empty_ns = frozenset({"net"})   # CRIU's name
                report.reason += ("; the network namespace holds only lo: recreated at the "
                                  "destination instead of dumped and restored")

            def resume(err) -> str:
                # dump_job already asked CRIU and the freezer to resume it.
                return "resumed" if container.is_alive() else "lost"

            with rollback(resume, session=session) as rb:
                run.rb = rb
                if choice.strategy == "stop-and-copy":
                    run.stop_and_copy()
                elif choice.strategy == "post-copy":
                    run.post_copy()
                elif choice.strategy == "pre-copy":
                    run.pre_copy(lazy_tail=False)
                else:
                    run.pre_copy(lazy_tail=True)
        report.succeeded = True
    except BaseException as err:
        report.error = str(err)
        raise
    finally:
        timeline.end()
        report.downtime_s = timeline.downtime
        report.total_s = timeline.total
        report.frozen_steps = timeline.frozen_steps()
        if run is not None:
            from migrate.migration.report import PhaseReport

            # Before the connection: local CRIU checks, connecting.
            report.phases.append(PhaseReport(name="start", seconds=run.conn.created - timeline.started))
            # The connection is closed by now: its last phase is timed.
            report.add_phases(run.conn.counters)
            report.add_bytes(run.memory_bytes)
            shutil.rmtree(run.workdir, ignore_errors=True)
        progress.done()
    return report
