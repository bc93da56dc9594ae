"""Stop-and-copy: freeze, dump the memory straight into the destination's
page server (written once, over the network), send the other images,
restore. Also pre-copy's final step (``final_dump`` with a parent round).

The container is frozen from CRIU's pre-dump notification to the commit:
post-dump is held while the destination restores, and a failure answers it
with "resume".
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migrate.checkpoint.dump import DumpJob
    from migrate.criu_rpc import Session
    from migrate.migration.pipeline import Migration

__all__ = ["PIPELINE", "StopAndCopy", "final_dump"]


class StopAndCopy:
    lazy = False

    def run(self, m: Migration, job: DumpJob) -> None:
        final_dump(m, job)


PIPELINE = StopAndCopy


def final_dump(m: Migration, job: DumpJob, *, parent: str | None = None,
               session: Session | None = None) -> None:
    """The final dump into the destination's page server, then images,
    restore and commit. ``parent``: the last pre-dump round (``pre/N``);
    ``session``: the swrk session the rounds ran in (their memory tracking
    lives there)."""
    from migrate.criu_rpc import Client, PageServer, SwrkOptions
    from migrate.migration._relay import Relay
    from migrate.criu_rpc.page_stream import new_stream_secret
    from migrate.migration.messages import PageServerStart, PageServerWait
    from migrate.migration.pipeline import memory_usage

    m.prepare_restore()
    memory = memory_usage(m.container)
    # Every page is at the destination before its restore starts: from
    # LAZY_LOCAL_MIN_BYTES on, CRIU there restores without reading the
    # memory, and a local lazy-pages daemon copies it in after the resume.
    # Not on top of pre-dumps: that daemon reads no parent images.
    lazy_local = parent is None and m.lazy_local_ok(memory)
    # Freeze, dump, and the memory through the page server: one phase,
    # CRIU does them together.
    m.step("memory", memory or None)
    # Our own connection opens the stream with a secret the agent checks
    # before its CRIU gets it (criu_rpc/page_stream.py).
    secret = new_stream_secret()
    ps = m.control(PageServerStart(dir="images", parent=f"../pre/{parent}" if parent else None,
                                   secret=secret))
    images = job.images_dir
    relay = None

    def post_dump(_note) -> bool:
        m.control(PageServerWait())
        m.send_images(images)
        if lazy_local:
            m.report.reason += ("; restored with lazy pages from the images at the destination "
                                "(copied in after resuming, none over the link)")
        m.restore_and_commit(lazy_local=lazy_local)
        return True

    started = time.monotonic()
    local_relay = contextlib.nullcontext()
    if session is not None:
        # An existing swrk cannot inherit our socket: CRIU connects to a
        # local relay, which opens the stream (and counts it).
        local_relay = m.local_page_relay(ps, secret)
        ps_opt = None
        s = contextlib.nullcontext(session)
    else:
        # CRIU writes to its end of a socketpair; the relay moves
        # (and counts) the stream to the destination's page server.
        near, criu_end = socket.socketpair()
        relay = Relay(near, m.page_server_socket(ps, secret), m.count_memory,
                      name="page-server").start()
        os.set_inheritable(criu_end.fileno(), True)
        ps_opt = PageServer(fd=criu_end.fileno())
        s = Client(SwrkOptions(criu=m.ctx.criu)).session(pass_fds=(criu_end.fileno(),))
        # swrk holds its own copy now; ours would keep the stream open
        # after CRIU closes it.
        criu_end.close()
    criu_opts = job.criu_opts.replace(ps=ps_opt, parent_img=f"../pre/{parent}" if parent else None,
                                      track_mem=bool(parent))
    try:
        with local_relay as local_ps, s as swrk:
            swrk.dump(criu_opts if local_ps is None else criu_opts.replace(ps=local_ps),
                      m.callbacks(post_dump))
    except BaseException:
        job.failed()
        if relay is not None:
            relay.abort()
        raise
    finally:
        if relay is not None:
            relay.join(timeout=m.conn.timeouts.io)
    job.succeeded(still_running=m.opts.keep_source)
    m.step("finish")
    m.final_iteration(images, time.monotonic() - started)
