"""`migrate restore`: bring a checkpointed container back as a full citizen.

The container comes up through the same bring-up as `create`
(runtime/lifecycle/bringup.py: claim, cgroups, state, hooks, console, pid
file, undo); only the step that starts its tasks differs:

  checks (metadata, bundle, stdio, flags) -> Bringup(..., "restore"):
  cgroups (CRIU puts the tasks into them: cg_root) -> the --root bind with
  its mount points, inherited fds (restore_prep.py) -> the CRIU options
  (restore_plan.py) -> CRIU's restore, answering its notifications
  (creating hooks, the new pty master, lo up) -> state, pid file,
  poststart -> in the foreground, wait and delete.

The migration destination (migration/destination.py) restores through
``restore`` too. On failure everything made is undone.
"""

from __future__ import annotations

import contextlib
import os
import signal

from migrate.checkpoint.externals import TMPFS_COPY
from migrate.checkpoint.inspect import external_mount_keys
from migrate.checkpoint.metadata import load_meta
from migrate.checkpoint.options import RestoreOptions
from migrate.checkpoint.restore_plan import (check_stdio, mount_sources, plan_restore,
                                             restored_stdio)
from migrate.errors import KernelError, MigrateError, NotFoundError, UsageError
from migrate.runtime.container import proc_start_time
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import validate_id

__all__ = ["restore", "prepare_restore", "PreparedRestore", "plan_restore", "mount_sources",
           "check_stdio"]


def restore(ctx: RuntimeContext, opts: RestoreOptions) -> int:
    """Restore; with ``detach`` return 0 at once, else wait and return the
    container's exit code (deleting it afterwards, as `run` does).

    Raises NotFoundError, ExistsError, UsageError, UnsupportedError, CriuError.
    """
    return prepare_restore(ctx, opts).run(opts)


def prepare_restore(ctx: RuntimeContext, opts: RestoreOptions) -> "PreparedRestore":
    """The first half of ``restore``: the checks that need only the
    checkpoint's metadata (``migrate.json``) and the bundle, the claim of the
    ID, the cgroups and the --root bind. CRIU's images need not be there
    yet: a migration's destination prepares while the source still runs.
    ``run()`` or ``abort()`` must follow. Raises what ``restore`` raises."""
    from migrate import oci
    from migrate.checkpoint.cgyard import make_yard
    from migrate.checkpoint.restore_prep import prepare_masked_tmpfs, prepare_root
    from migrate.checkpoint.unprivileged import check_unprivileged_checkpoint
    from migrate.runtime import rootless
    from migrate.runtime.lifecycle.bringup import Bringup, check_handoff
    from migrate.runtime.lifecycle.delete import umount_criu_cgyards

    validate_id(opts.id)
    images_dir = os.path.abspath(opts.image_path)
    work_dir = os.path.abspath(opts.work_path) if opts.work_path else images_dir
    meta = load_meta(images_dir)
    check_stdio(meta, opts.stdio or (0, 1, 2), images_dir)
    if meta.pre_dump:
        raise UsageError(f"{images_dir} is a pre-dump: restore the final dump that names it "
                         f"with --parent-path")
    bundle = os.path.abspath(opts.bundle)
    spec = oci.load_config(bundle)
    if not os.path.isdir(spec.root.path):
        raise NotFoundError(f"rootfs {spec.root.path} does not exist")
    if meta.terminal and not opts.console_socket and opts.detach:
        raise UsageError("the checkpointed container has a terminal: restore --detach "
                         "needs --console-socket")
    check_handoff(opts.pid_file, opts.console_socket)
    facts = rootless.detect(ctx.rootless)
    check_unprivileged_checkpoint(ctx.criu, config=oci.spec_to_dict(spec), proc_root=ctx.proc_root)
    _makedirs(work_dir)
    up = Bringup(ctx, opts.id, "restore", spec=spec, bundle=bundle, facts=facts).__enter__()
    prepared = PreparedRestore(ctx, up, meta, images_dir, work_dir)
    try:
        prepared.cgroups = up.open_cgroups(criu_work_dir=work_dir)
        # A CRIU we killed (deadline, log limit) leaves its half-restored
        # tasks behind, still writing its log: they are in these cgroups.
        # It also leaves its cgroup yard mounted in our mount namespace.
        up.expect_tasks()
        up.on_failure(lambda: umount_criu_cgyards(ctx, work_dir))
        # The hierarchies CRIU would mount while the tasks are frozen (a
        # migration prepares this before the source freezes): cgyard.py.
        prepared.yard = make_yard(ctx, work_dir)
        prepared.criu_root, prepared.resolved = prepare_root(ctx, spec, meta, up.dir, bundle,
                                                             up.always, up.claim)
        prepared.masked_tmpfs = prepare_masked_tmpfs(ctx, meta, up.dir, up.always, up.claim)
        if any(m.kind == "notify" for m in meta.mounts) and ctx.notify_socket:
            from migrate.runtime.notify import prepare_notify_dir

            prepared.notify_dir = prepare_notify_dir(up.dir)
        if opts.lazy_pages and opts.page_server and opts.page_server_secret:
            # The source's page stream and its relay, before the source
            # freezes (in the frozen window they took ~8 ms here).
            prepared.lazy_stream = _lazy_stream(ctx, up, opts)
    except BaseException as err:
        prepared.abort(err)
        raise
    return prepared


