"""Content pre-copy on the destination: the agent's control operations.

``content_pages`` reads one page stream (records.py) into the migration's
page store (``workdir/content``); ``content_build`` makes the pagemaps the
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

__all__ = ["controls", "STORE_DIR"]

STORE_DIR = "content"


def _store(incoming):
    from migrate.migration.content.store import PageStore

    store = incoming.state.get("content_store")
    if store is None:
        store = incoming.state["content_store"] = PageStore(
            os.path.join(incoming.workdir, STORE_DIR))
        incoming.cleanups.append(store.close)
    return store


def pages(incoming, control) -> PagesStored:
    """CONTROL content_pages: read the pages stream that follows into the store."""
    from migrate.migration.content.records import RecordReader

    conn = incoming.conn
    ContentPages.from_control(control, phase=conn.current_phase)
    store = _store(incoming)
    stream = conn.recv_stream(what="pages", timeout=conn.timeouts.io)
    reader = RecordReader(store.write, phase=conn.current_phase)
    for data in stream:
        reader.feed(data)
    reader.finish()
    return PagesStored(pages=reader.pages, zero_pages=reader.zero_pages, held=len(store))


def compact(incoming, control) -> Compacted:
    """CONTROL content_compact: after the last live round, lay the store out
    as CRIU's images will read it (store.PageStore.compact), while the
    container still runs."""
    ContentCompact.from_control(control, phase=incoming.conn.current_phase)
    return Compacted(pages=_store(incoming).compact())


def build(incoming, control) -> Built:
    """CONTROL content_build: the final images restorable from the store."""
    request = ContentBuild.from_control(control, phase=incoming.conn.current_phase)
    store = _store(incoming)
    copied = store.build_pages_images(incoming.path(request.dir), lazy=request.lazy)
    return Built(copied=copied, in_parent=store.pages_in_parent, lazy=store.pages_lazy)


def controls() -> dict:
    """The agent's hooks for content pre-copy, by their requests' ``OP``."""
    return {ContentPages.OP: pages, ContentCompact.OP: compact, ContentBuild.OP: build}
