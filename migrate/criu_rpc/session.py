"""A ``criu swrk`` session: several requests over one CRIU process.

What CRIU allows on one connection (``cr_service_work`` and
``chk_keepopen_req`` in criu/cr-service.c)::

    open ──feature_check / version / page_server / cpuinfo_*──> open  (keep_open)
    open ──pre_dump──> pre-dumping ──pre_dump──> pre-dumping
                       pre-dumping ──dump──> closed           (pre_dump_loop)
    open ──dump / restore / check / wait_pid──> closed

After a PRE_DUMP, CRIU itself waits for the next PRE_DUMP or the final DUMP
(anything else is refused as "Bad req seq"); this is how pre-copy iterates
without losing the pidfds and the memory-tracking state between rounds. A
failed pre-dump ends the session. Setting ``keep_open`` on any other request
type makes CRIU exit without answering, so the session never does.

The migration pipelines build on two things here:

* ``pre_dump`` ... ``pre_dump`` ``dump`` in one session, with options from
  ``plan_pre_dump_chain`` (each round's ``parent_img`` points at the round
  before, relative to its own images directory, and ``track_mem`` is on);
* a held notification: a ``post-dump`` callback may block while the images
  are restored elsewhere, then return ``True`` (CRIU kills or, with
  ``leave_running``, resumes the tree) or ``False`` (CRIU resumes the frozen
  tree and the dump fails with ``CriuError``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from migrate._record import record
TYPE_CHECKING = False   # typing costs ~3 ms to import; only checkers need it
if TYPE_CHECKING:
    from typing import Any

from migrate.criu_rpc._log import first_error, is_harmless
from migrate.criu_rpc._swrk import Outcome, Swrk, SwrkOptions, make_error
from migrate.criu_rpc.features import Features, Version
from migrate.criu_rpc.notify import Callbacks, check_callbacks
from migrate.criu_rpc.options import CriuOptions, check_request, to_criu_opts
from migrate.errors import CriuError, UsageError

# cr_errmsg is a raw log line: "Error (criu/cr-dump.c:1234): text".
_ERROR_PREFIX = re.compile(r"^(?:\([\d.]+\)\s+)?Error \([^)]*\):\s*")

__all__ = ["Session", "RestoreResult", "PageServerInfo", "plan_pre_dump_chain", "build_request"]


@record
class RestoreResult:
    """``pid`` is the restored root task, in our PID namespace. With
    ``rst_sibling`` it is our child (wait for it); otherwise it was swrk's
    and is now reparented (to init or the nearest subreaper)."""

    pid: int


@record
class PageServerInfo:
    """Where a page server listens: the port (the kernel's pick when
    ``ps.port`` was 0) and its pid (the session's swrk's child)."""

    pid: int
    port: int


def _page_server_unreachable(options: CriuOptions | None, log_path: str | None) -> str | None:
    """"cannot connect to the page server at A:P" when CRIU's log says so."""
    ps = options.ps if options is not None else None
    if ps is None or ps.address is None or not log_path:
        return None
    from migrate.criu_rpc._log import find_line

    line = find_line(log_path, "Can't connect to server")
    if line is None:
        return None
    where = f"[{ps.address}]:{ps.port}" if ":" in ps.address else f"{ps.address}:{ps.port}"
    return (f"cannot connect to the page server at {where} (nothing listens there, or it is "
            f"unreachable)")


