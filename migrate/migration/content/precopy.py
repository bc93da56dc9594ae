"""Content pre-copy on the source: rounds while the container runs, then a
final dump of which only what the destination lacks crosses the link.

    source                                     destination (agent)
    round 1..n, container running:
      scan + hash every dumpable page (scan.py)
      CONTROL content_pages, STREAM pages  ->  page store (store.py)
                                           <-  REPLY {pages}
    CONTROL content_compact                ->  store files in vaddr order
    one more round (what changed while the destination compacted)
    final round, frozen:
      CRIU dumps, its page-server stream going to migrate's own page
      server (pageserver.py) over a socketpair: every page is hashed as it
      arrives, only the changed ones kept; the pagemaps are written here
      post-dump held:
      CONTROL content_pages, STREAM pages  ->  (the changed pages)
      STREAM tree images (pagemaps, no     ->  workdir/images
        process pages)
      CONTROL content_build {lazy}         ->  the store's compacted files
                                               become the pages images (lazy
                                               pages), or the images' parent
      RESTORE {lazy_local}, DONE          <->  with lazy pages, a local
                                               `criu lazy-pages` copies the
                                               memory in after resuming
      post-dump answered: the source CRIU ends, the container is deleted

Rounds stop by what they cost, measured: after each, every 16th page the
destination holds is read again (rounds.sample_changed, a few ms for 64 MiB)
to estimate what the final round would ship now; at round 1's rate that is
what another round could take off the frozen part, and another round costs
at least round 1's scan (finding, reading and hashing all the memory, the
reply). Unless twice the first beats the second (rounds.another_round), the
final round comes at once; the report's stop_reason gives the numbers.
Small memory, quick round 1, few changes: one round. The policy's own rules
(--max-iterations and the others) still apply, and --min-iterations forces
rounds.

The source stays frozen and authoritative until the destination restored:
any failure before DONE answers post-dump with failure and CRIU resumes the
tree (``job.failed()``), as for stop-and-copy. A failure in a live round
never froze anything.

The memory is never written to a file on the source, and nothing the
destination already holds is copied there while frozen: the frozen time is
CRIU's dump (its pages streamed through a socket and hashed), the changed
pages and the other images over the link, and the restore, which with lazy
pages (userfaultfd at the destination) does not read the memory either:
a lazy-pages daemon there serves it from the store's files once the tasks
run. No page comes over the link after the resume, so unlike post-copy a
cut link then loses nothing.

``run(m, job)`` follows the frame's pipeline contract: ``m`` gives
``control``, ``step``, ``callbacks``, ``send_images``,
``restore_and_commit``, ``conn``, ``report``, ``progress``, ``container``,
``opts`` (``opts.precopy`` holds the stop rules), ``ctx``, ``workdir``.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from migrate.errors import MigrateError, MigrationError
from migrate.migration.content.mirror import Mirror
from migrate.migration.content.rounds import RoundStats, live_round

__all__ = ["ContentPreCopy", "METHOD"]

# zstd costs ~1 s of CPU per GiB here (both ends), for nothing when the
# memory does not compress: the first round compresses a sample of it
# (sample_ratio), and the pages go raw when it did not shrink below this.
COMPRESSION_WORTH = 0.9

METHOD = ("content rounds: pages hashed while the container runs, only changed pages "
          "shipped, the final dump deduplicated against what the destination holds")


def ship(m: Any, records, *, label: str, compress: bool | None = None):
    """Send one page stream to the destination's store; returns
    (``PagesStored``, the stream's byte counts, when the stream was sent on
    the monotonic clock). Not ``m.control``: the stream goes between the
    request and its reply. ``compress``: as ``Connection.send_stream``'s
    (None: as negotiated)."""
    from migrate.migration.content.messages import ContentPages
    from migrate.migration.protocol import Kind

    request = ContentPages(label=label)
    m.conn.send(Kind.CONTROL, request.to_header())
    sent = m.conn.send_stream({"what": "pages", "label": label}, records, compress=compress)
    done = time.monotonic()
    header = m.conn.recv(Kind.REPLY, timeout=m.conn.timeouts.wait).header
    return request.Reply.from_header(header, phase=m.conn.current_phase), sent, done


def sample_ratio(processes: dict[int, int], *, proc_root: str = "/proc",
                 pieces: int = 8, piece: int = 128 << 10) -> float:
    """zstd's ratio on ``pieces`` pieces of the memory of ``processes``,
    spread evenly over the bytes present (so the big mappings, which make
    up the stream, weigh as they will in it); 1.0 if nothing was read."""
    import zstandard

    from migrate.migration.content.scan import ProcessMemory
    from migrate.migration.transport import ZSTD_LEVEL

    ranges = []
    for host_pid in processes.values():
        try:
            memory = ProcessMemory(host_pid, proc_root=proc_root, chunk=piece)
            ranges += [(memory, start, end) for start, end in memory.ranges()]
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    total = sum(end - start for _, start, end in ranges)
    if not total:
        return 1.0
    wanted = [total * (2 * i + 1) // (2 * pieces) for i in range(pieces)]
    taken, at = [], 0
    for memory, start, end in ranges:
        while wanted and wanted[0] < at + (end - start):
            offset = wanted.pop(0) - at
            addr = start + offset - offset % 4096
            try:
                for _vaddr, view in memory.read(addr, min(end, addr + piece)):
                    taken.append(bytes(view))
                    break
            except (ProcessLookupError, PermissionError):
                pass
        at += end - start
    data = b"".join(taken)
    if not data:
        return 1.0
    return len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)) / len(data)


def container_processes(m: Any) -> dict[int, int]:
    """{pid as CRIU names it: host pid} of every process of the container."""
    from migrate.migration.content.scan import processes_of

    pids: set[int] = set()
    cg = m.container.cgroups
    try:
        if cg is not None and cg.is_usable():
            pids.update(cg.pids())
    except (OSError, MigrateError):
        pass        # the init and what CRIU finds below it: the final dump decides
    pids.add(m.container.state.pid)
    return processes_of(sorted(pids), m.ctx.proc_root)


class ContentPreCopy:
    lazy = False

    def __init__(self) -> None:
        self.mirror = Mirror()
        self.compress: bool | None = None   # None: not decided yet (first round)
        self.cost = None                     # RoundCost, from round 1

    def run(self, m: Any, job: Any) -> None:
        self.rounds(m)
        self.final(m, job)

    # -- rounds while it runs --------------------------------------------------------

    def rounds(self, m: Any) -> None:
        from migrate.migration.content.messages import ContentCompact
        from migrate.migration.content.rounds import another_round, sample_changed
        from migrate.migration.strategy import PreCopyController

        policy = m.opts.precopy
        controller = PreCopyController(policy)
        while controller.should_continue():
            stats = self.round(m)
            controller.record(stats.pages_changed)
            if len(controller.rounds) < policy.min_iterations or \
                    len(controller.rounds) >= policy.max_iterations:
                continue
            # Measured, not assumed: what differs now (a sample), against
            # what round 1 showed a round costs.
            with m.conn.in_phase("pre-copy"):
                sample = sample_changed(container_processes(m), self.mirror,
                                        proc_root=m.ctx.proc_root)
            m.report.iterations[-1].steps["sample changed"] = round(sample.seconds, 4)
            go_on, why = another_round(self.cost, sample.pages(len(self.mirror)) * 4096)
            if not go_on:
                controller.stop_reason = why
                break
        m.report.iterations[-1].stop_reason = controller.stop_reason
        m.report.reason += f"; {METHOD}; pre-copy stopped: {controller.stop_reason}"
        with m.conn.in_phase("pre-copy"):
            # The destination lays its store out in CRIU's order now, so
            # that the frozen part needs no copy of the memory there.
            compacted = m.control(ContentCompact())
        if compacted.pages:
            # Compacting copied the store (about a second per GiB here):
            # what changed meanwhile goes now, not while frozen. Pages this
            # round adds come after the compacted ones; the final build
            # copies them (few). A store that arrived in order (the usual
            # case) was not copied: nothing to catch up with.
            self.round(m)

    def round(self, m: Any) -> RoundStats:
        """One live round: scan, ship what changed. Its steps' seconds go
        to the report's iteration; round 1 also sets ``self.cost``."""
        from migrate.migration.content.rounds import RoundCost
        from migrate.migration.report import Iteration

        index = len(m.report.iterations) + 1
        stats = RoundStats()
        clock = time.monotonic
        started = clock()
        steps: dict[str, float] = {}
        with m.conn.in_phase("pre-copy"):
            processes = container_processes(m)
            steps["processes"] = clock() - started
            if self.compress is None:
                at = clock()
                self.compress = False
                if m.conn.compression == "zstd":
                    ratio = sample_ratio(processes, proc_root=m.ctx.proc_root)
                    self.compress = ratio < COMPRESSION_WORTH
                    if not self.compress:
                        m.report.reason += (f"; pages sent without compression (zstd left a "
                                            f"sample at {ratio:.0%})")
                steps["compression sample"] = clock() - at
            records = live_round(processes, self.mirror, stats, proc_root=m.ctx.proc_root)
            at = clock()
            _reply, sent, replied = ship(m, records, label=f"round-{index}",
                                         compress=self.compress)
        seconds = clock() - started
        scan = stats.seconds_ranges + stats.seconds_scanning + stats.seconds_hashing
        steps.update({"ranges": stats.seconds_ranges, "read": stats.seconds_scanning,
                      "hash+records": stats.seconds_hashing,
                      "send": replied - at - scan, "reply": clock() - replied})
        if self.cost is None:
            # What a round costs whatever it ships: finding, reading and
            # hashing the memory, the destination's answer.
            fixed = steps["processes"] + scan + steps["reply"]
            self.cost = RoundCost(shipped=max(stats.pages_scanned, 1) * 4096,
                                  seconds=seconds - steps.get("compression sample", 0.0),
                                  fixed=fixed)
        pages = stats.pages_changed
        m.report.iterations.append(Iteration(index=index, pages_written=pages, bytes=sent.wire,
                                             seconds=seconds,
                                             steps={k: round(v, 4) for k, v in steps.items()}))
        m.progress.iteration(index, pages)
        return stats

    # -- the final round, frozen -------------------------------------------------------

    def final(self, m: Any, job: Any) -> None:
        """Freeze; CRIU streams every page into our page server, which
        keeps the changed ones; with post-dump held, ship them and the
        images, have the destination build its pages images, restore."""
        from migrate.criu_rpc import Client, PageServer, SwrkOptions
        from migrate.migration.content.messages import ContentBuild
        from migrate.migration.content.pageserver import DedupPageServer
        from migrate.migration.report import Iteration

        from migrate.migration.pipeline import memory_usage

        memory = memory_usage(m.container)
        images = job.images_dir
        # The destination restores the pages its store holds lazily, from
        # the store's own files (userfaultfd there; see store.py), when it
        # can: CRIU's restore then does not read the memory while frozen.
        lazy_ok = m.lazy_local_ok(memory)     # pipeline.LAZY_LOCAL_MIN_BYTES
        stats = RoundStats()
        shipped: dict[str, int] = {}
        near, criu_end = socket.socketpair()
        server = DedupPageServer(near, images, self.mirror, stats).start()

        def post_dump(_note) -> bool:
            # CRIU ended the page-server session before post-dump: every
            # page has been hashed by now.
            if not server.join(timeout=m.conn.timeouts.io) or not server.closed:
                raise server.error or RuntimeError("the page server did not finish")
            m.step("memory (final)", None)
            _reply, sent, _ = ship(m, iter(server.records), label="final", compress=self.compress)
            shipped["wire"] = sent.wire
            server.records.clear()
            m.send_images(images)
            # where send_images put them
            built = m.control(ContentBuild(dir="images", lazy=lazy_ok))
            if built.lazy:
                m.report.reason += (f"; restored with lazy pages from the destination's page "
                                    f"store ({built.lazy} pages copied in after resuming, none "
                                    f"over the link; {built.in_parent + built.copied} restored "
                                    f"at once)")
            if built.in_memory:
                m.report.reason += "; the page store was in memory (a tmpfs) at the destination"
            m.restore_and_commit(lazy_local=built.lazy > 0)
            return True

        m.step("dump", memory or None)
        started = time.monotonic()
        criu_opts = job.criu_opts.replace(ps=PageServer(fd=criu_end.fileno()), parent_img=None,
                                          track_mem=False, lazy_pages=False, status_fd=None)
        os.set_inheritable(criu_end.fileno(), True)
        try:
            session = Client(SwrkOptions(criu=m.ctx.criu)).session(pass_fds=(criu_end.fileno(),))
        finally:
            # swrk holds its own copy now; ours would keep the stream open.
            criu_end.close()
        try:
            with session as swrk:
                swrk.dump(criu_opts, m.callbacks(post_dump))
        except BaseException as err:
            job.failed()
            server.abort()
            if server.error is not None and not isinstance(err, MigrateError):
                raise MigrationError("memory", f"the final dump's page stream failed: "
                                     f"{server.error}", source_state="frozen") from err
            raise
        finally:
            server.join(timeout=5)
        job.succeeded(still_running=m.opts.keep_source)
        m.step("finish")
        m.report.iterations.append(Iteration(
            index=len(m.report.iterations) + 1, pages_written=stats.pages_changed,
            bytes=shipped.get("wire", 0), seconds=time.monotonic() - started, final=True))