class PreparedRestore:
    """A restore whose bring-up is under way (see ``prepare_restore``): the
    ID claimed, cgroups and --root made. ``run`` restores the tasks,
    ``abort`` undoes it all; exactly one of them, once."""

    def __init__(self, ctx: RuntimeContext, up, meta, images_dir: str, work_dir: str) -> None:
        self.ctx, self.up, self.meta = ctx, up, meta
        self.images_dir, self.work_dir = images_dir, work_dir
        self.cgroups = None
        self.criu_root = ""
        self.resolved: dict[str, str] = {}
        self.masked_tmpfs: dict[str, str] = {}
        self.notify_dir = None
        self.yard: str | None = None
        self.lazy_stream = None     # made ahead by _lazy_stream: (the daemon's end, the relay)
        self.relay = None           # the lazy-pages relay, once run() started it: go() on resume
        self.done = False

    def abort(self, err: BaseException | None = None) -> None:
        """Undo the bring-up (nothing if ``run`` was called)."""
        if self.done:
            return
        self.done = True
        from migrate.errors import MigrateError

        self.up.__exit__(type(err), err or MigrateError("restore aborted"), None)

    def run(self, opts: RestoreOptions) -> int:
        """The second half of ``restore``: with the images in place, plan
        CRIU's options, restore, commit. ``opts`` are those of the prepare
        (same ID, images and bundle), with the run-time choices (lazy
        pages, stdio) filled in. Undoes everything on failure."""
        if self.done:
            raise UsageError(f'the restore of "{opts.id}" has already run or was aborted')
        self.done = True
        up = self.up
        try:
            pid, fg, console = self._run(opts)
        except BaseException as err:
            up.__exit__(type(err), err, err.__traceback__)
            raise
        up.__exit__(None, None, None)
        if fg is None:
            return 0
        from migrate.runtime.lifecycle.bringup import wait_and_delete

        return wait_and_delete(self.ctx, opts.id, fg, pid, console.master)

    def _run(self, opts: RestoreOptions):
        from migrate.checkpoint.compat import check_bundle_fits
        from migrate.checkpoint.restore_prep import open_namespaces, stdio_copies
        from migrate.runtime.lifecycle.bringup import ConsoleHandoff, run_poststart

        ctx, up, meta, images_dir = self.ctx, self.up, self.meta, self.images_dir
        spec = up.spec
        # CRIU's first step mounts cgroup2 for its cgroup yard, which waits
        # out an RCU grace period when no cgroup attach happened for a while
        # (10-27 ms of every restore.log here; runc pays it moving criu swrk
        # into the container's cgroups): paid in the background from here,
        # and kept paid until CRIU is past it (_run_criu stops it).
        from migrate.runtime.cgroups.warmup import AttachKeptWarm

        warm = AttachKeptWarm(ctx.cgroup_root, ctx.proc_root)
        up.always(warm.stop)
        held = _pages_by_daemon(opts, images_dir)
        if held:
            from migrate import _record

            opts = _record.replace(opts, lazy_pages=True, lazy_pages_local=True)
        # Started first, so that it gets ready (~5 ms) while the rest is planned.
        daemon, relay = _start_lazy_pages(ctx, up, opts, images_dir, self.work_dir,
                                          self.lazy_stream)
        self.relay = relay
        check_bundle_fits(images_dir, spec, empty_ns=opts.empty_ns | frozenset(meta.empty_ns))
        if any(m.kind == TMPFS_COPY for m in meta.mounts):
            from migrate.checkpoint.tmpfs_copy import load

            load(meta.mounts, images_dir, self.masked_tmpfs)
        cgroups = self.cgroups
        stdio_fds = stdio_copies(up.always, opts.stdio)
        criu_opts = plan_restore(spec, meta, opts, images_dir=images_dir, work_dir=self.work_dir,
                                 criu_root=self.criu_root, cgroup_paths=cgroups.paths(),
                                 cgroup_mounts=cgroups.to_state().get("mounts") or {},
                                 ns_fds=open_namespaces(spec, up.always),
                                 notify_dir=self.notify_dir,
                                 stdio_fds=stdio_fds,
                                 resolved=self.resolved,
                                 image_keys=external_mount_keys(images_dir),
                                 masked_tmpfs=self.masked_tmpfs)
        if self.yard is not None:
            criu_opts = criu_opts.replace(cgroup_yard=self.yard)
        fg = None
        if not opts.detach:
            from migrate.runtime.foreground import Foreground

            fg = Foreground(ctx.syscalls)
            fg.install()
            up.on_failure(fg.restore)
        state = up.new_state(spec, terminal=meta.terminal, no_pivot=opts.no_pivot, restored=True)
        console = ConsoleHandoff(opts.console_socket, keep=not opts.detach)
        pid = _run_criu(ctx, up, criu_opts, console, opts, warm, daemon, relay,
                        hold_for=cgroups if held else None)
        if relay is not None and not opts.leave_stopped:
            relay.go()          # it runs: its memory may come (else whoever resumes it says)
        if self.yard is not None:
            from migrate.checkpoint.cgyard import remove_yard

            remove_yard(ctx, self.yard)
        from migrate.runtime.stdio import fd_identity

        up.started(pid, stdio=restored_stdio(
            meta, stdio_fds, lambda fd, role: fd_identity(f"{ctx.proc_root}/self", fd, role=role)))
        up.commit(opts.pid_file)
        run_poststart(state, spec)
        return pid, fg, console


