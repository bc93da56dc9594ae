"""Read a running process's private memory and hash it per page.

Content pre-copy (issue 14) cannot ask the kernel what changed (no
soft-dirty here), so it reads the memory CRIU would dump and hashes every
4 KiB page; a page whose hash differs from what the destination holds is
shipped. What "the memory CRIU would dump" is follows CRIU's
``should_dump_page`` (criu/mem.c): pages of private mappings that are
present or swapped, not the shared zero page, and in a private file
mapping only the pages already copied on write (a page still backed by the
file comes back from the file at restore).

Finding those pages does not touch them: ``PAGEMAP_SCAN`` (the ioctl on
/proc/PID/pagemap, Linux 6.7+, which CRIU uses too) returns the matching
ranges in one call per mapping; without it the 8-byte pagemap entries are
read and filtered here. Reading /proc/PID/mem of a page that is not present
would fault it in (the zero page, or a file page), so only those ranges are
read, with ``process_vm_readv(2)`` (one copy, where /proc/PID/mem copies
twice through a bounce page: measured ~2x faster here) in chunks of
``CHUNK`` bytes, small enough that hashing finds the chunk still in cache.

Hashes are xxh3-64 (the ``xxhash`` package: ~5-15 GB/s per core on one
4 KiB page per call here, so the read, not the hash, bounds a scan). A
page's hash is only ever compared with the previous hash of the same page
of the same process, so an accidental collision (2^-64 per changed page)
is the only way a change goes unseen.

Pages are keyed by the pid CRIU gives the process in its images: the pid in
the container's own PID namespace (``vpid(item)`` names ``pagemap-N.img``
and the page server's ``dst_id`` in criu/mem.c and criu/page-xfer.c), the
last field of ``NSpid`` in /proc/PID/status.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Iterable, Iterator

from migrate._record import record

__all__ = ["PAGE_SIZE", "CHUNK", "Mapping", "ProcessMemory", "mappings", "ns_pid",
           "present_ranges", "hash_pages", "processes_of"]

PAGE_SIZE = 4096
CHUNK = 1 << 20

# Special mappings CRIU does not dump page by page, or that cannot be read.
_SKIP_NAMES = ("[vvar]", "[vvar_vclock]", "[vsyscall]")

# linux/fs.h: struct pm_scan_arg, struct page_region, PAGEMAP_SCAN.
_PAGE_IS_FILE = 1 << 2
_PAGE_IS_PRESENT = 1 << 3
_PAGE_IS_SWAPPED = 1 << 4
_PAGE_IS_PFNZERO = 1 << 5
_SCAN_ARG = struct.Struct("=12Q")
_PAGEMAP_SCAN = (3 << 30) | (_SCAN_ARG.size << 16) | (ord("f") << 8) | 16   # _IOWR('f', 16, ...)
_REGIONS = 512
# pagemap entries (Documentation/admin-guide/mm/pagemap.rst)
_PM_PRESENT = 1 << 63
_PM_SWAP = 1 << 62
_PM_FILE = 1 << 61
_PM_PFN = (1 << 55) - 1


@record
class Mapping:
    start: int
    end: int
    perms: str
    name: str

    @property
    def file_backed(self) -> bool:
        return self.name.startswith("/")


def ns_pid(pid: int, proc_root: str = "/proc") -> int:
    """The pid of ``pid`` in its innermost PID namespace (what CRIU names it)."""
    with open(f"{proc_root}/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return pid      # a kernel without NSpid has no nested PID namespaces to speak of


def processes_of(pids: Iterable[int], proc_root: str = "/proc") -> dict[int, int]:
    """{pid as CRIU names it: host pid} of these processes (threads share memory)."""
    out = {}
    for pid in pids:
        try:
            out[ns_pid(pid, proc_root)] = pid
        except (OSError, ValueError):
            continue        # exited meanwhile
    return out


def mappings(pid: int, proc_root: str = "/proc") -> list[Mapping]:
    """The private mappings of ``pid`` whose pages CRIU dumps (shared ones go
    to CRIU's shmem images, which this scan leaves to the final dump)."""
    out = []
    with open(f"{proc_root}/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            start, _, end = parts[0].partition("-")
            perms = parts[1]
            name = parts[5].strip() if len(parts) > 5 else ""
            if perms[3] != "p" or perms[0] != "r" or name in _SKIP_NAMES:
                # process_vm_readv cannot read PROT_NONE/write-only areas
                # (no FOLL_FORCE): the final dump brings their few pages.
                continue
            out.append(Mapping(start=int(start, 16), end=int(end, 16), perms=perms, name=name))
    return out


class _ScanArg(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class _Region(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64),
                ("categories", ctypes.c_uint64)]


def _scan_ioctl(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    regions = (_Region * _REGIONS)()
    arg = _ScanArg(size=ctypes.sizeof(_ScanArg), start=start, end=end,
                   vec=ctypes.addressof(regions), vec_len=_REGIONS,
                   # present or swapped, and neither a file page nor the zero page
                   category_inverted=_PAGE_IS_FILE | _PAGE_IS_PFNZERO,
                   category_mask=_PAGE_IS_FILE | _PAGE_IS_PFNZERO,
                   category_anyof_mask=_PAGE_IS_PRESENT | _PAGE_IS_SWAPPED,
                   return_mask=_PAGE_IS_PRESENT | _PAGE_IS_SWAPPED)
    while arg.start < end:
        arg.walk_end = 0
        n = fcntl.ioctl(fd, _PAGEMAP_SCAN, arg)
        for r in regions[:n]:
            yield r.start, r.end
        if arg.walk_end <= arg.start:
            return
        arg.start = arg.walk_end


def _zero_pfn() -> int:
    """The PFN of the shared zero page, from our own pagemap (root sees PFNs)."""
    import mmap

    m = mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        _ = m[0]        # a read fault maps the zero page
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            (entry,) = struct.unpack("=Q", os.pread(f.fileno(), 8, addr // PAGE_SIZE * 8))
        return entry & _PM_PFN if entry & _PM_PRESENT else -1
    finally:
        # ctypes' view pins the buffer until collected; close when possible
        try:
            m.close()
        except BufferError:
            pass


def _scan_entries(fd: int, start: int, end: int, zero_pfn: int,
                  file_private: bool) -> Iterator[tuple[int, int]]:
    """PAGEMAP_SCAN by hand: the 8-byte entries, 64k pages at a time."""
    step = 1 << 16
    run = None
    for base in range(start, end, step * PAGE_SIZE):
        top = min(end, base + step * PAGE_SIZE)
        data = os.pread(fd, (top - base) // PAGE_SIZE * 8, base // PAGE_SIZE * 8)
        for i, (e,) in enumerate(struct.iter_unpack("=Q", data)):
            addr = base + i * PAGE_SIZE
            keep = (e & (_PM_PRESENT | _PM_SWAP)) and not (file_private and e & _PM_FILE) \
                and not (e & _PM_PRESENT and (e & _PM_PFN) == zero_pfn)
            if keep:
                if run is None:
                    run = addr
            elif run is not None:
                yield run, addr
                run = None
    if run is not None:
        yield run, end


def present_ranges(pagemap_fd: int, m: Mapping, *, zero_pfn: int | None = None,
                   use_scan: bool = True) -> list[tuple[int, int]]:
    """[start, end) ranges of ``m`` whose pages CRIU would dump now."""
    if use_scan:
        try:
            return list(_scan_ioctl(pagemap_fd, m.start, m.end))
        except OSError as err:
            if err.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                raise
    return list(_scan_entries(pagemap_fd, m.start, m.end,
                              _zero_pfn() if zero_pfn is None else zero_pfn, m.file_backed))


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                              ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]
_process_vm_readv.restype = ctypes.c_ssize_t


def _raise_if_fatal(err: int) -> None:
    """process_vm_readv's errors that end the reading: the process is gone
    (ESRCH) or not ours to read (EPERM). Others (EFAULT: a page went away)
    return, for the caller to skip past."""
    if err == errno.ESRCH:
        raise ProcessLookupError(err, os.strerror(err))
    if err == errno.EPERM:
        raise PermissionError(err, os.strerror(err))


class ProcessMemory:
    """Reads the dumpable memory of one process, chunk by chunk::

        for vaddr, view in ProcessMemory(pid).chunks():
            hashes = hash_pages(view)   # view is reused by the next chunk

    A page that goes away while being read (munmap) is skipped: the final
    dump, taken frozen, is the authority."""

    def __init__(self, pid: int, *, proc_root: str = "/proc", chunk: int = CHUNK,
                 use_scan: bool = True) -> None:
        self.pid = pid
        self.proc_root = proc_root
        self.use_scan = use_scan
        self._buf = bytearray(chunk)
        self._view = memoryview(self._buf)
        self._local = _IoVec(ctypes.addressof((ctypes.c_char * chunk).from_buffer(self._buf)),
                             chunk)
        self._remote = _IoVec(0, 0)
        self.bytes_read = 0

    def ranges(self) -> list[tuple[int, int]]:
        fd = os.open(f"{self.proc_root}/{self.pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            zero = None if self.use_scan else _zero_pfn()
            out = []
            for m in mappings(self.pid, self.proc_root):
                out.extend(present_ranges(fd, m, zero_pfn=zero, use_scan=self.use_scan))
            return out
        finally:
            os.close(fd)

    def read(self, start: int, end: int) -> Iterator[tuple[int, memoryview]]:
        """(vaddr, view) chunks of [start, end); each view is valid until the next."""
        chunk = len(self._buf)
        addr = start
        while addr < end:
            want = min(chunk, end - addr)
            self._remote.base, self._remote.len = addr, want
            self._local.len = want
            n = _process_vm_readv(self.pid, ctypes.byref(self._local), 1,
                                  ctypes.byref(self._remote), 1, 0)
            if n < 0:
                _raise_if_fatal(ctypes.get_errno())
                n = 0       # EFAULT: the first page went away
            n -= n % PAGE_SIZE
            if n:
                self.bytes_read += n
                yield addr, self._view[:n]
            if n < want:
                n += PAGE_SIZE  # skip the page that failed
            addr += n

    def read_pages(self, addrs: list[int]) -> Iterator[tuple[int, memoryview]]:
        """(vaddr, view) of single pages at ``addrs`` (page-aligned), read
        as many at a time as the buffer holds (one ``process_vm_readv``
        with one remote iovec per page); each view is valid until the next
        batch. A page that fails ends its batch's reading: the pages after
        it in that batch are skipped (this is for sampling)."""
        per = min(len(self._buf) // PAGE_SIZE, 1024)        # IOV_MAX
        remote = (_IoVec * per)()
        for at in range(0, len(addrs), per):
            batch = addrs[at:at + per]
            for i, addr in enumerate(batch):
                remote[i].base, remote[i].len = addr, PAGE_SIZE
            self._local.len = len(batch) * PAGE_SIZE
            n = _process_vm_readv(self.pid, ctypes.byref(self._local), 1, remote, len(batch), 0)
            if n < 0:
                _raise_if_fatal(ctypes.get_errno())
                continue
            self.bytes_read += n
            for i in range(n // PAGE_SIZE):
                yield batch[i], self._view[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]

    def chunks(self) -> Iterator[tuple[int, memoryview]]:
        for start, end in self.ranges():
            yield from self.read(start, end)


def hash_pages(view: memoryview) -> list[int]:
    """xxh3-64 of each 4 KiB page of ``view`` (a whole number of pages)."""
    from xxhash import xxh3_64_intdigest as h

    return [h(view[i:i + PAGE_SIZE]) for i in range(0, len(view), PAGE_SIZE)]
