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
"""

from __future__ import annotations

import glob
import os

from migrate.errors import MigrationError
from migrate.migration.content.records import PAGE_SIZE

__all__ = ["PageStore", "pagemap_entries", "PE_PARENT", "PE_LAZY", "PE_PRESENT"]

# criu/include/pagemap.h
PE_PARENT = 1 << 0
PE_LAZY = 1 << 1
PE_PRESENT = 1 << 2
_ZEROS = bytes(PAGE_SIZE * 256)


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


class _Process:
    __slots__ = ("fd", "slots", "next")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.slots: dict[int, int] = {}
        self.next = 0


class PageStore:
    """Pages by (pid, vaddr) under ``path``; close() keeps the files (the
    migration's work directory goes with them)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._procs: dict[int, _Process] = {}
        self.pages_written = 0

    def _proc(self, pid: int) -> _Process:
        p = self._procs.get(pid)
        if p is None:
            fd = os.open(os.path.join(self.path, f"{pid}.pages"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            p = self._procs[pid] = _Process(fd)
        return p

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

    def holds(self, pid: int, vaddr: int) -> bool:
        p = self._procs.get(pid)
        return p is not None and vaddr // PAGE_SIZE in p.slots

    def __len__(self) -> int:
        return sum(len(p.slots) for p in self._procs.values())

    def build_pages_images(self, images_dir: str) -> int:
        """Write ``pages-<id>.img`` for every ``pagemap-N.img`` in
        ``images_dir`` from the store; returns the pages written. Raises
        MigrationError (phase "memory") if a page CRIU dumped is missing."""
        total = 0
        for path in sorted(glob.glob(os.path.join(images_dir, "pagemap-*.img"))):
            name = os.path.basename(path)[len("pagemap-"):-len(".img")]
            if not name.isdigit():
                continue        # pagemap-shmem-*.img: sent whole by the source
            pid = int(name)
            pages_id, entries = pagemap_entries(path)
            out = os.open(os.path.join(images_dir, f"pages-{pages_id}.img"),
                          os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                for vaddr, nr, flags in entries:
                    if not flags & PE_PRESENT:
                        continue
                    total += self._copy_out(pid, vaddr, nr, out)
            finally:
                os.close(out)
        return total

    def _copy_out(self, pid: int, vaddr: int, nr: int, out: int) -> int:
        p = self._procs.get(pid)
        slots = p.slots if p is not None else {}
        first = vaddr // PAGE_SIZE
        run_slot, run_len = -1, 0
        for page in range(first, first + nr):
            slot = slots.get(page)
            if slot is None:
                raise MigrationError("memory", f"the page store lacks page {page * PAGE_SIZE:#x} "
                                     f"of process {pid}, which CRIU dumped",
                                     source_state="frozen")
            if run_slot >= 0 and slot == run_slot + run_len:
                run_len += 1
                continue
            if run_len:
                self._copy(p.fd, run_slot, run_len, out)
            run_slot, run_len = slot, 1
        if run_len:
            self._copy(p.fd, run_slot, run_len, out)
        return nr

    @staticmethod
    def _copy(fd: int, slot: int, count: int, out: int) -> None:
        offset, left = slot * PAGE_SIZE, count * PAGE_SIZE
        while left:
            n = os.copy_file_range(fd, out, left, offset)
            if n == 0:
                raise MigrationError("memory", "the page store file is shorter than its index",
                                     source_state="frozen")
            offset += n
            left -= n

    def close(self) -> None:
        for p in self._procs.values():
            os.close(p.fd)
        self._procs.clear()
