"""Post-copy: a lazy final dump. The destination restores and runs the
container at once and pulls its memory from the source's lazy page
server; the downtime does not grow with memory. Also hybrid's final step
(``lazy_dump`` with a parent round).

CRIU sends post-dump before it serves lazy pages, so post-dump cannot be
held for rollback: the images go in post-dump, and the restore runs from
another thread once CRIU's page server says it is ready (``status_fd``).
Rollback works until the destination resumes the container.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from typing import TYPE_CHECKING

from migrate.errors import MigrationError

if TYPE_CHECKING:
    from migrate.checkpoint.dump import DumpJob
    from migrate.criu_rpc import Session
    from migrate.migration.pipeline import Migration

__all__ = ["PIPELINE", "PostCopy", "lazy_dump"]


class PostCopy:
    lazy = True

    def run(self, m: Migration, job: DumpJob) -> None:
        lazy_dump(m, job)


PIPELINE = PostCopy


def lazy_dump(m: Migration, job: DumpJob, *, parent: str | None = None,
              session: Session | None = None) -> None:
    """The lazy final dump, the restore and commit, then the memory pulled
    through a relay until the last page. ``parent``/``session``: the last
    pre-dump round and the swrk session of the rounds (hybrid)."""
    from migrate.criu_rpc import Client, PageServer, SwrkOptions
    from migrate.criu_rpc.page_stream import listen_on, loopback_for, new_stream_secret
    from migrate.migration.messages import LazySource
    from migrate.migration.pipeline import memory_usage

    address = m.conn.local_address
    # The destination's lazy-pages daemon connects to our relay, so the
    # pages it pulls are counted (see _relay.py), and only with the stream
    # secret (criu_rpc/page_stream.py). CRIU's lazy page server takes the
    # first peer that connects and cannot be handed a socket (ps.fd is
    # refused for lazy dumps): it listens on loopback, for the relay only.
    loopback = loopback_for(address)
    port = _free_port(loopback)
    listener = listen_on(address)
    relay_port = listener.getsockname()[1]
    secret = new_stream_secret()
    relays: list = []
    memory = memory_usage(m.container)
    images = job.images_dir
    ready_r, ready_w = os.pipe()
    failure: list[BaseException] = []
    swrk = {}

    ready_lock = threading.Lock()
    ready: list[bool] = []

    def page_server_ready() -> bool:
        # CRIU writes \0 to status_fd once its lazy page server listens.
        with ready_lock:
            if not ready:
                ready.append(bool(select.select([ready_r], [], [], m.conn.timeouts.wait)[0])
                             and os.read(ready_r, 1) == b"\0")
            return ready[0]

    def check_ready() -> None:
        if not page_server_ready():
            raise MigrationError("memory", "the lazy page server never got ready",
                                 source_state="frozen")

    def post_dump(_note) -> bool:
        m.send_images(images)
        # RESTORE goes now, while CRIU starts its page server; the
        # container resumes there only once that page server is ready.
        # Sent from here, not from the thread that waits for the answer:
        # a thread's start costs 1-4 ms of downtime on a busy machine.
        m.send_restore(lazy=lazy)
        waiter.start()
        return True

    def relay_pages() -> None:
        from migrate.migration._relay import LazyPagesRelay
        from migrate.migration._sockets import configure_socket

        from migrate.criu_rpc.page_stream import accept_with_secret

        try:
            # Only the destination's lazy-pages daemon, whose socket the
            # agent opened with the secret (criu_rpc/page_stream.py).
            far = accept_with_secret(listener, secret, timeout=m.conn.timeouts.wait)
            configure_socket(far, m.conn.timeouts)
            if not page_server_ready():
                far.close()
                return
            near = socket.create_connection((loopback, port), timeout=m.conn.timeouts.connect)
        except OSError:
            return      # no connection: the restore fails and says why
        relays.append(LazyPagesRelay(near, far, m.count_memory).start())

    def finish() -> None:
        try:
            m.commit_restored(before_resume=check_ready)
            # The container runs at the destination; what is left is
            # its memory, pulled through the relay until the last page.
            m.step("memory (lazy)", memory or None)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            failure.append(err)
            # Stop CRIU's page server: the dump then fails and the frozen
            # source is resumed by the rollback.
            if swrk.get("pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(swrk["pid"], 9)

    started = time.monotonic()
    criu_opts = job.criu_opts.replace(ps=PageServer(address=loopback, port=port),
                                      status_fd=ready_w)
    if parent:
        criu_opts = criu_opts.replace(parent_img=f"../pre/{parent}", track_mem=True)
    waiter = threading.Thread(target=finish, name="post-copy-restore", daemon=True)
    acceptor = threading.Thread(target=relay_pages, name="post-copy-accept", daemon=True)
    lazy = LazySource(address=address, port=relay_port, secret=secret)
    # With the page stream: the destination opens it (and its relay) before
    # the freeze; the acceptor takes it from the listener's backlog.
    m.prepare_restore(lazy)
    m.step("dump")
    try:
        s = session or Client(SwrkOptions(criu=m.ctx.criu)).session(pass_fds=(ready_w,))
        swrk["pid"] = s.pid
        acceptor.start()
        try:
            with s if session is None else contextlib.nullcontext():
                s.dump(criu_opts, m.callbacks(post_dump))
        except BaseException as err:
            for r in relays:
                r.abort()
            if waiter.ident is not None:
                # Whether the destination runs the container is the restore
                # thread's to say (it commits on the destination's DONE):
                # wait for it, woken if it waits for a page server that
                # will not come.
                with contextlib.suppress(OSError):
                    os.write(ready_w, b"x")
                waiter.join(timeout=m.conn.timeouts.wait)
            if m.committed or waiter.is_alive():
                # The container runs at the destination (or may: no answer),
                # without the pages it had still to pull: the agent kills it
                # there. This tree, frozen with all its memory, must not run
                # as well.
                job.failed_kept_frozen()
                raise _lost(m, relays, err, known=m.committed) from err
            job.failed()
            from migrate.checkpoint.netns import unlock_network

            unlock_network(m.container.state.pid)
            if failure:
                raise failure[0] from err
            raise
        if failure:                     # CRIU finished, our side did not
            job.failed()
            raise failure[0]
        job.succeeded(still_running=m.opts.keep_source)
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
    m.step("finish")
    m.final_iteration(images, time.monotonic() - started)


def _lost(m: Migration, relays: list, err: BaseException, *, known: bool) -> MigrationError:
    why = next((str(r.error) for r in relays if r.error is not None), None) or str(err)
    cid = m.opts.container_id
    when = ("after the container resumed at the destination" if known else
            "and the destination did not say whether it had resumed the container")
    return MigrationError(
        "memory", f"the memory stopped coming {when} ({why}): the destination kills its copy, "
        f"which lacks pages; the source keeps its own, "
        f"frozen as it was at the switch, with all its memory: `migrate resume {cid}` runs it "
        f"here again once the destination's copy is gone, `migrate delete -f {cid}` drops it",
        source_state="frozen")


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.bind((address, 0))
        return s.getsockname()[1]