# From this much memory on (the size of the pages images), a restore that
# was not asked for lazy pages still takes them through a local lazy-pages
# daemon, and holds the tasks until it has copied in the last one
# (_pages_by_daemon). Measured here, 512 MiB, in-process: every page in
# 0.23-0.30 s with the daemon, 0.34-0.37 s read by CRIU's restorer. The
# daemon copies each page in with UFFDIO_COPY, which the kernel does not
# clear first as it clears a page faulted in by the restorer's preadv, and
# it works while CRIU finishes the restore. Starting it costs ~15 ms.
HELD_LAZY_MIN_BYTES = 128 << 20


def _pages_by_daemon(opts: RestoreOptions, images_dir: str) -> bool:
    """Whether this restore copies the memory in with a local lazy-pages
    daemon while the tasks are held (see HELD_LAZY_MIN_BYTES): a plain
    restore (no lazy pages asked, no auto-dedup, no parent images: the
    daemon reads none), as root, of at least that much memory, on a kernel
    whose userfaultfd has the events CRIU needs. Every page is in before
    any task runs again, and the restore fails (its tasks killed, the
    images untouched) if the daemon does."""
    if opts.lazy_pages or opts.lazy_pages_local or opts.page_server or opts.auto_dedup:
        return False
    if os.geteuid() != 0 or os.path.lexists(os.path.join(images_dir, "parent")):
        return False
    total = 0
    try:
        with os.scandir(images_dir) as entries:
            for entry in entries:
                if entry.name.startswith("pages-") and entry.name.endswith(".img"):
                    total += entry.stat().st_size
    except OSError:
        return False
    if total < HELD_LAZY_MIN_BYTES:
        return False
    from migrate.criu_rpc import uffd_noncoop

    return uffd_noncoop()