def _kill_quietly(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def plan_pre_dump_chain(options: CriuOptions, images_dirs: Sequence[str]) -> tuple[CriuOptions, ...]:
    """Options for pre-dumps into ``images_dirs[:-1]`` and the final dump into
    ``images_dirs[-1]``, each round's ``parent_img`` naming the round before.

    ``options`` is the final dump's (pid, leave_running, lazy_pages, ps ...);
    ``parent_img`` in it, if set, is the parent of the first round, relative
    to the first images directory. Pre-dumps never use lazy_pages (CRIU
    refuses) and leave the tree running by nature. ``work_dir`` is dropped
    unless set, so each round logs next to its images.

    Raises ``UsageError`` for an empty list or a repeated directory.
    """
    dirs = [os.path.normpath(d) for d in images_dirs]
    if not dirs:
        raise UsageError("pre-dump chain: no images directories")
    if len(set(dirs)) != len(dirs):
        raise UsageError("pre-dump chain: an images directory is used twice")
    plans = []
    parent = options.parent_img
    for i, images_dir in enumerate(dirs):
        final = i == len(dirs) - 1
        changes: dict[str, Any] = {"images_dir": images_dir, "track_mem": True, "parent_img": parent}
        if not final:
            changes.update(lazy_pages=False, leave_running=False, leave_stopped=False)
        plans.append(options.replace(**changes))
        # CRIU opens parent_img relative to the images directory (openat on
        # the images dir fd), so a relative path keeps the chain movable.
        parent = os.path.relpath(images_dir, dirs[i + 1]) if not final else None
    return tuple(plans)


def build_request(action: str, options: CriuOptions | None, *, images_dir_fd: int = -1,
                  work_dir_fd: int | None = None, keep_open: bool = False,
                  features: Any = None, pid: int | None = None) -> Any:
    """The ``criu_req`` of ``action`` ("dump", "page_server_chld" ...), as
    sent. Pure: the directory fds are given, not opened."""
    from migrate.criu_rpc import _messages as rpc

    return rpc.criu_req(
        type=rpc.criu_req_type[action.upper()], keep_open=keep_open or None,
        features=features, pid=pid,
        opts=None if options is None else to_criu_opts(options, images_dir_fd=images_dir_fd,
                                                       work_dir_fd=work_dir_fd))


class _Dirs:
    """The images/work directory fds of one request (kept open here: CRIU
    opens them through /proc/<us>/fd/N)."""

    def __init__(self, action: str, options: CriuOptions | None) -> None:
        self.images_fd = -1
        self.work_fd: int | None = None
        self.log_path: str | None = None
        if options is None:
            return
        try:
            if options.images_dir is not None:
                self.images_fd = os.open(options.images_dir, os.O_DIRECTORY | os.O_PATH | os.O_CLOEXEC)
            if options.work_dir is not None:
                self.work_fd = os.open(options.work_dir, os.O_DIRECTORY | os.O_PATH | os.O_CLOEXEC)
        except OSError as err:
            self.close()
            which = "images_dir" if self.images_fd < 0 else "work_dir"
            raise CriuError(action, f'cannot open {which} "{err.filename}"',
                            errno=err.errno or 0) from err
        log_dir = options.work_dir or options.images_dir
        if log_dir is not None and options.log_file is not None:
            self.log_path = os.path.join(os.path.abspath(log_dir), options.log_file)

    def close(self) -> None:
        for fd in (self.images_fd, self.work_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.images_fd, self.work_fd = -1, None


class Session:
    """One ``criu swrk`` process; a context manager that always reaps it.

    ``pass_fds`` must include every fd a later request's options name in
    ``inherit_fd`` or ``ps.fd`` (CRIU uses them under the same numbers).
    Starting the session starts criu swrk; raises ``CriuError`` if it cannot.
    """

    def __init__(self, swrk: SwrkOptions | None = None) -> None:
        self._options = swrk or SwrkOptions()
        self._state = "open"
        self._page_server_logs: dict[int, str] = {}   # pid -> its log, watched by wait_pid
        self._swrk = Swrk(self._options, action="swrk")

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        """The pid of criu swrk."""
        return self._swrk.pid

    @property
    def state(self) -> str:
        """``open``, ``pre-dumping`` or ``closed``."""
        return self._state

    def close(self) -> None:
        """End the session and reap criu swrk; idempotent."""
        self._state = "closed"
        self._swrk.close()
        self._swrk.discard_output()

    # -- requests -----------------------------------------------------------

    def check(self, options: CriuOptions | None = None) -> None:
        """CHECK: can CRIU work on this kernel? Ends the session.

        Raises ``CriuError`` with CRIU's complaint when it cannot.
        """
        self._request("check", options, keep_open=False)

    def version(self) -> Version:
        """VERSION of the criu binary. Keeps the session open."""
        resp = self._request("version", None, keep_open=True).resp
        return Version.from_message(resp.version)

    def feature_check(self, *, mem_track: bool = True, lazy_pages: bool = True,
                      pidfd_store: bool = True) -> Features:
        """FEATURE_CHECK; features not asked about come back ``None``.
        Keeps the session open. Raises ``CriuError`` if the check cannot run."""
        from migrate.criu_rpc import _messages as rpc

        asked = Features(mem_track=mem_track, lazy_pages=lazy_pages, pidfd_store=pidfd_store)
        # Only what is asked is sent (None leaves a field unset).
        features = rpc.criu_features(mem_track=mem_track or None, lazy_pages=lazy_pages or None,
                                     pidfd_store=pidfd_store or None)
        resp = self._request("feature_check", None, keep_open=True, features=features).resp
        return Features.from_message(resp.features, asked)

    def page_server(self, options: CriuOptions) -> PageServerInfo:
        """Start a page server writing into ``options.images_dir`` and
        listening on ``options.ps`` (port 0: the kernel picks; the answer
        says which). Keeps the session open.

        The page server is swrk's child (PAGE_SERVER_CHLD), so ``wait_pid``
        tells when a dump has been received; it exits by itself after one
        dump, and outlives the session if that ends first. CRIU's daemonized
        variant (PAGE_SERVER) is not offered: CRIU 4.2.1 answers it with pid
        0 (``cr_page_server()`` returns 0, not the daemon's pid, in
        criu/page-xfer.c), leaving no way to stop a page server nobody
        connects to. Raises ``CriuError``.
        """
        outcome = self._request("page_server_chld", options, keep_open=True)
        resp = outcome.resp
        if not resp.has("ps") or resp.ps.pid <= 0:
            raise make_error("page-server", "CRIU did not report the page server's pid and port",
                             log_path=None, swrk=self._swrk)
        if outcome.log_path:
            self._page_server_logs[resp.ps.pid] = outcome.log_path
        return PageServerInfo(pid=resp.ps.pid, port=resp.ps.port)

    def pre_dump(self, options: CriuOptions, callbacks: Callbacks | None = None) -> None:
        """PRE_DUMP: copy memory while the tree runs; CRIU then waits in this
        session for the next ``pre_dump`` or the final ``dump``.

        Needs memory tracking (``Features.mem_track``). Raises ``CriuError``
        (which ends the session).
        """
        self._request("pre_dump", options, callbacks=callbacks, keep_open=False,
                      next_state="pre-dumping")

    def single_pre_dump(self, options: CriuOptions, callbacks: Callbacks | None = None) -> None:
        """SINGLE_PRE_DUMP: one pre-dump, not followed by a dump; ends the
        session. Raises ``CriuError``."""
        self._request("single_pre_dump", options, callbacks=callbacks, keep_open=False)

    def dump(self, options: CriuOptions, callbacks: Callbacks | None = None) -> None:
        """DUMP the tree rooted at ``options.pid``; ends the session.

        Raises ``CriuError`` (the tree keeps running), or the exception a
        callback raised, once CRIU has cleaned up. A lazy dump first checks
        that pipes can grow enough (``check_lazy_dump_limits``) and raises
        ``UnsupportedError`` before anything is frozen if they cannot.
        """
        if options.lazy_pages:
            from migrate.criu_rpc.lazy_pages import check_lazy_dump_limits

            check_lazy_dump_limits()
        self._request("dump", options, callbacks=callbacks, keep_open=False)

    def restore(self, options: CriuOptions, callbacks: Callbacks | None = None) -> RestoreResult:
        """RESTORE from ``options.images_dir``; ends the session.

        Raises ``CriuError``, or the exception a callback raised.
        """
        resp = self._request("restore", options, callbacks=callbacks, keep_open=False).resp
        return RestoreResult(pid=resp.restore.pid)

    def cpuinfo_dump(self, options: CriuOptions) -> None:
        """CPUINFO_DUMP: describe this host's CPU in ``cpuinfo.img`` inside
        ``options.images_dir`` (as ``criu cpuinfo dump``). Keeps the session
        open. Raises ``CriuError``."""
        self._request("cpuinfo_dump", options, keep_open=True)

    def cpuinfo_check(self, options: CriuOptions) -> None:
        """CPUINFO_CHECK: can a tree dumped on the CPU that ``cpuinfo.img`` in
        ``options.images_dir`` describes run on this host's CPU? CRIU checks
        what a restore checks by default (FPU state and instruction set:
        ``cpuinfo_check()`` in criu/arch/x86/cpu.c). Keeps the session open.
        Raises ``CriuError`` (CRIU's log names the missing features).
        """
        self._request("cpuinfo_check", options, keep_open=True)

    def wait_pid(self, pid: int) -> int:
        """WAIT_PID: wait for swrk's child ``pid`` (a page server started by
        ``page_server``) and return its exit code (negative: killed by that
        signal, as in ``subprocess``). Ends the session: CRIU does not allow
        ``keep_open`` here. Raises ``CriuError`` (e.g. ECHILD).
        """
        if not isinstance(pid, int) or pid <= 0:
            raise UsageError(f"criu wait-pid: {pid!r} is not a process ID")
        log = self._page_server_logs.get(pid)
        watch = (log, lambda: _kill_quietly(pid)) if log else None
        resp = self._request("wait_pid", None, keep_open=False, pid=pid, watch=watch).resp
        return os.waitstatus_to_exitcode(resp.status)

    # -- the loop -------------------------------------------------------------

    def _request(self, action: str, options: CriuOptions | None, *, keep_open: bool,
                 callbacks: Callbacks | None = None, next_state: str | None = None,
                 features: Any = None, pid: int | None = None, watch=None) -> Outcome:
        name = action.replace("_", "-")
        self._check_state(action, name)
        cbs = check_callbacks(callbacks)
        if options is not None:
            check_request(action, options)
            missing = set(options.inherited_fds()) - set(self._options.pass_fds)
            if missing:
                raise UsageError(f"criu {name}: fds {sorted(missing)} are not inherited by the "
                                 "session (add them to SwrkOptions.pass_fds)")
            if cbs and not options.notify_scripts:
                # Callbacks are pointless unless CRIU is asked to notify.
                options = options.replace(notify_scripts=True)

        dirs = _Dirs(name, options)
        try:
            req = build_request(action, options, images_dir_fd=dirs.images_fd,
                                work_dir_fd=dirs.work_fd, keep_open=keep_open,
                                features=features, pid=pid)
            try:
                outcome = self._swrk.transact(req, action=name, callbacks=cbs, log_path=dirs.log_path,
                                              watch=watch)
            except BaseException:
                self._state = "closed"
                self._swrk.close()
                raise
        finally:
            dirs.close()

        resp = outcome.resp
        failed = not resp.success
        if failed or not keep_open:
            # CRIU ends the connection after every request but the keep_open
            # kinds; after a failure we end it too rather than guess.
            self._state = next_state if next_state is not None and not failed else "closed"
            if self._state == "closed":
                self._swrk.close()
        if outcome.raised is not None:
            where, exc = outcome.raised
            verdict = "failed" if failed else "finished anyway"
            exc.add_note(f"criu {name} was answered failure at the {where} notification "
                         f"because its callback raised; the request {verdict}")
            raise exc
        if failed:
            raise self._failure(name, options, outcome, dirs.log_path)
        return outcome.with_log(dirs.log_path)

    def _check_state(self, action: str, name: str) -> None:
        if self._state == "closed":
            raise UsageError(f"criu {name}: the swrk session is closed")
        if self._state == "pre-dumping" and action not in ("pre_dump", "dump"):
            raise UsageError(f"criu {name}: after a pre-dump CRIU accepts only pre-dump or dump")

    def _failure(self, name: str, options: CriuOptions | None, outcome: Outcome,
                 log_path: str | None) -> CriuError:
        resp = outcome.resp
        if outcome.declined_by is not None:
            message = f"the {outcome.declined_by} callback answered failure"
            if outcome.declined_by == "post-dump":
                message += ", CRIU resumed the tree"
        else:
            message = (resp.cr_errmsg or "").strip()
            if not message or is_harmless(message):
                message = (first_error(log_path) or self._swrk.output_first_error() or message
                           or "CRIU reported failure")
            message = _ERROR_PREFIX.sub("", message).rstrip(".")
            unreachable = _page_server_unreachable(options, log_path)
            if unreachable:
                # CRIU logs this without "Error" and then fails in cleanup
                # ("Unable to detach from <pid>: No such process").
                message = unreachable
        if options is not None and options.pid is not None:
            message = f"pid {options.pid}: {message}"
        elif options is not None and options.images_dir is not None and name == "restore":
            message = f"{options.images_dir}: {message}"
        errno = resp.cr_errno if resp.has("cr_errno") else 0
        return make_error(name, message, errno=errno, log_path=log_path, swrk=self._swrk)

