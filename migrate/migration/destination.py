"""The destination's half of every strategy: restore, page servers.

``restore_for_migration`` is the agent's ``restore_fn``; ``controls`` are
the CONTROL operations strategies call (``receiver.py`` routes them).

The restored container is left stopped (CRIU's leave_stopped) until the
source says DONE: until then the source may still resume its frozen copy,
and exactly one of the two must run.
"""

from __future__ import annotations

import os
import signal
import threading

from migrate.errors import MigrationError
from migrate.migration.messages import (PageServerAddress, PageServerExit, PageServerStart,
                                        RestorePrepare, RestorePrepared, RestoreRequest,
                                        Restored)
from migrate.runtime.context import RuntimeContext

__all__ = ["restore_for_migration", "controls", "continue_container", "reap_when_done",
           "warm_up"]


def warm_up() -> None:
    """Import now what a restore imports on first use (the CRIU client, the
    restore and lifecycle code: ~50-100 ms here), so that the
    first migration does not pay for it while its container is frozen.
    The agent calls it once, before it accepts anything."""
    import migrate.checkpoint.compat  # noqa: F401
    import migrate.checkpoint.inspect  # noqa: F401
    import migrate.checkpoint.restore  # noqa: F401
    import migrate.checkpoint.restore_prep  # noqa: F401
    import migrate.checkpoint.unprivileged  # noqa: F401
    import migrate.criu_rpc.client  # noqa: F401
    import migrate.criu_rpc.lazy_pages  # noqa: F401
    import migrate.migration.content.store  # noqa: F401
    import migrate.runtime.cgroups  # noqa: F401
    import migrate.runtime.hooks  # noqa: F401
    import migrate.runtime.lifecycle.bringup  # noqa: F401
    import migrate.runtime.lifecycle.delete  # noqa: F401
    import migrate.runtime.lifecycle.query  # noqa: F401
    import migrate.runtime.rootless  # noqa: F401
    import tarfile  # noqa: F401 - checkpoint.tmpfs_copy.load, while frozen
    from migrate.criu_rpc import CriuOptions, to_criu_opts

    to_criu_opts(CriuOptions(images_dir="/"), images_dir_fd=0)   # loads the message tables
    try:
        # Content pre-copy's final build reads the pagemaps with pycriu
        # (restore reads its images with criu_rpc.images): ~80 modules,
        # 30-60 ms on first use.
        import pycriu.images  # noqa: F401
    except ImportError:
        pass


def _stdio(workdir: str) -> tuple[int, int, int]:
    """The restored container's stdio. The source's pipes and files cannot
    come along: each fd gets a stand-in of the same kind (CRIU checks the
    file type and mode of what it reopens): the same device node (/dev/null
    ...), or container.log for a pipe or a regular file.

    CRIU also checks the size of a regular file not opened for appending:
    the stand-in must have the size the source's file had at the dump. It
    is made that size (a hole; the output written since goes after it), and
    a second such file of another size gets a stand-in of its own
    (container.<fd>.log)."""
    import stat

    from migrate.checkpoint.metadata import load_meta

    images = os.path.join(workdir, "images")
    meta = load_meta(images)
    sizes = None
    paths: dict[str, str] = {}       # external key -> its stand-in
    sized: dict[str, int] = {}       # stand-in -> the size it was made
    fds = []
    for fd in range(3):
        d = next((x for x in meta.descriptors if x.fd == fd), None)
        mode = d.mode if d is not None else 0
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            path = d.path if d.path.startswith("/dev/") and os.path.exists(d.path) else os.devnull
            fds.append(os.open(path, os.O_RDWR | os.O_CLOEXEC))
            continue
        size = 0
        if stat.S_ISREG(mode) and d.external and d.external.startswith("file["):
            if sizes is None:
                from migrate.checkpoint.inspect import external_file_sizes

                sizes = external_file_sizes(images)
            size = sizes.get(d.external, 0)
        path = paths.get(d.external) if d is not None and d.external else None
        if path is None:
            path = os.path.join(workdir, "container.log")
            if size and sized.get(path, size) != size:
                path = os.path.join(workdir, f"container.{fd}.log")
            if d is not None and d.external:
                paths[d.external] = path
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        if size and path not in sized:
            os.ftruncate(out, size)
            sized[path] = size
        if stat.S_ISREG(mode):
            os.fchmod(out, stat.S_IMODE(mode))
        fds.append(out)
    return tuple(fds)


# What a migration's work directory holds that nobody needs once the
# container runs here: CRIU images, pre-dump rounds, the source's CPU
# description. The bundle (a copied rootfs), container.log (the container's
# stdio) and criu/ (the restore log) stay with the container.
IMAGE_DIRS = ("images", "pre", "cpuinfo", "content")