def _start_lazy_pages(ctx, up, opts: RestoreOptions, images_dir: str, work_dir: str,
                      stream=None):
    """The restore's lazy-pages daemon (None: the restore has none),
    started without waiting until it is ready, and the relay in front of
    it (None: none); a step of ``up``. ``stream``: ``_lazy_stream``'s, made
    ahead (else made here)."""
    if not (opts.lazy_pages and (opts.page_server or opts.lazy_pages_local)):
        return None, None
    from migrate.checkpoint.dump import parse_page_server
    from migrate.criu_rpc import LazyPagesOptions, PageServer, start_lazy_pages

    ps = parse_page_server(opts.page_server) if opts.page_server else None
    if ps is not None and opts.page_server_secret and stream is None:
        stream = _lazy_stream(ctx, up, opts)
    sock = stream[0] if stream is not None else None
    try:
        if sock is not None:
            ps = PageServer(fd=sock.fileno())
        daemon = start_lazy_pages(LazyPagesOptions(
            images_dir=images_dir, work_dir=work_dir, page_server=ps),
            criu=ctx.criu, wait=False)
    finally:
        if sock is not None:
            sock.close()        # the daemon holds its own copy
    up.on_failure(daemon.close)
    up.claim.add("processes", [daemon.pid, proc_start_time(daemon.pid, ctx.proc_root)])
    return daemon, stream[1] if stream is not None else None


def _run_criu(ctx, up, criu_opts, console, opts: RestoreOptions, warm, daemon, relay,
              hold_for=None) -> int:
    """CRIU's restore as one step of ``up``; returns the restored init's pid.
    ``warm`` (cgroups.warmup.AttachKeptWarm) is stopped once CRIU has made
    its cgroup yard and moved the tasks. ``daemon``, ``relay``: the
    lazy-pages daemon and its relay's process (``_start_lazy_pages``), or None.
    ``hold_for`` (the container's cgroups): the tasks resume only once the
    local lazy-pages daemon has copied in every page (_pages_by_daemon);
    if it fails, they are killed before CRIU lets them go."""
    from migrate.criu_rpc import Client, SwrkOptions

    spec, claim = up.spec, up.claim

    lo_up = []

    def setup_namespaces(note) -> bool:
        if "net" in criu_opts.empty_ns and note.pid:
            # CRIU made the network namespace empty, lo down: up before it
            # restores sockets, which may be bound to 127.0.0.1.
            _after_restore(spec, note.pid)
            lo_up.append(note.pid)
        if spec.hooks.prestart or spec.hooks.create_runtime:
            up.creating_hooks(note.pid or 0)
        return True

    def post_restore(note) -> bool:
        # Before the tasks resume, so a restored TCP connection can flow at once.
        if note.pid and note.pid not in lo_up:
            _after_restore(spec, note.pid)
        return True

    watch = []

    def pages_in(_note) -> bool:
        # CRIU has told the daemon the restore is done; the tasks are still
        # stopped, so it copies the remaining pages in and exits.
        watch[0].wait()
        return True

    def orphan_pts_master(note) -> bool:
        # The restored terminal's new master: to --console-socket, or kept
        # to proxy in the foreground.
        if note.fd is None:
            return False
        console.give(note.fd)
        return True

    def pre_restore(_note) -> bool:
        # CRIU's cgroup yard is mounted; its tasks join their cgroups soon
        # after, within the grace period the last attach keeps paid.
        warm.stop()
        return True

    callbacks = {"pre-restore": pre_restore, "setup-namespaces": setup_namespaces,
                 "post-restore": post_restore}
    if criu_opts.orphan_pts_master:
        callbacks["orphan-pts-master"] = orphan_pts_master
    if hold_for is not None:
        callbacks["pre-resume"] = pages_in
    # CRIU's forks are not in the container's cgroups until CRIU moves them,
    # and with rst_sibling they outlive a killed restore: the tag lets
    # `delete --force` find them (runtime/lifecycle/delete.py).
    from migrate.runtime.state import INTENT_ENV

    client = Client(SwrkOptions(criu=ctx.criu, env=((INTENT_ENV, claim.dir),)))
    try:
        with client.session(pass_fds=criu_opts.inherited_fds()) as session:
            # criu swrk gets EOF and exits if we die before the request is sent;
            # once it is, a killed restore leaves CRIU to `delete --force`.
            claim.add("processes", [session.pid, proc_start_time(session.pid, ctx.proc_root)])
            if hold_for is not None:
                watch.append(_DaemonWatch(daemon, hold_for, session.pid))
            if daemon is not None:
                # Started without waiting: swrk started meanwhile. CRIU
                # connects to it early in the restore.
                daemon.wait_ready()
            try:
                result = session.restore(criu_opts, callbacks)
            finally:
                if watch:
                    watch[0].disarm()       # before swrk is reaped: its pid may be reused
    except MigrateError as err:
        if watch and watch[0].failure is not None:
            raise watch[0].failure from err
        raise
    finally:
        warm.stop()
    up.on_failure(lambda: _kill(result.pid))
    if daemon is not None and hold_for is not None:
        watch[0].wait()         # returned in pages_in already: every page is in
        daemon.close()
    elif daemon is not None:
        # It pulls the remaining pages in the background and exits by itself.
        _watch_lazy_pages(daemon, relay, up.cgroups, result.pid, opts.id, ctx.proc_root)
    return result.pid


