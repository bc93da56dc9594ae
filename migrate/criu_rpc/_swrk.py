"""One ``criu swrk`` process and the message loop over its socket.

``criu swrk <fd>`` serves requests on an inherited SOCK_SEQPACKET socket:
one ``criu_req`` per packet in, one ``criu_resp`` per packet out
(criu/crtools.c, ``cr_service_work`` in criu/cr-service.c). Before the final
response CRIU may send NOTIFY responses, each waiting for a NOTIFY request;
the one for orphan-pts-master carries an fd (SCM_RIGHTS).

CRIU resolves the client's fds (images_dir_fd, work_dir_fd, status_fd)
through ``/proc/<peer>/fd/N``, the peer being the process that created the
socketpair (SO_PEERCRED): so those stay open here and are *not* inherited.
inherit_fd and ps.fd are used by CRIU under their own numbers: those must be
inherited (``pass_fds``).
"""

from __future__ import annotations

import array
import errno as _errno
import os
import select

# _socket, not socket: socket.py's enum conversions cost ~1 ms of every
# checkpoint and restore, and only the raw calls are used here.
import _socket
import time
from migrate._record import record
TYPE_CHECKING = False   # typing costs ~3 ms to import; only checkers need it
if TYPE_CHECKING:
    from typing import Any, Callable

from migrate.criu_rpc._log import first_error, quote_errors, read_tail
from migrate.criu_rpc.notify import Callback, Notification
from migrate.errors import CriuError, UsageError

# criu_resp messages are a few hundred bytes; this leaves a wide margin and
# MSG_TRUNC is checked anyway.
_MAX_MESSAGE = 1 << 20

# Every CRIU run is bounded. Measured here: a debug-level log of a 1 GiB
# dump or restore is a few MB, and such a run takes seconds; the limits are
# far above both and far below "the disk is full".
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_LOG_BYTES = 128 << 20
# How often the log size is looked at while CRIU works.
WATCH_INTERVAL = 0.25


@record
class SwrkOptions:
    """How to start ``criu swrk``.

    ``timeout`` bounds the time CRIU takes to answer, per request, not
    counting time spent in notification callbacks (a held post-dump may take
    as long as it needs); when it runs out, criu swrk is killed. Killing CRIU
    in the middle of a dump resumes the tree (ptrace detaches) but may leave
    the network locked, so pick a generous value. ``max_log_bytes`` bounds
    the request's log file: CRIU can loop forever logging (a truncated
    pages image makes a restore log "Advanced iov 0 bytes" at ~20 MB/s
    until the disk is full), so a log past it kills swrk too. ``None``
    turns either watch off. ``kill_after`` is how long closing waits for
    swrk to exit before SIGKILL. ``env`` adds variables to swrk's
    environment (inherited otherwise): every process CRIU forks carries
    them until it becomes a restored task, so they can tag a run.
    """

    criu: str = "criu"
    cwd: str | None = None
    pass_fds: tuple[int, ...] = ()
    timeout: float | None = DEFAULT_TIMEOUT
    max_log_bytes: int | None = DEFAULT_MAX_LOG_BYTES
    kill_after: float = 10.0
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.pass_fds, tuple):
            object.__setattr__(self, "pass_fds", tuple(self.pass_fds))
        for fd in self.pass_fds:
            if not isinstance(fd, int) or fd < 0:
                raise UsageError(f"swrk pass_fds: {fd!r} is not a file descriptor")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError(f"swrk timeout: {self.timeout!r} is not a positive number of seconds")
        if self.kill_after < 0:
            raise UsageError(f"swrk kill_after: {self.kill_after!r} is negative")
        if self.max_log_bytes is not None and self.max_log_bytes <= 0:
            raise UsageError(f"swrk max_log_bytes: {self.max_log_bytes!r} is not a positive size")


def log_too_big(path: str | None, limit: int | None) -> int | None:
    """The size of ``path`` if it is past ``limit`` (else None)."""
    if path is None or limit is None:
        return None
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    return size if size > limit else None


