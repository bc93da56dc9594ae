"""Keep the link busy while a lazy-pages daemon pulls a container's memory.

CRIU's lazy-pages daemon asks the source's page server for one range of a
task's memory at a time and waits for it before it asks for the next
(criu/uffd.c handle_requests: a task's next background request goes out
once its last one is in). The ranges start at 64 KiB, grow by 64 KiB per
request up to 4 MiB, and drop back to 64 KiB at every page fault, which a
busy container raises all the time. Over a real link the wire then idles
for a round trip per range: runc's manual lazy migration and ours moved
1 GiB at ~82 % of a 1 Gbit/s link.

``PrefetchRelay`` sits between the daemon (its ``--ps-socket``) and the
stream to the source. It knows the ranges the daemon will ask for (the
PE_LAZY entries of the pagemap images, which is where collect_iovs() takes
them from), asks the source for them itself, a few MiB in flight, each
task's by address as the daemon goes, and answers the daemon from what came
in. A request for pages not asked for yet (a fault ahead of the prefetch)
goes to the source at once, and the prefetch skips them later.

Why the answers are right:
- the source's tasks stay frozen until the daemon is done, so a page taken
  early is the page the daemon would have got;
- the prefetch asks only for pages of PE_LAZY entries: the page server
  fails a request for any other page, and the dump with it. It serves a
  page more than once (page_pipe_read tee()s), so a range asked twice is
  only bytes lost;
- the daemon takes answers in the order it asked (page_server_async_read
  reads the first pending request), each with at most the pages it asked
  for and possibly fewer (page_server_read; uffd_io_complete puts the rest
  back on its list), so the relay answers in order, from one cached range;
- the daemon's closing request (FORCE_CLOSE with --ps-socket) goes to the
  source behind every request of ours, and the source's 32-bit status
  comes back to the daemon.

Should either side fail or end early, the relay shuts both down: the daemon
fails (and the container it serves is killed, checkpoint/restore.py), and
the source sees its stream end before the daemon's close (so its dump fails
and keeps the tasks, migration/_relay.py). The restore runs it in a process
of its own (cli/lazy_relay.py), which outlives the agent that started it.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import errno
import glob
import logging
import os
import select
import socket
import sys
import threading

__all__ = ["PrefetchRelay", "lazy_ranges", "connected_pair"]

_log = logging.getLogger("migrate.criu_rpc.lazy_prefetch")

PAGE = os.sysconf("SC_PAGE_SIZE")
# criu/page-xfer.c: struct page_server_iov {u32 cmd; u64 nr_pages, vaddr,
# dst_id}: 32 bytes, host byte order, the command in the low 16 bits.
PS_IOV_SIZE = 32
PS_CMD_MASK = 0xFFFF
PS_IOV_GET = 7
PS_IOV_CLOSE = 0x1023
PS_IOV_FORCE_CLOSE = 0x1024
_PE_LAZY = 1 << 1          # criu/include/pagemap.h

CHUNK = 1 << 20            # one prefetch request
IN_FLIGHT = 4 << 20        # asked for and not in yet: a few ms of a fast link
AHEAD = 64 << 20           # in flight and waiting for the daemon, at most


def lazy_ranges(images_dir: str) -> list[tuple[int, int, int]]:
    """(dst_id, first page's address, pages) of every PE_LAZY pagemap entry
    in ``images_dir``, each task's by address, tasks by pid. ``dst_id`` is
    what the daemon asks the page server with: the task's pid in the
    images (pagemap-PID.img). Raises MigrateError for a corrupt image."""
    from migrate.criu_rpc.images import read_entries

    ranges = []
    for path in glob.glob(os.path.join(images_dir, "pagemap-*.img")):
        pid = os.path.basename(path)[len("pagemap-"):-len(".img")]
        if not pid.isdigit():
            continue            # pagemap-shmem-*: never lazy
        for e in read_entries(path, "PAGEMAP")[1:]:
            if e.flags & _PE_LAZY:
                pages = e.nr_pages if e.has("nr_pages") else e.compat_nr_pages
                if pages:
                    ranges.append((int(pid), e.vaddr, pages))
    ranges.sort()
    return ranges


def connected_pair(address: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """Two connected loopback TCP sockets (the daemon sets TCP_CORK and
    TCP_NODELAY on its page-server socket, and warns on every request when
    it is not TCP). The listener takes only the connection our own socket
    made. Raises OSError."""
    from migrate.criu_rpc.page_stream import listen_on

    with listen_on(address) as listener:
        near = socket.create_connection(listener.getsockname()[:2], timeout=5)
        try:
            listener.settimeout(5)
            while True:
                far, peer = listener.accept()
                if peer[:2] == near.getsockname()[:2]:
                    break
                far.close()
        except BaseException:
            near.close()
            raise
    for s in (near, far):
        s.settimeout(None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return near, far


class _Range:
    """Pages of one task that came in from the source, waiting for the
    daemon in a pipe (the kernel holds them: no copy through Python; a part
    is read with tee(), which leaves the pipe whole)."""

    __slots__ = ("start", "end", "r", "w", "data", "left")

    def __init__(self, start: int, size: int) -> None:
        self.start, self.end = start, start + size
        self.r = self.w = -1
        self.data: memoryview | None = None     # when no pipe could hold it
        self.left = size // PAGE      # pages not handed to the daemon yet

    def fill(self, src: int, slots: int) -> bool:
        """Read the range from socket ``src``; False at EOF. Into a pipe of
        ``slots`` bytes of slots: a socket splices each received fragment
        into a slot of its own (1448 bytes of a 4 KiB slot at MTU 1500), so
        the pipe is sized at four times the range; should it fill all the
        same (smaller fragments, or a pipe the kernel would not grow), the
        range is read into memory instead."""
        size = self.end - self.start
        self.r, self.w, _ = _pipe(slots)
        left = size
        waited = False
        while left:
            try:
                k = os.splice(src, self.w, left, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                # The pipe is full, or (a socket other than TCP takes the
                # flag for itself) nothing has come in yet: refused again
                # once the socket is readable, it is the pipe.
                if waited:
                    break
                select.select([src], [], [])
                waited = True
                continue
            if k == 0:
                return False
            left -= k
            waited = False
        if not left:
            return True
        data = bytearray(size)
        view = memoryview(data)
        have = size - left
        got = 0
        while got < have:
            got += os.readv(self.r, [view[got:have]])
        self.close()
        while got < size:
            k = os.readv(src, [view[got:]])
            if k == 0:
                return False
            got += k
        self.data = view
        return True

    def close(self) -> None:
        for fd in (self.r, self.w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.r = self.w = -1


class PrefetchRelay:
    """Relay between the daemon's socket (``daemon``) and the stream to the
    source (``source``), prefetching ``ranges`` (see ``lazy_ranges``; or a
    function returning them, called in the relay's thread). It
    owns both sockets. ``start()`` runs it in three threads; ``join()``
    waits for the end; ``error`` says why it failed, if it did.

    ``control``: a descriptor the restore writes to, one byte at a time.

    - b"g" (go): the container runs. Until then the relay sends the
      source nothing but single pages (a fault, should the restore touch
      lazy memory): CRIU's daemon starts its background pull as soon as the
      restore is done, while the tasks are still held for the migration's
      commit, and the pull's CPU (both ends, every core of a small host)
      is downtime until they resume.
    - b"1" / b"0": whether the daemon exited 0. The daemon sends its close
      even when it failed (cr_lazy_pages() calls
      disconnect_from_page_server() whatever handle_requests() returned),
      and the source takes that close for success: its dump ends and kills
      the tasks, whose memory the destination then lacks. So the relay
      answers the daemon's close itself, and waits: b"1" passes the close
      on to the source; b"0" ends the stream without it, so the source's
      dump fails and keeps its tasks.
    - EOF (whoever would say is gone): go, and the close goes on, as
      without ``control``."""

    def __init__(self, daemon: socket.socket, source: socket.socket,
                 ranges, *, control: int | None = None, chunk: int = CHUNK,
                 in_flight: int = IN_FLIGHT, ahead: int = AHEAD) -> None:
        for s in (daemon, source):
            s.settimeout(None)
        self.daemon, self.source = daemon, source
        self.error: BaseException | None = None
        self.stats = collections.Counter()
        # Each range is read into a pipe of its own, so a range is at most
        # what a pipe may hold (fs.pipe-max-size, 1 MiB by default, unless
        # CAP_SYS_RESOURCE).
        self._scratch = _pipe(4 * chunk)
        self._chunk = max(PAGE, min(chunk, self._scratch[2] // 4) // PAGE * PAGE)
        self._null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self._in_flight_max, self._ahead_max = in_flight, ahead
        self._ranges = ranges       # a list, or what returns one (read in a thread)
        self._todo = collections.deque()             # (dst_id, start, pages) not asked yet
        self._asked = collections.deque()            # the daemon's requests, oldest first
        self._sent = collections.deque()             # ours to the source: (dst_id, start, end, demand)
        self._cache: dict[int, tuple[list[int], dict[int, _Range]]] = {}
        self._demanded: set[tuple[int, int]] = set()  # pages the daemon asked before the prefetch
        self._in_flight = 0
        self._cached = 0
        self._status: bytes | None = None            # the source's answer to the close
        self._close: bytes | None = None             # the daemon's close request
        self._close_sent = False
        self._control = control          # see the class docstring
        self._go = control is None
        self._verdict: bytes | None = None   # b"1", b"0", or b"" (EOF)
        self._daemon_closed = False     # the daemon's close answered on the source's behalf
        self._verdict_ok = control is None
        self._ranges_read = False
        self._done = False
        self._quiet = False             # ended before it began: nothing to log
        self._running = 3
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._guard, args=(fn,), name=name, daemon=True)
                         for fn, name in ((self._read_daemon, "prefetch-asks"),
                                          (self._read_source, "prefetch-pages"),
                                          (self._serve, "prefetch-serve"))]

    def start(self) -> "PrefetchRelay":
        for t in self._threads:
            t.start()
        if self._control is not None:
            # Not joined: it may wait for its writer after the relay ended.
            threading.Thread(target=self._read_control, name="prefetch-control",
                             daemon=True).start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        for t in self._threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def abort(self, error: BaseException | None = None) -> None:
        """Cut both sides; the threads end on their own."""
        with self._cond:
            if error is not None and self.error is None and not self._done:
                self.error = error
            self._done = True
            self._cond.notify_all()
        for s in (self.daemon, self.source):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    # -- the threads ------------------------------------------------------------

    def _guard(self, fn) -> None:
        try:
            fn()
        except (OSError, ValueError) as err:
            if not self._done and not self._quiet:
                _log.warning("lazy pages prefetch: %s", err)
            self.abort(err)
        except BaseException as err:    # a bug here must not leave the daemon waiting
            _log.exception("lazy pages prefetch failed")
            self.abort(err)
        finally:
            with self._cond:
                self._running -= 1
                last = self._running == 0
            if last:
                for s in (self.daemon, self.source):
                    with contextlib.suppress(OSError):
                        s.close()
                with self._cond:
                    for _, ranges in self._cache.values():
                        for rng, _ in ranges.values():
                            rng.close()
                    self._cache.clear()
                for fd in (*self._scratch[:2], self._null):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                if not self._quiet:
                    _log.info("lazy pages: %d pages prefetched, %d asked for on demand, "
                              "%d answers to the daemon%s", self.stats["prefetched"],
                              self.stats["demanded"], self.stats["answers"],
                              f" (failed: {self.error})" if self.error else "")

    def _read_daemon(self) -> None:
        """The daemon's requests, into ``_asked``."""
        while True:
            head = _recv_exactly(self.daemon, PS_IOV_SIZE)
            if head is None:
                if self._close is None and not self.stats["asks"]:
                    # A restore that failed or was called off before it
                    # started the daemon: nothing to say.
                    self._quiet = True
                    raise OSError(errno.ECONNABORTED, "no lazy-pages daemon came")
                if self._close is None:
                    raise OSError(errno.ECONNABORTED, "the lazy-pages daemon closed its stream "
                                  "before it had every page")
                return
            cmd = int.from_bytes(head[:4], sys.byteorder) & PS_CMD_MASK
            if cmd == PS_IOV_GET:
                nr, vaddr, dst_id = (int.from_bytes(head[i:i + 8], sys.byteorder)
                                     for i in (8, 16, 24))
                if nr == 0:
                    raise ValueError("the lazy-pages daemon asked for 0 pages")
                with self._cond:
                    self._asked.append((dst_id, vaddr, vaddr + nr * PAGE, bytes(head)))
                    self.stats["asks"] += 1
                    self._cond.notify_all()
            elif cmd in (PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE):
                with self._cond:
                    self._close = bytes(head)
                    self._cond.notify_all()
                return
            else:
                raise ValueError(f"the lazy-pages daemon sent command {cmd:#x}, "
                                 "which a lazy restore does not send")

    def _read_source(self) -> None:
        """The source's answers, in the order of ``_sent``, into the cache."""
        while True:
            with self._cond:
                while not self._sent and not self._close_sent and not self._done:
                    self._cond.wait()
                if self._done:
                    return
                if not self._sent:          # the close went out behind every request
                    status_next = True
                else:
                    status_next = False
                    dst_id, start, end, demand = self._sent[0]
            if status_next:
                status = _recv_exactly(self.source, 4)
                if status is None:
                    raise OSError(errno.ECONNABORTED, "the source closed the page stream "
                                  "without answering the daemon's close")
                with self._cond:
                    self._status = bytes(status)
                    self._cond.notify_all()
                return
            head = _recv_exactly(self.source, PS_IOV_SIZE)
            if head is None:
                raise OSError(errno.ECONNABORTED, "the source closed the page stream")
            nr, vaddr, got_id = (int.from_bytes(head[i:i + 8], sys.byteorder) for i in (8, 16, 24))
            if vaddr != start or got_id != dst_id or nr == 0 or start + nr * PAGE > end:
                raise ValueError(f"the page server answered pages {vaddr:#x}+{nr} of task "
                                 f"{got_id} to a request for {start:#x}+{(end - start) // PAGE} "
                                 f"of task {dst_id}")
            size = nr * PAGE
            rng = _Range(start, size)
            try:
                if not rng.fill(self.source.fileno(), self._scratch[2]):
                    raise OSError(errno.ECONNABORTED, "the source closed the page stream "
                                  "in the middle of a range")
            except BaseException:
                rng.close()
                raise
            with self._cond:
                self._sent.popleft()
                self._in_flight -= end - start
                self._store(dst_id, rng, head)
                self.stats["bytes in"] += size
                if start + size < end and not demand:
                    # Cut short (the page server's range ended first): the
                    # rest is asked again, next.
                    self._todo.appendleft((dst_id, start + size, (end - start - size) // PAGE))
                self._cond.notify_all()

    def _serve(self) -> None:
        """Answer the daemon in order; keep the prefetch going."""
        while True:
            with self._cond:
                while True:
                    if self._done:
                        return
                    if not self._ranges_read and self._go and (self._asked or self._close):
                        # Not before the container runs (``control``) and the
                        # daemon asks: until then every ms of CPU is downtime.
                        self._ranges_read = True
                        answer = _READ_RANGES
                        break
                    self._prefetch()
                    answer = self._next_answer()
                    if answer is not None:
                        break
                    self._cond.wait()
            if answer is _READ_RANGES:
                self._read_ranges()     # outside the lock: it reads the images
                continue
            if answer is _CLOSED:
                return
            if answer is _AWAIT_VERDICT:
                self._await_verdict()
                continue
            head, rng, offset, size, last = answer
            self.daemon.sendall(head)
            if rng.data is not None:
                self.daemon.sendall(rng.data[offset:offset + size])
                continue
            # The range's first offset + size bytes into the scratch pipe
            # (tee: rng keeps them), the offset dropped, the rest out.
            sr, sw, _ = self._scratch
            if _tee(rng.r, sw, offset + size) != offset + size:
                raise OSError(errno.EIO, "tee() of a cached range came up short")
            if offset and not _splice_exactly(sr, self._null, offset):
                raise OSError(errno.EIO, "cannot drop the head of a cached range")
            if not _splice_exactly(sr, self.daemon.fileno(), size):
                raise OSError(errno.ECONNABORTED, "the daemon's stream ended")
            if last:
                rng.close()

    def _read_ranges(self) -> None:
        ranges = self._ranges
        if callable(ranges):
            try:
                ranges = ranges()
            except Exception as err:    # only slower without: every page is then asked for
                _log.warning("lazy pages prefetch: no ranges to prefetch: %s", err)
                ranges = []
        with self._cond:
            self._todo.extend(ranges)

    def _read_control(self) -> None:
        try:
            while True:
                try:
                    said = os.read(self._control, 1)
                except OSError:
                    said = b""
                with self._cond:
                    self._go = True         # a verdict or EOF: nothing left to wait for
                    if said != b"g":
                        self._verdict = said
                    self._cond.notify_all()
                if said != b"g":
                    return
        finally:
            os.close(self._control)

    def _await_verdict(self) -> None:
        self.daemon.sendall(bytes(4))       # status 0: the daemon exits, and says how
        with self._cond:
            while self._verdict is None and not self._done:
                self._cond.wait()
            said = self._verdict
        if said == b"0":
            raise OSError(errno.ECONNABORTED, "the lazy-pages daemon failed: the source "
                          "keeps its tasks")
        with self._cond:
            self._verdict_ok = True
            self._cond.notify_all()

    # -- under the lock ------------------------------------------------------------

    def _next_answer(self):
        """What to send the daemon now (a list of buffers, or ``_CLOSED``
        after the status), or None: nothing yet."""
        if self._asked:
            dst_id, start, end, head = self._asked[0]
            hit = self._cached_at(dst_id, start)
            if hit is not None:
                self._asked.popleft()
                rng, head_in = hit
                stop = min(end, rng.end)
                pages = (stop - start) // PAGE
                rng.left -= pages
                last = rng.left <= 0
                if last:
                    self._drop(dst_id, rng)     # closed by the caller, once served
                self.stats["answers"] += 1
                head = (bytes(head_in[:8]) + pages.to_bytes(8, sys.byteorder)
                        + start.to_bytes(8, sys.byteorder) + dst_id.to_bytes(8, sys.byteorder))
                return head, rng, start - rng.start, stop - start, last
            if not self._coming(dst_id, start) and (self._go or end - start <= PAGE):
                # Not asked for yet: at once (up to what is in or coming
                # already), and never again by the prefetch.
                end = self._next_known(dst_id, start, min(end, start + self._chunk))
                self._send(dst_id, start, end, demand=True)
                self.stats["demanded"] += (end - start) // PAGE
                for page in range(start, end, PAGE):
                    self._demanded.add((dst_id, page))
            return None
        if self._close is None:
            return None
        if self._control is not None and not self._daemon_closed:
            self._daemon_closed = True
            return _AWAIT_VERDICT
        if not self._verdict_ok:
            return None
        if not self._sent and not self._close_sent:
            self._close_sent = True
            self.source.sendall(self._close)
            self._cond.notify_all()     # the source reader waits for the status now
            return None
        if self._status is not None:
            if self._control is None:
                self.daemon.sendall(self._status)
            self._done = True
            return _CLOSED
        return None

    def _prefetch(self) -> None:
        if not self._go or self._close is not None:
            return
        while self._todo and self._in_flight < self._in_flight_max \
                and self._in_flight + self._cached < self._ahead_max:
            dst_id, start, pages = self._todo.popleft()
            # Skip the pages the daemon asked for already; take up to a chunk.
            while pages and (dst_id, start) in self._demanded:
                start += PAGE
                pages -= 1
            if not pages:
                continue
            take = 1
            limit = min(pages, self._chunk // PAGE)
            while take < limit and (dst_id, start + take * PAGE) not in self._demanded:
                take += 1
            if take < pages:
                self._todo.appendleft((dst_id, start + take * PAGE, pages - take))
            self._send(dst_id, start, start + take * PAGE, demand=False)
            self.stats["prefetched"] += take

    def _send(self, dst_id: int, start: int, end: int, *, demand: bool) -> None:
        request = (PS_IOV_GET.to_bytes(4, sys.byteorder) + bytes(4)
                   + ((end - start) // PAGE).to_bytes(8, sys.byteorder)
                   + start.to_bytes(8, sys.byteorder) + dst_id.to_bytes(8, sys.byteorder))
        self.source.sendall(request)    # 32 bytes: the source reads them at once
        self._sent.append((dst_id, start, end, demand))
        self._in_flight += end - start
        self._cond.notify_all()

    def _next_known(self, dst_id: int, start: int, end: int) -> int:
        """``end``, or the first address after ``start`` in or coming, if sooner."""
        starts, _ = self._cache.get(dst_id, ((), None))
        i = bisect.bisect_right(starts, start)
        if i < len(starts):
            end = min(end, starts[i])
        for d, s, _, _ in self._sent:
            if d == dst_id and start < s < end:
                end = s
        return end

    def _coming(self, dst_id: int, address: int) -> bool:
        return any(d == dst_id and s <= address < e for d, s, e, _ in self._sent)

    def _cached_at(self, dst_id: int, address: int):
        starts, ranges = self._cache.get(dst_id, ((), None))
        i = bisect.bisect_right(starts, address) - 1
        if i < 0:
            return None
        rng, head = ranges[starts[i]]
        return (rng, head) if address < rng.end else None

    def _store(self, dst_id: int, rng: _Range, head: bytes) -> None:
        starts, ranges = self._cache.setdefault(dst_id, ([], {}))
        if rng.start in ranges:
            rng.close()         # the same pages again (a task's memory is frozen)
            return
        bisect.insort(starts, rng.start)
        ranges[rng.start] = (rng, head)
        self._cached += rng.end - rng.start

    def _drop(self, dst_id: int, rng: _Range) -> None:
        starts, ranges = self._cache[dst_id]
        del ranges[rng.start]
        starts.pop(bisect.bisect_left(starts, rng.start))
        self._cached -= rng.end - rng.start


_CLOSED = object()
_AWAIT_VERDICT = object()
_READ_RANGES = object()


def _recv_exactly(sock: socket.socket, n: int) -> bytearray | None:
    """``n`` bytes, or None at EOF before the first; OSError at EOF within."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            if got == 0:
                return None
            raise OSError(errno.ECONNABORTED, "stream ended in the middle of a message")
        got += k
    return buf


F_SETPIPE_SZ = 1031


def _pipe(size: int) -> tuple[int, int, int]:
    """A pipe that holds ``size`` bytes if it may (else as much as it may):
    (read end, write end, its size)."""
    import fcntl

    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        got = fcntl.fcntl(w, F_SETPIPE_SZ, size)
    except OSError:
        got = fcntl.fcntl(w, 1032)      # F_GETPIPE_SZ
    return r, w, got


def _splice_exactly(src: int, dst: int, n: int) -> bool:
    """Move ``n`` bytes; False at EOF before the last."""
    while n:
        k = os.splice(src, dst, n, flags=os.SPLICE_F_MOVE)
        if k == 0:
            return False
        n -= k
    return True


_libc_tee = None


def _tee(src: int, dst: int, n: int) -> int:
    """tee(2) (Python has no os.tee): duplicate the first ``n`` bytes of
    pipe ``src`` into pipe ``dst``, leaving ``src`` as it was."""
    global _libc_tee
    if _libc_tee is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
        libc.tee.restype = ctypes.c_ssize_t
        _libc_tee = libc.tee
    k = _libc_tee(src, dst, n, 0)
    if k < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"tee: {os.strerror(err)}")
    return k