def _open_page_stream(ps, secret: str):
    """Our connection to the source's lazy page server, opened with
    ``secret`` (criu_rpc/page_stream.py: the source takes no other peer),
    for the daemon's --ps-socket (through a relay). Raises MigrateError."""
    import socket

    from migrate.errors import MigrationError
    from migrate.criu_rpc.page_stream import present_secret

    try:
        sock = socket.create_connection((ps.address, ps.port), timeout=30)
    except OSError as err:
        raise MigrationError("restore", f"cannot reach the source's page server "
                             f"{ps.address}:{ps.port}: {err.strerror or err}",
                             source_state="frozen") from err
    try:
        present_secret(sock, secret)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except OSError as err:
        sock.close()
        raise MigrationError("restore", f"cannot open the page stream: {err}",
                             source_state="frozen") from err
    return sock


def _lazy_stream(ctx, up, opts: RestoreOptions):
    """The page stream from the source (opened with its secret) and the
    relay in front of it: (the daemon's end, the relay's process, or None
    without one); a step of ``up``. Raises MigrateError."""
    from migrate.checkpoint.dump import parse_page_server

    ps = parse_page_server(opts.page_server)
    sock = _open_page_stream(ps, opts.page_server_secret)
    near, relay = _prefetching(sock, os.path.abspath(opts.image_path), ps.address)
    up.on_failure(near.close)
    if relay is not None:
        up.claim.add("processes", [relay.pid, proc_start_time(relay.pid, ctx.proc_root)])
        up.on_failure(lambda: relay.stop(timeout=0))
    return near, relay