def remove_images(workdir: str) -> None:
    import shutil

    for name in IMAGE_DIRS:
        shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)


def reap_when_done(pid: int, then=None) -> None:
    """The restored init is our child (CRIU's rst_sibling) and the agent lives
    on: wait for it in the background, or each container that exits stays a
    zombie of the agent. Only this pid is waited for: a waitpid(-1) reaper
    would steal the exit status of criu swrk and the lazy-pages daemon from
    the code that waits for them."""
    import threading

    def wait() -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            return  # not ours (restored without rst_sibling) or already reaped
        if then is not None:
            then()

    threading.Thread(target=wait, name=f"reap-{pid}", daemon=True).start()


def continue_container(ctx: RuntimeContext, container_id: str) -> None:
    """Thaw the cgroup of a container restored frozen (the source froze it
    before CRIU did, see pipeline.py), then SIGCONT every process of it
    (restored with leave_stopped)."""
    from migrate.runtime.container import Container
    from migrate.runtime.state import StateStore

    container = Container.load(StateStore(ctx.root), container_id, ctx.proc_root)
    cg = container.cgroups
    if cg is not None and cg.is_usable() and cg.is_frozen():
        cg.thaw()
    pids = set(cg.pids() if cg is not None and cg.is_usable() else ())
    # The init's descendants too: CRIU stopped every task of the tree, and
    # one left out of the cgroup (or a container without a usable one)
    # would stay stopped for good, and make the next dump fail to seize it.
    pids.update(_descendants(container.state.pid, ctx.proc_root))
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def _descendants(pid: int, proc_root: str) -> list[int]:
    """``pid`` and every process below it (via /proc/PID/task/TID/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            tids = os.listdir(f"{proc_root}/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"{proc_root}/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                pass
    return found


def _restore_options(workdir: str, request: RestoreRequest, stdio):
    from migrate.checkpoint.options import RestoreOptions

    lazy = request.lazy
    # Content pre-copy's store served by a lazy-pages daemon of ours: the
    # memory is copied in here after the tasks resume, nothing is pulled
    # over the link, so the images can go at commit (the daemon keeps them
    # open).
    local = request.lazy_local and not lazy
    return RestoreOptions(
        id=request.container_id, image_path=os.path.join(workdir, "images"),
        work_path=os.path.join(workdir, "criu"),
        bundle=request.bundle or os.path.join(workdir, "bundle"), detach=True,
        lazy_pages=bool(lazy) or local,
        page_server=f"{lazy.address}:{lazy.port}" if lazy else None, lazy_pages_local=local,
        page_server_secret=lazy.secret if lazy else None,
        tcp_established=request.tcp_established, file_locks=request.file_locks,
        ext_unix_sk=request.ext_unix_sk, empty_ns=request.empty_ns,
        leave_stopped=request.leave_stopped, stdio=stdio)


# Restores prepared before the freeze (``restore_prepare``), by work
# directory, until their RESTORE runs them or the migration ends.
_prepared: dict[str, object] = {}
_prepared_lock = threading.Lock()


def _take_prepared(workdir: str):
    with _prepared_lock:
        return _prepared.pop(workdir, None)


def _restore_prepare(ctx: RuntimeContext):
    def prepare(incoming, control) -> RestorePrepared:
        """The restore's bring-up while the source still runs (see
        ``RestorePrepare``); undone when the migration ends without RESTORE."""
        from migrate.checkpoint.restore import prepare_restore
        from migrate.errors import MigrateError

        request = RestorePrepare.from_control(control, phase=incoming.conn.current_phase).request
        if request.container_id != incoming.prepare.container_id:
            raise MigrationError(incoming.conn.current_phase,
                                 f'restore_prepare names container "{request.container_id}", '
                                 f'PREPARE "{incoming.prepare.container_id}"',
                                 source_state="running")
        workdir = incoming.workdir
        stdio = _stdio(workdir)
        try:
            prepared = prepare_restore(ctx, _restore_options(workdir, request, stdio))
        except MigrateError as err:
            raise MigrationError("restore", str(err), source_state="running") from err
        finally:
            for fd in stdio:
                os.close(fd)
        with _prepared_lock:
            old = _prepared.pop(workdir, None)
            _prepared[workdir] = prepared
        if old is not None:
            old.abort()

        def drop() -> None:
            left = _take_prepared(workdir)
            if left is not None:
                left.abort()

        incoming.cleanups.append(drop)
        return RestorePrepared()

    return prepare


def restore_for_migration(ctx: RuntimeContext, workdir: str, request: RestoreRequest) -> Restored:
    """Restore the container the source sent into ``workdir`` (through the
    bring-up ``restore_prepare`` made, if it did). Raises MigrationError
    (phase "restore") with the reason."""
    from migrate.checkpoint.restore import prepare_restore
    from migrate.errors import MigrateError
    from migrate.runtime.lifecycle.delete import delete
    from migrate.runtime.lifecycle.query import state

    cid = request.container_id
    bundle = request.bundle or os.path.join(workdir, "bundle")
    lazy = request.lazy
    stdio = _stdio(workdir)
    try:
        opts = _restore_options(workdir, request, stdio)
        prepared = _take_prepared(workdir) or prepare_restore(ctx, opts)
        prepared.run(opts)
    except MigrateError as err:
        raise MigrationError("restore", str(err), source_state="frozen") from err
    finally:
        for fd in stdio:
            os.close(fd)
    info = state(ctx, cid)
    # Post-copy: the lazy-pages daemon may still read the images after DONE;
    # they are small (no pages), and go when the container exits.
    reap_when_done(info["pid"], then=(lambda: remove_images(workdir)) if lazy else None)

    def abort() -> None:
        if prepared.relay is not None:
            prepared.relay.go()     # its held pull fails on the source gone, and so ends
        delete(ctx, cid, force=True)

    def commit() -> None:
        if request.leave_stopped:
            continue_container(ctx, cid)
        if prepared.relay is not None:
            # The lazy pull may start: until now its CPU would have been
            # downtime (lazy_prefetch.PrefetchRelay's ``control``).
            prepared.relay.go()

    # The images go once the source has DONE's answer: deleting a gigabyte
    # of them (~0.2 s) is no longer downtime.
    return Restored(info={"pid": info["pid"], "status": info["status"], "bundle": bundle},
                    commit=commit, abort=abort,
                    after=None if lazy else (lambda: remove_images(workdir)))


def _page_server(ctx: RuntimeContext):
    def start(incoming, control) -> PageServerAddress:
        """Start a CRIU page server receiving pages into the request's ``dir``."""
        from migrate.criu_rpc import Client, CriuOptions, PageServer, SwrkOptions

        request = PageServerStart.from_control(control, phase=incoming.conn.current_phase)
        target = incoming.path(request.dir)
        os.makedirs(target, mode=0o700, exist_ok=True)
        parent = request.parent
        address = incoming.conn.local_address

        # We listen, and CRIU gets the socket of the peer that opens the
        # stream with the secret (criu_rpc/page_stream.py): CRIU's own
        # listener would take the first peer.
        from migrate.criu_rpc.page_stream import accept_with_secret, listen_on

        listener = listen_on(address)
        incoming.cleanups.append(listener.close)
        started = threading.Event()
        incoming.state["page_server"] = started

        def run() -> None:
            from migrate.migration._sockets import configure_socket

            try:
                sock = accept_with_secret(listener, request.secret,
                                          timeout=incoming.conn.timeouts.wait)
                try:
                    configure_socket(sock, incoming.conn.timeouts)
                    os.set_inheritable(sock.fileno(), True)
                    session = Client(SwrkOptions(criu=ctx.criu)).session(
                        pass_fds=(sock.fileno(),))
                    incoming.cleanups.append(session.close)
                    result = session, session.page_server(CriuOptions(
                        images_dir=target,
                        log_file=f"page-server-{os.path.basename(target)}.log",
                        ps=PageServer(fd=sock.fileno()), parent_img=parent,
                        auto_dedup=bool(parent)))
                finally:
                    sock.close()        # swrk holds its own copy
            except BaseException as err:  # noqa: BLE001 - handed to wait()
                result = err
            finally:
                listener.close()
            incoming.state["page_server_started"] = result
            started.set()

        threading.Thread(target=run, name="page-server-accept", daemon=True).start()
        return PageServerAddress(address=address, port=listener.getsockname()[1])

    def wait(incoming, _control) -> PageServerExit:
        """Wait until the page server got everything (it exits after one dump)."""
        started = incoming.state.pop("page_server", None)
        if started is None:
            raise MigrationError("memory", "no page server is running", source_state="frozen")
        started.wait(incoming.conn.timeouts.wait)
        result = incoming.state.pop("page_server_started", None)
        if not isinstance(result, tuple):
            raise MigrationError("memory", f"the page server did not start: {result}",
                                 source_state="frozen")
        session, info = result
        code = session.wait_pid(info.pid)
        if code != 0:
            raise MigrationError("memory", f"the page server exited with {code} "
                                 f"(see page-server logs in {incoming.workdir})",
                                 source_state="frozen")
        return PageServerExit(exit=code)

    return start, wait


def controls(ctx: RuntimeContext) -> dict:
    """The agent's CONTROL hooks, by the request records' ``OP``."""
    from migrate.migration.content.destination import controls as content_controls
    from migrate.migration.messages import PageServerWait

    start, wait = _page_server(ctx)
    return {PageServerStart.OP: start, PageServerWait.OP: wait,
            RestorePrepare.OP: _restore_prepare(ctx), **content_controls()}
