"""Content pre-copy on the destination: the agent's control operations.

``content_pages`` reads one page stream (records.py) into the migration's
page store (on a tmpfs when it fits, else ``workdir/content``); ``content_build`` makes the pagemaps the
source sent restorable from it (``content_compact`` prepares that while the
container still runs): when the restore can take lazy pages, the store's
files become the ``pages-<id>.img`` files as they are and a local
``criu lazy-pages`` copies the memory in after the tasks resume; otherwise
the store is the images' CRIU parent and the restore reads it all at once. The
store is removed with the images once the container runs (or with the
whole work directory on failure).
"""

from __future__ import annotations

import os

from migrate.migration.content.messages import (Built, Compacted, ContentBuild, ContentCompact,
                                                ContentPages, PagesStored)

__all__ = ["controls", "STORE_DIR", "MEMORY_DIR", "memory_store_path"]

STORE_DIR = "content"
# Where the store goes when it fits in memory: a tmpfs. The store is a
# cache for the length of one migration, written page by page: on the
# work directory's disk file system its first writes ran at ~150 MB/s here
# (block allocation, dirty throttling on a shared disk: 7 s of a 9 s first
# round at 1 GiB), in memory at first-touch speed (~1 GB/s).
MEMORY_DIR = "/dev/shm"
_MARGIN = 64 << 20


def memory_store_path(workdir: str, memory_dir: str = MEMORY_DIR) -> str:
    """The store of the migration received into ``workdir`` when it is in
    memory: named after the work directory (unique in its work root), so
    that an agent sweeping a dead one's work directories finds it too."""
    return os.path.join(memory_dir, f"migrate-content-{os.path.basename(workdir)}")


def _is_tmpfs_with_room(path: str, need: int) -> bool:
    """``path`` is a tmpfs mount with ``need`` bytes free, and the machine
    has memory for them twice (the store, then the restored container)."""
    try:
        with open("/proc/self/mounts") as f:
            if not any(line.split()[1:3] == [path, "tmpfs"] for line in f):
                return False
        st = os.statvfs(path)
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) << 10 for line in f
                             if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return False
    return st.f_bavail * st.f_frsize >= need + _MARGIN and available >= 2 * need + _MARGIN


def _store(incoming, memory_dir: str | None):
    import shutil

    from migrate.migration.content.store import PageStore

    store = incoming.state.get("content_store")
    if store is None:
        need = getattr(incoming.prepare, "images_size", 0)
        path = os.path.join(incoming.workdir, STORE_DIR)
        if memory_dir is not None and _is_tmpfs_with_room(memory_dir, need):
            path = memory_store_path(incoming.workdir, memory_dir)
            shutil.rmtree(path, ignore_errors=True)     # a dead agent's, same name
            # After the store's files are closed (cleanups run last first);
            # a lazy-pages daemon still copying holds them open.
            incoming.cleanups.append(lambda: shutil.rmtree(path, ignore_errors=True))
        store = incoming.state["content_store"] = PageStore(path)
        incoming.cleanups.append(store.close)
    return store


def pages(incoming, control, memory_dir: str | None = MEMORY_DIR) -> PagesStored:
    """CONTROL content_pages: read the pages stream that follows into the store."""
    from migrate.migration.content.records import RecordReader

    conn = incoming.conn
    ContentPages.from_control(control, phase=conn.current_phase)
    store = _store(incoming, memory_dir)
    stream = conn.recv_stream(what="pages", timeout=conn.timeouts.io)
    reader = RecordReader(store.write, phase=conn.current_phase)
    for data in stream:
        reader.feed(data)
    reader.finish()
    return PagesStored(pages=reader.pages, zero_pages=reader.zero_pages, held=len(store))


def compact(incoming, control, memory_dir: str | None = MEMORY_DIR) -> Compacted:
    """CONTROL content_compact: after the last live round, lay the store out
    as CRIU's images will read it (store.PageStore.compact), while the
    container still runs."""
    ContentCompact.from_control(control, phase=incoming.conn.current_phase)
    return Compacted(pages=_store(incoming, memory_dir).compact())


def build(incoming, control, memory_dir: str | None = MEMORY_DIR) -> Built:
    """CONTROL content_build: the final images restorable from the store."""
    request = ContentBuild.from_control(control, phase=incoming.conn.current_phase)
    store = _store(incoming, memory_dir)
    copied = store.build_pages_images(incoming.path(request.dir), lazy=request.lazy)
    return Built(copied=copied, in_parent=store.pages_in_parent, lazy=store.pages_lazy,
                 in_memory=not store.path.startswith(incoming.workdir + os.sep))


def controls(memory_dir: str | None = MEMORY_DIR) -> dict:
    """The agent's hooks for content pre-copy, by their requests' ``OP``;
    ``memory_dir``: the tmpfs for the page store (None: the work
    directory)."""
    import functools

    return {op: functools.partial(fn, memory_dir=memory_dir)
            for op, fn in ((ContentPages.OP, pages), (ContentCompact.OP, compact),
                           (ContentBuild.OP, build))}