def _prefetching(sock, images_dir: str, address: str):
    """(the daemon's end, the relay's process) of a ``PrefetchRelay`` in
    front of the page stream ``sock`` (criu_rpc/lazy_prefetch.py: CRIU's
    daemon asks for one range at a time; the relay keeps the link busy).
    The relay runs in a process of its own (cli/lazy_relay.py): the
    container's memory must keep coming should this one die. Without a
    relay (loopback down, no interpreter to start): (``sock``, None)."""
    import logging

    from migrate.criu_rpc.lazy_prefetch import connected_pair
    from migrate.criu_rpc.page_stream import loopback_for

    try:
        near, far = connected_pair(loopback_for(address))
    except OSError as err:
        logging.getLogger("migrate.checkpoint.restore").warning(
            "lazy pages: no prefetch (cannot connect on loopback: %s); the daemon pulls the "
            "pages one range at a time", err.strerror or err)
        return sock, None
    try:
        relay = _Relay(far, sock, images_dir)
    except OSError as err:
        why = err.strerror or str(err)
        relay = None
    finally:
        far.close()
    # Its start-up (~40 ms of CPU) is over before the source freezes
    # (restore_prepare), or before CRIU restores. Until it says so, ``sock``
    # is kept: should it not come up, the daemon takes the stream itself.
    if relay is not None and not relay.wait_ready(10.0):
        why = f"it did not come up (exit status {relay.stop(timeout=0)})"
        relay = None
    if relay is None:
        near.close()
        logging.getLogger("migrate.checkpoint.restore").warning(
            "lazy pages: no prefetch (its relay: %s); the daemon pulls the pages one range "
            "at a time", why)
        return sock, None
    sock.close()        # the relay holds its own copies
    return near, relay


class _Relay:
    """``python -m migrate.cli.lazy_relay`` running with both sockets,
    logging as this process does (see PrefetchRelay's ``control``):
    ``go()`` once the container runs (its pull waits until then),
    ``say(ok)`` whether the daemon succeeded (its close is held until
    then); ``stop()`` reaps it. Raises OSError."""

    def __init__(self, daemon_end, source, images_dir: str) -> None:
        import logging
        import subprocess
        import sys

        from migrate.runtime.exe_guard import import_path

        r, self._control = os.pipe2(os.O_CLOEXEC)
        self._ready, ready_w = os.pipe2(os.O_CLOEXEC)
        # -P: not the working directory first on sys.path (-m would put it
        # there: a "migrate" directory in it would run as root).
        argv = [sys.executable, "-S", "-P", "-m", "migrate.cli.lazy_relay",
                str(daemon_end.fileno()),
                str(source.fileno()), images_dir, "--control-fd", str(r),
                "--ready-fd", str(ready_w)]
        root = logging.getLogger("migrate")
        for handler in root.handlers:
            if isinstance(handler, logging.FileHandler):
                argv += ["--log", handler.baseFilename]
            if "Json" in type(handler.formatter).__name__:
                argv += ["--log-format", "json"]
        if root.isEnabledFor(logging.DEBUG):
            argv.append("--debug")
        # -S (no site): the package and what it imports are found as this
        # interpreter found them.
        env = {**os.environ, "PYTHONPATH": import_path()}
        try:
            self._proc = subprocess.Popen(argv, pass_fds=(daemon_end.fileno(), source.fileno(), r,
                                                          ready_w),
                                          stdin=subprocess.DEVNULL, env=env, cwd="/")
        except BaseException:
            os.close(self._control)
            os.close(self._ready)
            raise
        finally:
            os.close(r)
            os.close(ready_w)
        self.pid = self._proc.pid

    def wait_ready(self, timeout: float) -> bool:
        """Wait until it runs (True), it exited, or ``timeout`` seconds passed."""
        import select

        if self._ready < 0:
            return True
        try:
            ready = bool(select.select([self._ready], [], [], timeout)[0]) and \
                os.read(self._ready, 1) == b"r"
        finally:
            os.close(self._ready)
            self._ready = -1
        return ready

    def go(self) -> None:
        if self._control >= 0:
            with contextlib.suppress(OSError):
                os.write(self._control, b"g")

    def say(self, ok: bool) -> None:
        if self._control >= 0:
            with contextlib.suppress(OSError):
                os.write(self._control, b"1" if ok else b"0")
            os.close(self._control)
            self._control = -1

    def stop(self, timeout: float = 5.0) -> int:
        """Wait for it up to ``timeout`` seconds, kill it if it still runs,
        reap it; its exit status."""
        import subprocess

        for fd in (self._control, self._ready):
            if fd >= 0:
                os.close(fd)
        self._control = self._ready = -1
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()


# Watches of lazy-pages daemons still pulling pages (see wait_for_lazy_pages).
_lazy_watches: set = set()


