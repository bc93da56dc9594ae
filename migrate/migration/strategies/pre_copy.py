"""Pre-copy: pre-dump rounds into the destination's page servers while the
container runs, each only what changed since the last (CRIU's memory
tracking: soft-dirty), until the policy says stop; then a short
stop-and-copy final dump on top of the last round.

``rounds`` is shared with hybrid, whose rounds are written here and
streamed instead (see ``local``).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

from migrate.migration.strategies.stop_and_copy import final_dump

if TYPE_CHECKING:
    from migrate.checkpoint.dump import DumpJob
    from migrate.criu_rpc import Session
    from migrate.migration.pipeline import Migration

__all__ = ["PIPELINE", "PreCopy", "rounds"]


class PreCopy:
    lazy = False

    def run(self, m: Migration, job: DumpJob) -> None:
        from migrate.criu_rpc import Client, SwrkOptions

        with Client(SwrkOptions(criu=m.ctx.criu)).session() as session:
            last = rounds(m, job, session, local=False)
            final_dump(m, job, parent=last, session=session)


PIPELINE = PreCopy


def rounds(m: Migration, job: DumpJob, session: Session, *, local: bool) -> str:
    """Pre-dump rounds in ``session`` until ``m.opts.precopy`` stops them;
    returns the last round's name (its directory under ``pre/``), which
    the final dump takes as its parent. Each round goes into a page server
    of the destination's, or with ``local`` into ``pre/N`` here and then
    as a tree to the destination's ``pre/N``."""
    from migrate.checkpoint.dump import read_dump_stats
    from migrate.criu_rpc.page_stream import new_stream_secret
    from migrate.migration.messages import PageServerStart, PageServerWait
    from migrate.migration.pipeline import pages_moved
    from migrate.migration.report import Iteration
    from migrate.migration.strategy import PreCopyController

    controller = PreCopyController(m.opts.precopy)
    # The one dump plan, as a pre-dump: never lazy, always tracking memory.
    base = job.criu_opts.replace(lazy_pages=False, status_fd=None, ps=None)
    round_ = 0
    while controller.should_continue():
        round_ += 1
        here = os.path.join(m.workdir, "pre", str(round_))
        os.makedirs(here)
        parent = f"../{round_ - 1}" if round_ > 1 else None
        opts = base.replace(images_dir=here, work_dir=here, track_mem=True,
                            parent_img=parent, log_file=f"pre-dump-{round_}.log")
        with m.conn.in_phase("pre-copy"):
            relay = contextlib.nullcontext()
            if not local:
                # The session's swrk connects by itself: to a local relay,
                # which opens the stream with the secret.
                secret = new_stream_secret()
                relay = m.local_page_relay(
                    m.control(PageServerStart(dir=f"pre/{round_}", parent=parent,
                                              secret=secret)), secret)
            started = time.monotonic()
            try:
                with relay as ps:
                    session.pre_dump(opts if ps is None else opts.replace(ps=ps))
            except BaseException:
                job.failed()
                raise
            if local:
                # Hybrid's lazy final dump marks a page as "in the parent"
                # only against parent pagemaps it can open here (CRIU opens
                # them locally, never through a page server); without them
                # every page would be lazy again and the rounds wasted. So
                # its rounds are written here and streamed.
                m.conn.send_tree(here, label=f"pre/{round_}")
            else:
                m.control(PageServerWait())
        written = pages_moved(read_dump_stats(here))
        pages, m.written_before = written - m.written_before, written
        controller.record(pages)
        m.report.iterations.append(Iteration(index=round_, pages_written=pages,
                                             bytes=pages * 4096,
                                             seconds=time.monotonic() - started))
        m.progress.iteration(round_, pages)
    # CRIU thaws the tree after each pre-dump; make sure the freezer agrees.
    job.succeeded(still_running=True)
    # The rule that ended the rounds, on the last round and in the reason.
    m.report.iterations[-1].stop_reason = controller.stop_reason
    m.report.reason += f"; pre-copy stopped: {controller.stop_reason}"
    return str(round_)
