"""Content pre-copy on the source: rounds while the container runs, then a
final dump of which only what the destination lacks crosses the link.

    source                                     destination (agent)
    round 1..n, container running:
      scan + hash every dumpable page (scan.py)
      CONTROL content_pages, STREAM pages  ->  page store (store.py)
                                           <-  REPLY {pages}
    CONTROL content_compact                ->  store files in vaddr order
    final round, frozen:
      CRIU dumps everything into a local images dir (tmpfs when it fits)
      post-dump held:
      CONTROL content_pages, STREAM pages  ->  (only pages whose hash the
                                               mirror does not have)
      STREAM tree images (no pages-*.img)  ->  workdir/images
      CONTROL content_build                ->  pages-<id>.img: the store file
                                               renamed when it holds exactly
                                               the dumped pages, else copied
      RESTORE, DONE as every strategy     <->
      post-dump answered: the source CRIU ends, the container is deleted

The source stays frozen and authoritative until the destination restored:
any failure before DONE answers post-dump with failure and CRIU resumes the
tree (``job.failed()``), as for stop-and-copy. A failure in a live round
never froze anything.

Why a local dump and not CRIU's page-server stream with deduplication in
the relay: the image files can be read with pycriu and the result restored
by an unmodified CRIU, so it was the first to be made correct; it costs one
local write of the memory (tmpfs: memcpy speed) while frozen.

``run(m, job)`` follows the frame's pipeline contract: ``m`` gives
``control``, ``step``, ``callbacks``, ``send_images``,
``restore_and_commit``, ``conn``, ``report``, ``progress``, ``container``,
``opts`` (``opts.precopy`` holds the stop rules), ``ctx``, ``workdir``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from migrate.migration.content.mirror import Mirror
from migrate.migration.content.rounds import RoundStats, image_round, live_round, shipped_files

__all__ = ["ContentPreCopy", "METHOD"]

METHOD = ("content rounds: pages hashed while the container runs, only changed pages "
          "shipped, the final dump deduplicated against what the destination holds")
TMPFS = "/dev/shm"
# Left free on the tmpfs beyond the memory the dump writes.
TMPFS_MARGIN = 256 << 20


def ship(m: Any, records, *, label: str) -> tuple[dict, Any]:
    """Send one page stream to the destination's store; (its reply, stream stats)."""
    from migrate.migration.protocol import Kind

    m.conn.send(Kind.CONTROL, {"op": "content_pages", "label": label})
    sent = m.conn.send_stream({"what": "pages", "label": label}, records)
    reply = m.conn.recv(Kind.REPLY, timeout=m.conn.timeouts.wait).header
    return reply, sent


def container_processes(m: Any) -> dict[int, int]:
    """{pid as CRIU names it: host pid} of every process of the container."""
    from migrate.migration.content.scan import processes_of

    pids: set[int] = set()
    cg = m.container.cgroups
    try:
        if cg is not None and cg.is_usable():
            pids.update(cg.pids())
    except OSError:
        pass
    pids.add(m.container.state.pid)
    return processes_of(sorted(pids), m.ctx.proc_root)


def local_images_dir(m: Any, memory: int) -> str:
    """Where CRIU writes the final dump: a tmpfs when it has room (the
    dump is read back at once and then deleted), else the work directory."""
    try:
        st = os.statvfs(TMPFS)
        if st.f_bavail * st.f_frsize > memory + TMPFS_MARGIN and not m.opts.work_dir:
            return tempfile.mkdtemp(prefix=f"migrate-{m.opts.container_id}-", dir=TMPFS)
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="final-", dir=m.workdir)


class ContentPreCopy:
    lazy = False

    def __init__(self) -> None:
        self.mirror = Mirror()

    def run(self, m: Any, job: Any) -> None:
        self.rounds(m)
        self.final(m, job)

    # -- rounds while it runs --------------------------------------------------------

    def rounds(self, m: Any) -> None:
        from migrate.migration.report import Iteration
        from migrate.migration.strategy import PreCopyController

        controller = PreCopyController(m.opts.precopy)
        index = 0
        while controller.should_continue():
            index += 1
            stats = RoundStats()
            started = time.monotonic()
            with m.conn.in_phase("pre-copy"):
                processes = container_processes(m)
                _reply, sent = ship(m, live_round(processes, self.mirror, stats,
                                                  proc_root=m.ctx.proc_root),
                                    label=f"round-{index}")
            pages = stats.pages_changed
            controller.record(pages)
            m.report.iterations.append(Iteration(index=index, pages_written=pages,
                                                 bytes=sent.wire,
                                                 seconds=time.monotonic() - started))
            m.progress.iteration(index, pages)
        m.report.iterations[-1].stop_reason = controller.stop_reason
        m.report.reason += f"; {METHOD}; pre-copy stopped: {controller.stop_reason}"
        with m.conn.in_phase("pre-copy"):
            # The destination lays its store out in CRIU's order now, so
            # that the frozen part renames files instead of copying memory.
            m.control("content_compact")

    # -- the final round, frozen -------------------------------------------------------

    def final(self, m: Any, job: Any) -> None:
        from migrate.criu_rpc import Client, SwrkOptions
        from migrate.migration.report import Iteration

        memory = _memory_usage(m.container)
        local = local_images_dir(m, memory)
        images = os.path.join(local, "images") if local.startswith(TMPFS) else local
        # The dump plan wrote its metadata (restore needs it) into the
        # planned images dir: the final dump's images go with it.
        shutil.copytree(job.images_dir, images, dirs_exist_ok=True)
        stats = RoundStats()
        shipped: dict[str, int] = {}

        def post_dump(_note) -> bool:
            m.step("memory (final)", memory or None)
            _reply, sent = ship(m, image_round(images, self.mirror, stats), label="final")
            shipped["wire"] = sent.wire
            for name in shipped_files(images):
                os.unlink(os.path.join(images, name))
            m.send_images(images)
            m.control("content_build", dir="images")
            m.restore_and_commit()
            return True

        m.step("memory (final)", memory or None)
        started = time.monotonic()
        criu_opts = job.criu_opts.replace(images_dir=images, ps=None, parent_img=None,
                                          track_mem=False, lazy_pages=False, status_fd=None)
        try:
            try:
                with Client(SwrkOptions(criu=m.ctx.criu)).session() as swrk:
                    swrk.dump(criu_opts, m.callbacks(post_dump))
            except BaseException:
                job.failed()
                raise
            job.succeeded(still_running=m.opts.keep_source)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        m.step("finish")
        m.report.iterations.append(Iteration(
            index=len(m.report.iterations) + 1, pages_written=stats.pages_changed,
            bytes=shipped.get("wire", 0), seconds=time.monotonic() - started, final=True))


def _memory_usage(container) -> int:
    try:
        stats = container.cgroups.stats() if container.cgroups is not None else {}
        return int((stats.get("memory") or {}).get("usage") or 0)
    except (Exception,):  # noqa: BLE001 - only an announcement for the progress bar
        return 0