def describe_size(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


@record
class Outcome:
    """The final response of a request and what the callbacks did."""

    resp: Any
    declined_by: str | None = None
    raised: tuple[str, BaseException] | None = None
    log_path: str | None = None

    def with_log(self, log_path: str | None) -> "Outcome":
        return Outcome(resp=self.resp, declined_by=self.declined_by, raised=self.raised,
                       log_path=log_path)


def _unnamed_file():
    """A read-write file with no name, for swrk's stdout and stderr: what
    tempfile.TemporaryFile makes on Linux (O_TMPFILE), without importing
    tempfile (shutil, random, bz2, lzma: 5-10 ms on every checkpoint and
    restore). tempfile stays the fallback where /tmp cannot do O_TMPFILE."""
    try:
        fd = os.open("/tmp", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        import tempfile

        return tempfile.TemporaryFile(prefix="criu-swrk-")
    return os.fdopen(fd, "w+b")


class _Spawned:
    """What Swrk uses of ``subprocess.Popen`` (pid, returncode, poll, wait,
    kill), for a child started with ``os.posix_spawn``."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _reaped(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:       # reaped elsewhere: its status is lost
                self.returncode = 255
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reaped(os.WNOHANG)

    def wait(self) -> int:
        return self._reaped(0)

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 9)        # SIGKILL; our unreaped child: the pid is still ours
            except ProcessLookupError:
                pass


def _start(argv: list[str], *, pass_fds: tuple[int, ...], cwd: str | None, output: int,
           env: dict | None):
    """``argv`` started with stdin from /dev/null, stdout and stderr to
    ``output``, and of our descriptors only ``pass_fds`` open (as
    ``subprocess.Popen`` with close_fds does). With posix_spawn: importing
    subprocess (threading, selectors, signal, locale, warnings, contextlib)
    is ~3 ms of every checkpoint and restore. Popen where posix_spawn
    cannot do it as well: a working directory, or an environment with a
    PATH of its own (Popen looks the program up in that PATH)."""
    if cwd is not None or (env is not None and env.get("PATH") != os.environ.get("PATH")):
        import subprocess

        return subprocess.Popen(argv, pass_fds=pass_fds, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=output, stderr=output, env=env)
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, output, 1), (os.POSIX_SPAWN_DUP2, output, 2)]
    # dup2 of a descriptor onto itself clears its close-on-exec flag (POSIX
    # 2017; glibc since 2.29): how pass_fds reach the child. Every other
    # descriptor of ours without that flag is closed in the child.
    actions += [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in pass_fds if fd > 2]
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in pass_fds and fd != output:
            try:
                inheritable = os.get_inheritable(fd)
            except OSError:                 # listdir's own descriptor, now closed
                continue
            if inheritable:
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
    if output > 2 and output not in pass_fds and os.get_inheritable(output):
        actions.append((os.POSIX_SPAWN_CLOSE, output))
    import _signal

    spawn = os.posix_spawnp if os.sep not in argv[0] else os.posix_spawn
    # Python ignores SIGPIPE and SIGXFSZ; Popen's child gets them back (restore_signals).
    return _Spawned(spawn(argv[0], argv, os.environ if env is None else env, file_actions=actions,
                          setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ)))


class Swrk:
    """A running ``criu swrk``; ``close()`` always reaps it."""

    def __init__(self, options: SwrkOptions, *, action: str) -> None:
        self.options = options
        self._closed = False
        self._watch: list = []     # (log path, how to stop its writer) of the request
        self._output = _unnamed_file()
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        try:
            argv = [options.criu, "swrk", str(theirs.fileno())]
            # pass_fds makes exactly these inheritable in the child.
            self._proc = _start(argv, pass_fds=(theirs.fileno(), *options.pass_fds),
                                cwd=options.cwd, output=self._output.fileno(),
                                env={**os.environ, **dict(options.env)} if options.env else None)
        except OSError as err:
            ours.close()
            self._output.close()
            raise CriuError(action, f'cannot start "{options.criu} swrk": {err.strerror}',
                            errno=err.errno or 0) from err
        finally:
            theirs.close()
        self._sock = ours
        # A pidfd tells us swrk died even if one of its children (a page
        # server daemon) still holds its end of the socket open.
        self._pidfd = os.pidfd_open(self._proc.pid)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    @property
    def closed(self) -> bool:
        return self._closed

    def _output_path(self) -> str | None:
        if self._output.closed:
            return None
        self._output.flush()
        return f"/proc/self/fd/{self._output.fileno()}"

    def output_tail(self, lines: int = 15) -> tuple[str, ...]:
        """The last lines swrk wrote to stdout/stderr (before its log was set up)."""
        return read_tail(self._output_path(), lines=lines)

    def output_first_error(self) -> str | None:
        return first_error(self._output_path())

    # -- messages ---------------------------------------------------------

    def transact(self, req: Any, *, action: str, callbacks: dict[str, Callback],
                 log_path: str | None, watch: tuple[str, Callable[[], None]] | None = None
                 ) -> Outcome:
        """Send ``req``, answer notifications, return the final response.

        ``watch`` is another log to bound and how to stop what writes it
        (a page server waited for with wait_pid). Raises ``CriuError`` if
        swrk dies, times out, logs past ``max_log_bytes`` or talks nonsense.
        """
        self._watch = [(log_path, self.kill)] if log_path else []
        if watch is not None:
            self._watch.append(watch)
        from migrate.criu_rpc import _messages as rpc
        from migrate.criu_rpc._wire import DecodeError

        self._send(req, action=action, log_path=log_path)
        budget = self.options.timeout
        declined_by: str | None = None
        raised: tuple[str, BaseException] | None = None
        while True:
            started = time.monotonic()
            data, fd = self._receive(action=action, log_path=log_path, timeout=budget)
            if budget is not None:
                budget = max(budget - (time.monotonic() - started), 0.001)
            try:
                resp = rpc.criu_resp.decode(data)
            except DecodeError as err:
                if fd is not None:
                    os.close(fd)
                self.kill()
                raise self._error(action, f"cannot decode CRIU's answer: {err}", log_path) from err
            if resp.type != rpc.NOTIFY:
                if fd is not None:
                    os.close(fd)
                return Outcome(resp=resp, declined_by=declined_by, raised=raised)

            note = Notification(name=resp.notify.script,
                                pid=resp.notify.pid if resp.notify.has("pid") else None,
                                fd=fd)
            ok = True
            callback = callbacks.get(note.name)
            try:
                if callback is not None:
                    ok = callback(note) is not False
            except BaseException as exc:  # noqa: BLE001 - re-raised after CRIU answers
                ok = False
                if raised is None:
                    raised = (note.name, exc)
            finally:
                if fd is not None:
                    os.close(fd)
            if not ok and declined_by is None:
                declined_by = note.name
            answer = rpc.criu_req(type=rpc.NOTIFY, notify_success=ok)
            self._send(answer, action=action, log_path=log_path)

    def _send(self, msg: Any, *, action: str, log_path: str | None) -> None:
        try:
            self._sock.send(msg.encode())
        except OSError as err:
            self.close()
            raise self._error(action, f"criu swrk went away ({err.strerror})", log_path,
                              errno=err.errno or 0) from err

    def _receive(self, *, action: str, log_path: str | None,
                 timeout: float | None) -> tuple[bytes, int | None]:
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        poller.register(self._pidfd, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = self._watch if self.options.max_log_bytes is not None else ()
        while True:
            left = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if watch:
                left = int(WATCH_INTERVAL * 1000) if left is None else min(left, int(WATCH_INTERVAL * 1000))
            ready = {fd for fd, _ in poller.poll(left)}
            for path, stop in watch:
                size = log_too_big(path, self.options.max_log_bytes)
                if size is not None:
                    stop()
                    if stop != self.kill:
                        self.kill()
                    raise self._error(
                        action, f"CRIU's log {path} grew past {describe_size(self.options.max_log_bytes)} "
                        f"({describe_size(size)}; CRIU is probably looping): criu killed",
                        log_path)
            if self._sock.fileno() in ready:
                break
            if self._pidfd in ready:
                # Exited; a last message may still be queued.
                r, _, _ = select.select([self._sock], [], [], 0)
                if r:
                    break
                self.close()
                raise self._error(action, f"criu swrk {self._describe_exit()} without answering",
                                  log_path)
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                raise self._error(action, f"no answer from CRIU within {self.options.timeout:g} s "
                                  "(criu swrk killed)", log_path, errno=_errno.ETIMEDOUT)
        fds = array.array("i")
        try:
            data, ancdata, flags, _ = self._sock.recvmsg(_MAX_MESSAGE,
                                                         _socket.CMSG_SPACE(4 * fds.itemsize))
        except OSError as err:      # ECONNRESET: swrk killed with our answer unread
            self.close()
            raise self._error(action, f"criu swrk {self._describe_exit()} without answering "
                              f"({err.strerror})", log_path, errno=err.errno or 0) from err
        for level, kind, payload in ancdata:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        fd = fds[0] if fds else None
        for extra in fds[1:]:
            os.close(extra)
        if not data:
            if fd is not None:
                os.close(fd)
            self.close()
            raise self._error(action, f"criu swrk {self._describe_exit()} without answering",
                              log_path)
        if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
            if fd is not None:
                os.close(fd)
            self.kill()
            raise self._error(action, "CRIU's answer was truncated", log_path)
        return data, fd

    # -- errors and teardown ----------------------------------------------

    def _describe_exit(self) -> str:
        code = self._proc.poll()
        if code is None:
            return "closed the connection"
        if code < 0:
            return f"was killed by signal {-code}"
        return f"exited with status {code}"

    def _error(self, action: str, message: str, log_path: str | None, *, errno: int = 0) -> CriuError:
        return make_error(action, message, errno=errno, log_path=log_path, swrk=self)

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self.close()

    def close(self) -> None:
        """Close the socket and reap swrk (SIGKILL after ``kill_after`` s)."""
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        try:
            # The pidfd wakes us the moment swrk exits: Popen.wait(timeout)
            # polls with sleeps that double up to 50 ms, several ms late
            # here after every request.
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            if not poller.poll(int(self.options.kill_after * 1000)):
                self._proc.kill()
            self._proc.wait()
        finally:
            os.close(self._pidfd)

    def discard_output(self) -> None:
        self._output.close()


def make_error(action: str, message: str, *, errno: int = 0, log_path: str | None,
               swrk: Swrk | None = None) -> CriuError:
    """A ``CriuError`` with the log tail, or swrk's own output when the log is
    empty (CRIU writes to stderr until the log file is set up)."""
    tail = read_tail(log_path)
    if not tail and swrk is not None:
        tail = swrk.output_tail()
    if log_path is not None and not os.path.exists(log_path):
        log_path = None
    return CriuError(action, message, errno=errno, log_path=log_path, log_tail=tail,
                     error_lines=quote_errors(log_path))