def _watch_lazy_pages(daemon, relay, cgroups, pid: int, container_id: str,
                      proc_root: str) -> None:
    """Reap the lazy-pages daemon of a running restored container (and then
    its ``relay``) from a thread; should the daemon fail before every page
    is in, kill the container.

    The daemon closing its userfaultfd (its exit, whatever the cause) makes
    the kernel fill the pages it never copied with zeros on the next touch:
    the container would go on with memory that is silently wrong. The tasks
    are frozen first (one write) and then killed, unless the container is
    gone by then (deleted, its ID perhaps reused: its init is another).
    """
    import threading

    started = proc_start_time(pid, proc_root)

    def run() -> None:
        import logging

        from migrate.errors import MigrateError

        ok = False
        try:
            daemon.wait()
            ok = True
        except MigrateError as err:
            if proc_start_time(pid, proc_root) != started:
                return
            with contextlib.suppress(MigrateError, OSError):
                cgroups.freeze()
            with contextlib.suppress(MigrateError, OSError):
                cgroups.kill_all(signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            logging.getLogger("migrate.checkpoint.restore").error(
                'container "%s" killed: its lazy-pages daemon failed before every page was '
                "in, and the pages it lacked would read as zeros (%s)", container_id, err)
        finally:
            if relay is not None:
                # Its close reaches the source only now, and only if the
                # daemon succeeded: else the source keeps its tasks, with
                # all their memory (lazy_prefetch.PrefetchRelay's verdict).
                relay.say(ok)
                relay.stop()
            _lazy_watches.discard(thread)

    thread = threading.Thread(target=run, name="lazy-pages-watch", daemon=True)
    _lazy_watches.add(thread)
    thread.start()


def wait_for_lazy_pages(timeout: float | None = None) -> bool:
    """Wait until every restored container's lazy-pages daemon in this
    process is done (a process that exits sooner leaves nobody to kill a
    container whose daemon then fails). True when none is left."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in list(_lazy_watches):
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in list(_lazy_watches))


class _DaemonWatch:
    """The local lazy-pages daemon of a held restore (``_run_criu``'s
    ``hold_for``), waited for by a thread. Should it fail, the restored
    tasks are killed, and criu swrk too: a CRIU that kills the tree it
    traces after a failure waits for its init forever (the init of a PID
    namespace waits for its children, whose zombies only their tracer, CRIU,
    can release). ``wait()`` returns once the daemon exited 0, else raises
    its error."""

    def __init__(self, daemon, cgroups, swrk_pid: int) -> None:
        import threading

        self.failure: BaseException | None = None
        self._daemon, self._cgroups, self._swrk = daemon, cgroups, swrk_pid
        self._lock = threading.Lock()
        self._armed = True
        self._done = threading.Event()
        threading.Thread(target=self._run, name="lazy-pages-watch", daemon=True).start()

    def _run(self) -> None:
        try:
            self._daemon.wait()
        except BaseException as err:  # noqa: BLE001 - handed to wait() and _run_criu
            self.failure = err
            with self._lock:
                if self._armed:
                    self._stop_restore()
        finally:
            self._done.set()

    def _stop_restore(self) -> None:
        from migrate.errors import MigrateError

        with contextlib.suppress(MigrateError, OSError):
            self._cgroups.kill_all(signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(self._swrk, signal.SIGKILL)

    def wait(self) -> None:
        self._done.wait()
        if self.failure is not None:
            raise self.failure

    def disarm(self) -> None:
        """CRIU's request is over: kill nothing any more; the undo of a
        failed restore stops the daemon."""
        with self._lock:
            self._armed = False


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _after_restore(spec, pid: int) -> None:
    """A private network namespace comes back with lo down (runc has the same
    gap): bring it up, so a restored server answers on 127.0.0.1."""
    ns = spec.linux.namespace("network")
    if ns is None or ns.path:
        return
    from migrate.checkpoint.netns import set_lo_up

    set_lo_up(f"/proc/{pid}/ns/net")


def _makedirs(path: str) -> None:
    """Raises KernelError naming the directory (a file in the way, no space)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as err:
        raise KernelError.from_oserror("mkdir", err, path) from None
