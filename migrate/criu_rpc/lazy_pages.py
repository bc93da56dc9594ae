"""The lazy-pages daemon, which CRIU's RPC cannot start.

``criu_req_type`` has no lazy-pages request (CRIU 4.2: rpc.proto), so the
daemon is ``criu lazy-pages`` run from the command line. A post-copy
restore is, in order:

1. source: ``dump`` with ``lazy_pages=True`` and ``ps=PageServer(address,
   port)``; CRIU dumps everything but the memory, then serves the memory on
   that port (a "status-ready" notification or ``status_fd`` byte says it
   listens) and does not answer until every page is gone;
2. destination, with the images copied: ``start_lazy_pages`` below, pointed
   at that address and port, in the work directory the restore will use
   (they meet on ``lazy-pages.socket`` there);
3. destination: ``restore`` with ``lazy_pages=True`` and the same
   ``work_dir``; the tree runs at once, faulting pages in via userfaultfd;
4. the daemon exits once all pages are copied; the source dump then answers.

The daemon is our child; ``LazyPages.close()`` kills and reaps it if it is
still running. A watcher thread kills it when it runs past its deadline or
its log past its size limit (as ``criu swrk`` runs are bounded); ``wait()``
then says which limit and where the log is.

``Session.dump`` calls ``check_lazy_dump_limits()`` before a lazy dump: a
lazy dump needs to size a pipe past the default ``fs.pipe-max-size`` (1 MiB),
which only CAP_SYS_RESOURCE may do. Without either, the dump fails *after*
the restore has started ("page-pipe: splice: -1: Bad file descriptor" or
"tee: ... Operation not permitted"), even for a tiny process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import subprocess
import time
from collections.abc import Iterator

from migrate._record import record
TYPE_CHECKING = False   # typing costs ~3 ms to import; only checkers need it
if TYPE_CHECKING:
    from typing import IO

from migrate.criu_rpc._log import read_tail
from migrate.criu_rpc.options import LogLevel, PageServer, Tls
from migrate.errors import CriuError, KernelError, UnsupportedError, UsageError

__all__ = ["LazyPagesOptions", "LazyPages", "lazy_pages_argv", "start_lazy_pages",
           "LAZY_DUMP_PIPE_SIZE", "check_lazy_dump_limits", "raised_pipe_max_size",
           "uffd_noncoop"]

# pipe_read_dest_init() in criu/page-pipe.c sets its tee pipe to PIPE_MAX_SIZE
# pages = 8 pages of struct pipe_buffer (40 bytes) = 819 pages; the kernel
# rounds a pipe size up to a power of two pages (round_pipe_size), so 1024
# pages. Measured here with a 10 MiB and a 256 MiB process: 4 MiB works,
# 2 MiB fails.
LAZY_DUMP_PIPE_SIZE = 4 << 20
_CAP_SYS_RESOURCE = 24


@record
class LazyPagesOptions:
    """``criu lazy-pages`` options. ``page_server`` is the source's lazy dump
    (``None``: pages come from ``images_dir``, for a local lazy restore): its
    address and port, or ``fd``, a socket connected to it already (passed to
    the daemon as ``--ps-socket``)."""

    images_dir: str
    work_dir: str | None = None
    page_server: PageServer | None = None
    tls: Tls | None = None
    log_file: str = "lazy-pages.log"
    log_level: LogLevel = LogLevel.DEBUG

    def __post_init__(self) -> None:
        if not self.images_dir:
            raise UsageError("criu lazy-pages: images_dir is required")
        if "/" in self.log_file or not self.log_file:
            raise UsageError(f'criu lazy-pages: log_file "{self.log_file}" must be a bare name')
        if self.page_server is not None and self.page_server.fd is None:
            if self.page_server.address is None or self.page_server.port == 0:
                raise UsageError("criu lazy-pages: the page server needs an address and a port, "
                                 "or a connected socket (ps.fd)")
        if self.tls is not None and self.page_server is None:
            raise UsageError("criu lazy-pages: tls needs a page server")


def check_lazy_dump_limits(*, proc_root: str = "/proc") -> None:
    """Raise ``UnsupportedError`` naming the fix if a lazy dump would fail
    because pipes cannot grow (see the module docstring)."""
    try:
        with open(f"{proc_root}/sys/fs/pipe-max-size") as f:
            size = int(f.read())
        with open(f"{proc_root}/self/status") as f:
            caps = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    except (OSError, ValueError) as err:
        raise UnsupportedError(f"cannot read pipe limits under {proc_root}: {err}") from err
    if size >= LAZY_DUMP_PIPE_SIZE or caps & (1 << _CAP_SYS_RESOURCE):
        return
    raise UnsupportedError(
        f"lazy pages: fs.pipe-max-size is {size} and CAP_SYS_RESOURCE is missing; a lazy "
        f"dump needs pipes of {LAZY_DUMP_PIPE_SIZE} bytes "
        f"(run: sysctl fs.pipe-max-size={LAZY_DUMP_PIPE_SIZE})")


# userfaultfd(2) by machine (the generic table's number elsewhere), and what
# CRIU's lazy restore needs of it (NEED_UFFD_API_FEATURES, criu/uffd.c:
# EVENT_FORK | EVENT_REMAP | EVENT_REMOVE | EVENT_UNMAP; uapi userfaultfd.h).
_NR_USERFAULTFD = {"x86_64": 323, "i686": 374, "i386": 374, "ppc64le": 364, "ppc64": 364,
                   "s390x": 355, "aarch64": 282, "riscv64": 282, "loongarch64": 282}
_UFFD_API = 0xAA
_UFFDIO_API = 0xC018AA3F        # _IOWR(0xAA, 0x3F, struct uffdio_api), 24 bytes
_UFFD_NONCOOP = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6)


def uffd_noncoop() -> bool:
    """Whether this process can open a userfaultfd with the non-cooperative
    events a lazy restore needs (what `criu check --feature uffd-noncoop`
    asks, without starting CRIU). False when the kernel, a seccomp filter
    or the machine's syscall table says no."""
    import ctypes
    import fcntl
    import struct

    nr = _NR_USERFAULTFD.get(os.uname().machine)
    if nr is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(nr, os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        return False
    try:
        api = bytearray(struct.pack("QQQ", _UFFD_API, 0, 0))
        fcntl.ioctl(fd, _UFFDIO_API, api, True)
        features = struct.unpack("QQQ", api)[1]
    except OSError:
        return False
    finally:
        os.close(fd)
    return features & _UFFD_NONCOOP == _UFFD_NONCOOP


def lazy_pages_argv(options: LazyPagesOptions, *, criu: str = "criu",
                    status_fd: int | None = None) -> list[str]:
    """The command line for ``options`` (pure)."""
    argv = [criu, "lazy-pages", "--images-dir", options.images_dir]
    if options.work_dir is not None:
        argv += ["--work-dir", options.work_dir]
    argv += ["--log-file", options.log_file, f"-v{int(options.log_level)}"]
    if status_fd is not None:
        argv += ["--status-fd", str(status_fd)]
    if options.page_server is not None and options.page_server.fd is not None:
        # A socket connected already (and inherited): CRIU's --ps-socket.
        argv += ["--page-server", "--ps-socket", str(options.page_server.fd)]
    elif options.page_server is not None:
        argv += ["--page-server", "--address", options.page_server.address,
                 "--port", str(options.page_server.port)]
    if options.tls is not None:
        argv.append("--tls")
        for name in ("cacert", "cacrl", "cert", "key"):
            value = getattr(options.tls, name)
            if value is not None:
                argv += [f"--tls-{name}", value]
        if options.tls.no_cn_verify:
            argv.append("--tls-no-cn-verify")
    return argv


class LazyPages:
    """A running ``criu lazy-pages``; a context manager that reaps it."""

    def __init__(self, proc: subprocess.Popen, log_path: str, output: IO[bytes],
                 ready_fd: int = -1) -> None:
        self._proc = proc
        self.log_path = log_path
        self._output = output
        self.breach: str | None = None      # set when the watcher killed it
        self._ready_fd = ready_fd           # until wait_ready() (start_lazy_pages(wait=False))

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until it listens for the restore (at once if it already
        did). Raises ``CriuError`` (with the log tail) if it exits or does
        not get ready within ``timeout`` seconds."""
        if self._ready_fd < 0:
            return
        try:
            _wait_ready(self, self._ready_fd, timeout)
        finally:
            os.close(self._ready_fd)
            self._ready_fd = -1

    def watch(self, deadline: float | None, max_log_bytes: int | None) -> None:
        """Kill the daemon past ``deadline`` seconds or ``max_log_bytes`` of log."""
        if deadline is None and max_log_bytes is None:
            return
        import threading

        from migrate.criu_rpc._swrk import WATCH_INTERVAL, describe_size, log_too_big

        end = None if deadline is None else time.monotonic() + deadline

        def run() -> None:
            while self._proc.poll() is None:
                size = log_too_big(self.log_path, max_log_bytes)
                if size is not None:
                    self.breach = (f"its log grew past {describe_size(max_log_bytes)} "
                                   f"({describe_size(size)}; CRIU is probably looping): killed")
                elif end is not None and time.monotonic() > end:
                    self.breach = f"still running after {deadline:g} s: killed"
                if self.breach:
                    self._proc.kill()
                    return
                time.sleep(WATCH_INTERVAL)

        threading.Thread(target=run, name="lazy-pages-watch", daemon=True).start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> None:
        """Wait until all pages are copied and the daemon exits.

        Raises ``CriuError`` if it failed or is still running after ``timeout``.
        """
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise CriuError("lazy-pages", f"still running after {timeout:g} s",
                            log_path=self.log_path, log_tail=read_tail(self.log_path)) from err
        if code != 0:
            raise CriuError("lazy-pages", self.breach or _describe(code), log_path=self.log_path,
                            log_tail=read_tail(self.log_path) or _output_tail(self._output))

    def close(self) -> None:
        """Kill the daemon if it still runs, and reap it."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._output.close()
        if self._ready_fd >= 0:
            os.close(self._ready_fd)
            self._ready_fd = -1

    def __enter__(self) -> "LazyPages":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_lazy_pages(options: LazyPagesOptions, *, criu: str = "criu",
                     timeout: float = 30.0, deadline: float | None = None,
                     max_log_bytes: int | None = None, wait: bool = True) -> LazyPages:
    """Start ``criu lazy-pages`` and wait until it listens for the restore
    (``wait=False``: return at once; ``LazyPages.wait_ready`` waits, so the
    caller can start the restore's CRIU meanwhile: each takes ~5-10 ms to
    start here). It is killed past ``deadline`` seconds or
    ``max_log_bytes`` of log (defaults: those of a ``criu swrk`` run; see
    ``SwrkOptions``).

    Raises ``CriuError`` (with the log tail) if it exits or does not get
    ready within ``timeout`` seconds.
    """
    from migrate.criu_rpc._swrk import DEFAULT_MAX_LOG_BYTES, DEFAULT_TIMEOUT

    work_dir = options.work_dir or options.images_dir
    log_path = os.path.join(os.path.abspath(work_dir), options.log_file)
    import tempfile   # here: criu_rpc's package import must not pay for it (~5 ms)

    output = tempfile.TemporaryFile(prefix="criu-lazy-pages-")
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            ps_fd = options.page_server.fd if options.page_server is not None else None
            proc = subprocess.Popen(lazy_pages_argv(options, criu=criu, status_fd=ready_w),
                                    pass_fds=(ready_w,) if ps_fd is None else (ready_w, ps_fd),
                                    stdin=subprocess.DEVNULL,
                                    stdout=output, stderr=output)
        except OSError as err:
            output.close()
            raise CriuError("lazy-pages", f'cannot start "{criu} lazy-pages": {err.strerror}',
                            errno=err.errno or 0) from err
        os.close(ready_w)
        ready_w = -1
        daemon = LazyPages(proc, log_path, output, ready_fd=ready_r)
        ready_r = -1
        if wait:
            try:
                daemon.wait_ready(timeout)
            except BaseException:
                daemon.close()
                raise
        daemon.watch(DEFAULT_TIMEOUT if deadline is None else deadline,
                     DEFAULT_MAX_LOG_BYTES if max_log_bytes is None else max_log_bytes)
        return daemon
    finally:
        if ready_r >= 0:
            os.close(ready_r)
        if ready_w >= 0:
            os.close(ready_w)


def _wait_ready(daemon: LazyPages, ready_r: int, timeout: float) -> None:
    # status_ready() in criu/util.c writes one byte once lazy-pages.socket listens.
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CriuError("lazy-pages", f"not ready after {timeout:g} s",
                            log_path=daemon.log_path, log_tail=read_tail(daemon.log_path))
        r, _, _ = select.select([ready_r], [], [], left)
        if not r:
            continue
        if os.read(ready_r, 1):
            return
        code = daemon._proc.wait()
        raise CriuError("lazy-pages", f"{_describe(code)} before it was ready",
                        log_path=daemon.log_path,
                        log_tail=read_tail(daemon.log_path) or _output_tail(daemon._output))


def _describe(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"


def _output_tail(output: IO[bytes]) -> tuple[str, ...]:
    fileno = getattr(output, "fileno", None)
    if fileno is None or getattr(output, "closed", True):
        return ()
    return read_tail(f"/proc/self/fd/{fileno()}")


@contextlib.contextmanager
def raised_pipe_max_size(size: int = LAZY_DUMP_PIPE_SIZE, *,
                         proc_root: str = "/proc") -> Iterator[int | None]:
    """Raise ``fs.pipe-max-size`` to ``size`` for the block when it is lower,
    and put the old value back after it, however it ends. Yields the old
    value (None: it was large enough, nothing was written).

    The consequence, while raised: any process on the host, unprivileged
    ones included, may grow each of its pipes to ``size`` bytes of pinned
    kernel memory. Raises ``KernelError`` when the sysctl cannot be read or
    written."""
    path = f"{proc_root}/sys/fs/pipe-max-size"
    try:
        with open(path) as f:
            old = int(f.read())
    except (OSError, ValueError) as err:
        raise KernelError("read", path, getattr(err, "errno", None) or errno.EIO) from err
    if old >= size:
        yield None
        return
    _write_sysctl(path, size)
    try:
        yield old
    finally:
        _write_sysctl(path, old)


def _write_sysctl(path: str, value: int) -> None:
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as err:
        raise KernelError("write", path, err.errno or errno.EIO,
                          f"cannot set it to {value}") from err
