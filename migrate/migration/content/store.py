"""The destination's page store: the latest content of every page sent.

Per process (pid as CRIU names it) one data file of page slots and an index
{page: slot}; a page sent again overwrites its slot. Slots, not offsets at
the vaddr, because a sparse file addressed by vaddr would need offsets up
to 2^47 (the stack), past ext4's 16 TiB file size limit.

At the final round the source sends CRIU's pagemap images (which pages
each process has, in the order CRIU wants them) and only the pages whose
content the store does not hold yet; ``build_pages_images`` then writes the
``pages-<id>.img`` files CRIU restores from, copying slot runs with
``copy_file_range(2)`` (in the kernel, no trip through Python).

That copy would run while the container is frozen, at first-touch speed
(~1 GB/s here). So after the last live round ``compact()`` rewrites each
process's file in vaddr order (while it still runs), and the final build
uses CRIU's own incremental images: the store directory becomes the
``parent`` of the final images (``pagemap-N.img`` there describes the
compacted file, which is ``pages-N.img`` there), and the final pagemaps are
rewritten so that every page the compacted file holds is ``PE_PARENT``
(restore reads it from the parent, criu/pagemap.c ``read_parent_page``)
and only the pages that came after compacting are copied into the final
``pages-<id>.img``. Frozen, the destination then writes metadata and a few
pages instead of the memory.

CRIU's restore still reads the parent's pages into the new tasks while
frozen (about 1.4 s per GiB here, first-touch bound). When the destination
can restore lazily (userfaultfd), ``build_pages_images(lazy=True)`` makes
the compacted file itself the final pages image instead, the dump's PE_LAZY
flags kept, and a local ``criu lazy-pages`` copies those pages in after the
tasks resume (see ``build_pages_images``).
"""

from __future__ import annotations

import errno
import glob
import os
import struct

from migrate.errors import MigrationError
from migrate.migration.content.records import PAGE_SIZE

__all__ = ["PageStore", "pagemap_entries", "write_pagemap", "encode_pagemap", "PE_PARENT", "PE_LAZY", "PE_PRESENT"]

# criu/include/pagemap.h
PE_PARENT = 1 << 0
PE_LAZY = 1 << 1
PE_PRESENT = 1 << 2
_ZEROS = bytes(PAGE_SIZE * 256)


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """(vaddr, nr_pages) runs of consecutive page numbers (sorted)."""
    out: list[tuple[int, int]] = []
    for page in pages:
        if out and out[-1][0] // PAGE_SIZE + out[-1][1] == page:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((page * PAGE_SIZE, 1))
    return out


# criu/include/magic.h; images/pagemap.proto
_IMG_COMMON_MAGIC = 0x54564319
_PAGEMAP_MAGIC = 0x56084025


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7f:
        out.append(n & 0x7f | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_pagemap(pages_id: int, entries: list[tuple[int, int, int]]) -> bytes:
    """A ``pagemap-N.img``'s bytes, as pycriu's ``images.dump`` writes them
    (tests compare): the two magics, then each protobuf message after its
    u32 length: pagemap_head {pages_id = 1}, pagemap_entry {vaddr = 1,
    compat_nr_pages = 2, flags = 4, nr_pages = 5}. By hand, because
    importing pycriu's images costs ~50-70 ms here, on the source's path
    to the freeze."""
    v = _varint
    messages = [b"\x08" + v(pages_id)]
    messages += [b"\x08" + v(vaddr) + b"\x10" + v(min(n, 0xffffffff)) + b"\x20" + v(flags) +
                 b"\x28" + v(n) for vaddr, n, flags in entries]
    return struct.pack("<II", _IMG_COMMON_MAGIC, _PAGEMAP_MAGIC) + b"".join(
        struct.pack("<I", len(m)) + m for m in messages)


def write_pagemap(path: str, pages_id: int, entries: list[tuple[int, int, int]]) -> None:
    """A ``pagemap-N.img``, replacing ``path`` atomically."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(encode_pagemap(pages_id, entries))
    os.rename(tmp, path)


def pagemap_entries(path: str) -> tuple[int, list[tuple[int, int, int]]]:
    """(pages_id, [(vaddr, nr_pages, flags)]) of a ``pagemap-N.img`` (pycriu)."""
    from pycriu import images

    with open(path, "rb") as f:
        entries = images.load(f, pretty=False).get("entries", [])
    if not entries:
        raise ValueError(f"{path}: no pagemap head")
    out = []
    for e in entries[1:]:
        flags = int(e.get("flags", 0))
        if "flags" not in e:
            # images of old CRIU: in_parent instead of flags
            flags = PE_PARENT if e.get("in_parent") else PE_PRESENT
        out.append((int(e["vaddr"]), int(e.get("nr_pages") or e.get("compat_nr_pages", 0)),
                    flags))
    return int(entries[0]["pages_id"]), out


def _process_pagemaps(images_dir: str) -> list[tuple[str, int]]:
    """(path, pid) of every process's ``pagemap-N.img`` in ``images_dir``
    (not ``pagemap-shmem-*``: shared memory the source sent whole)."""
    out = []
    for path in sorted(glob.glob(os.path.join(images_dir, "pagemap-*.img"))):
        name = os.path.basename(path)[len("pagemap-"):-len(".img")]
        if name.isdigit():
            out.append((path, int(name)))
    return out


def _pieces(layout: list[tuple[int, int]], vaddr: int, nr: int):
    """(vaddr, nr_pages, in_layout) pieces of the run ``vaddr``/``nr``:
    inside one of ``layout``'s (vaddr, nr_pages) runs (sorted, disjoint)
    or not. By runs, not pages: a GiB is 262144 pages and this runs while
    the container is frozen."""
    import bisect

    end = vaddr + nr * PAGE_SIZE
    i = bisect.bisect_right(layout, (vaddr, float("inf"))) - 1
    if i < 0:
        i = 0
    at = vaddr
    while at < end:
        while i < len(layout) and layout[i][0] + layout[i][1] * PAGE_SIZE <= at:
            i += 1
        if i == len(layout) or layout[i][0] >= end:
            yield at, (end - at) // PAGE_SIZE, False
            return
        run_start, run_end = layout[i][0], layout[i][0] + layout[i][1] * PAGE_SIZE
        if at < run_start:
            yield at, (run_start - at) // PAGE_SIZE, False
            at = run_start
        stop = min(end, run_end)
        yield at, (stop - at) // PAGE_SIZE, True
        at = stop


def _link(src: str, dst: str) -> None:
    """``dst`` names ``src``: a hard link, or a symbolic one when the store
    is on another file system (a tmpfs) than the images. Relative: CRIU's
    restoring tasks open it from the images directory with the container's
    root as theirs, where an absolute path means something else."""
    try:
        os.link(src, dst)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        os.symlink(os.path.relpath(src, os.path.dirname(dst)), dst)


def _fresh(path: str) -> str:
    """``path``, with whatever was there removed (a build run again)."""
    if os.path.lexists(path):
        os.unlink(path)
    return path


class _Process:
    __slots__ = ("fd", "slots", "next", "compacted", "layout")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.slots: dict[int, int] = {}
        self.next = 0
        self.compacted = 0          # slots below this are in vaddr order (compact())
        self.layout: list[tuple[int, int]] = []     # their (vaddr, nr_pages) runs


class PageStore:
    """Pages by (pid, vaddr) under ``path``; close() keeps the files (the
    migration's work directory goes with them)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._procs: dict[int, _Process] = {}
        self.pages_written = 0
        self.pages_copied = 0       # by the last build: into the final pages images
        self.pages_in_parent = 0    # by the last build: left in the store (the parent)
        self.pages_lazy = 0         # by the last build: the store's files as the pages images

    def _proc(self, pid: int) -> _Process:
        p = self._procs.get(pid)
        if p is None:
            fd = os.open(self._file(pid),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            p = self._procs[pid] = _Process(fd)
        return p

    def _file(self, pid: int) -> str:
        # Named as CRIU names a pages image: the store directory is the
        # final images' parent (see the module docstring).
        return os.path.join(self.path, f"pages-{pid}.img")

    def write(self, pid: int, vaddr: int, data: memoryview | None, npages: int) -> None:
        """Store ``npages`` pages from ``vaddr`` (``data`` None: zero pages)."""
        p = self._proc(pid)
        slots = p.slots
        first = vaddr // PAGE_SIZE
        run_slot = run_at = -1      # the slot run being collected, and where in data
        for i in range(npages):
            page = first + i
            slot = slots.get(page)
            if slot is None:
                slot = slots[page] = p.next
                p.next += 1
            if run_slot >= 0 and slot == run_slot + (i - run_at):
                continue
            if run_slot >= 0:
                self._put(p.fd, run_slot, data, run_at, i)
            run_slot, run_at = slot, i
        if run_slot >= 0:
            self._put(p.fd, run_slot, data, run_at, npages)
        self.pages_written += npages

    @staticmethod
    def _put(fd: int, slot: int, data: memoryview | None, start: int, end: int) -> None:
        offset = slot * PAGE_SIZE
        if data is None:
            left = (end - start) * PAGE_SIZE
            while left:
                n = min(left, len(_ZEROS))
                os.pwrite(fd, _ZEROS[:n], offset)
                offset += n
                left -= n
            return
        piece = data[start * PAGE_SIZE:end * PAGE_SIZE]
        while piece:
            n = os.pwrite(fd, piece, offset)
            piece, offset = piece[n:], offset + n

    def compact(self) -> int:
        """Rewrite every process's file in vaddr order (see the module
        docstring); returns the pages rewritten. A file already in that
        order (slots are given in arrival order, and a first round reads
        each process in vaddr order) is left as it is: most of the time
        nothing is copied."""
        total = 0
        for pid, p in self._procs.items():
            # dicts keep insertion order, and a page's slot is given when
            # it is first inserted: the keys are in slot order
            arrived = list(p.slots)
            order = sorted(arrived)
            if arrived == order:
                p.compacted = len(order)
                p.layout = _runs(order)
                continue
            path = self._file(pid)
            tmp = path + ".vaddr-order"
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                self._copy_slots(p.fd, (p.slots[page] for page in order), out)
            finally:
                os.close(out)
            os.rename(tmp, path)
            os.close(p.fd)
            p.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            p.slots = {page: i for i, page in enumerate(order)}
            p.next = p.compacted = len(order)
            p.layout = _runs(order)
            total += len(order)
        return total

    def holds(self, pid: int, vaddr: int) -> bool:
        p = self._procs.get(pid)
        return p is not None and vaddr // PAGE_SIZE in p.slots

    def __len__(self) -> int:
        return sum(len(p.slots) for p in self._procs.values())

    def build_pages_images(self, images_dir: str, *, lazy: bool = False) -> int:
        """Make ``images_dir`` (the final dump's pagemaps, no process pages)
        restorable from the store; returns the pages copied (few: nothing
        the compacted store holds is copied). Raises MigrationError (phase
        "memory") if a page CRIU dumped is missing.

        Per process, one of two layouts; ``images_dir/parent`` links to
        ``parent/`` in the store, which holds each process's parent pages:

        - linked (``lazy``, and the dump has every page of the compacted
          file): the compacted file itself is ``pages-<id>.img`` (a hard
          link) and the dump's entries keep their flags, PE_LAZY included,
          so a local ``criu lazy-pages`` serves them after the tasks
          resume. Pages new since compacting (the page CRIU's parasite
          COWs ...) are copied to the parent and restored at once: the
          daemon reads only the top images (its parent page reads have no
          completion, criu/uffd.c), so lazy pages must be there. A page of
          the file the dump has not would shift every later one (a pages
          image is read in pagemap order, without holes): then
        - parent: the compacted file is the parent's pages image, its
          pages PE_PARENT entries, read at once by the restore; pages new
          since compacting are copied into ``pages-<id>.img``.

        ``pages_copied``, ``pages_in_parent`` (parent layout) and
        ``pages_lazy`` (linked layout) say what was done."""
        parent = os.path.join(self.path, "parent")
        os.makedirs(parent, mode=0o700, exist_ok=True)
        copied = in_parent = linked = 0
        for path, pid in _process_pagemaps(images_dir):
            pages_id, entries = pagemap_entries(path)
            for _vaddr, _nr, flags in entries:
                if flags & PE_PARENT:
                    # The final dump has no parent: the parent link is ours.
                    raise MigrationError("memory", f"{path}: the final dump has pages in a "
                                         "parent", source_state="frozen")
            p = self._procs.get(pid) or self._proc(pid)
            plan = self._linked(p, entries) if lazy and p.compacted else None
            if plan is not None:
                out_entries, top, below = plan
                _link(self._file(pid), _fresh(os.path.join(images_dir, f"pages-{pages_id}.img")))
                linked += p.compacted
            else:
                out_entries, top, below = self._parent_layout(pid, p, entries)
                os.link(self._file(pid), _fresh(os.path.join(parent, f"pages-{pid}.img")))
                in_parent += p.compacted
                copied += self._copy_runs(pid, top, os.path.join(images_dir,
                                                                 f"pages-{pages_id}.img"))
            if plan is not None:
                copied += self._copy_runs(pid, below, os.path.join(parent, f"pages-{pid}.img"))
            write_pagemap(os.path.join(parent, f"pagemap-{pid}.img"), pid,
                          [(v, n, PE_PRESENT) for v, n in below])
            write_pagemap(path, pages_id, out_entries)
        link = os.path.join(images_dir, "parent")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.relpath(parent, images_dir), link)
        self.pages_copied, self.pages_in_parent, self.pages_lazy = copied, in_parent, linked
        return copied

    @staticmethod
    def _linked(p: "_Process", entries):
        """The linked layout of one process (see ``build_pages_images``):
        (entries, [], runs for the parent), or None if the dump lacks a
        page of the compacted file. By runs, not pages: this runs frozen."""
        out_entries, below = [], []
        linked = 0
        for vaddr, nr, flags in entries:
            if not flags & PE_PRESENT:
                out_entries.append((vaddr, nr, flags))
                continue
            for start, count, in_file in _pieces(p.layout, vaddr, nr):
                if in_file:
                    out_entries.append((start, count, flags))
                    linked += count
                else:
                    out_entries.append((start, count, PE_PARENT))
                    below.append((start, count))
        if linked != p.compacted:
            return None
        return out_entries, [], below

    def _parent_layout(self, pid: int, p: "_Process", entries):
        """The parent layout of one process: (entries, runs copied into its
        pages image, the compacted runs the parent describes)."""
        out_entries, top = [], []
        for vaddr, nr, flags in entries:
            if not flags & PE_PRESENT:
                out_entries.append((vaddr, nr, flags))
                continue
            for start, count, in_parent in self._split(pid, p, vaddr, nr):
                if in_parent:
                    out_entries.append((start, count, PE_PARENT))
                else:
                    out_entries.append((start, count, PE_PRESENT))
                    top.append((start, count))
        return out_entries, top, p.layout

    def _copy_runs(self, pid: int, runs, path: str) -> int:
        """The pages of ``runs`` (vaddr, nr) from the store into a new file."""
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        copied = 0
        try:
            for start, count in runs:
                copied += self._copy_out(pid, start, count, out)
        finally:
            os.close(out)
        return copied

    @staticmethod
    def _split(pid: int, p: "_Process | None", vaddr: int, nr: int):
        """(vaddr, nr, in_parent) runs of one present entry: pages in the
        compacted part of the store, or not."""
        first = vaddr // PAGE_SIZE
        compacted = p.compacted if p is not None else 0
        slots = p.slots if p is not None else {}
        run_start, run_parent = first, None
        for page in range(first, first + nr):
            slot = slots.get(page)
            if slot is None:
                raise MigrationError("memory", f"the page store lacks page {page * PAGE_SIZE:#x} "
                                     f"of process {pid}, which CRIU dumped",
                                     source_state="frozen")
            parent = slot < compacted
            if run_parent is None:
                run_parent = parent
            elif parent != run_parent:
                yield run_start * PAGE_SIZE, page - run_start, run_parent
                run_start, run_parent = page, parent
        if run_parent is not None:
            yield run_start * PAGE_SIZE, first + nr - run_start, run_parent

    def _copy_out(self, pid: int, vaddr: int, nr: int, out: int) -> int:
        p = self._procs.get(pid)
        slots = p.slots if p is not None else {}
        first = vaddr // PAGE_SIZE

        def wanted():
            for page in range(first, first + nr):
                slot = slots.get(page)
                if slot is None:
                    raise MigrationError("memory", f"the page store lacks page "
                                         f"{page * PAGE_SIZE:#x} of process {pid}, which CRIU "
                                         f"dumped", source_state="frozen")
                yield slot

        self._copy_slots(p.fd if p is not None else -1, wanted(), out)
        return nr

    @classmethod
    def _copy_slots(cls, fd: int, slots, out: int) -> None:
        """Copy the pages at ``slots`` (in that order) to ``out``, one
        copy_file_range per run of consecutive slots."""
        run_slot, run_len = -1, 0
        for slot in slots:
            if run_len and slot == run_slot + run_len:
                run_len += 1
                continue
            if run_len:
                cls._copy(fd, run_slot, run_len, out)
            run_slot, run_len = slot, 1
        if run_len:
            cls._copy(fd, run_slot, run_len, out)

    @staticmethod
    def _copy(fd: int, slot: int, count: int, out: int) -> None:
        offset, left = slot * PAGE_SIZE, count * PAGE_SIZE
        while left:
            try:
                n = os.copy_file_range(fd, out, left, offset)
            except OSError as err:
                # The store on a tmpfs, the images on disk: no
                # copy_file_range between two file systems (EXDEV).
                if err.errno != errno.EXDEV:
                    raise
                n = os.sendfile(out, fd, offset, left)
            if n == 0:
                raise MigrationError("memory", "the page store file is shorter than its index",
                                     source_state="frozen")
            offset += n
            left -= n

    def close(self) -> None:
        for p in self._procs.values():
            os.close(p.fd)
        self._procs.clear()
