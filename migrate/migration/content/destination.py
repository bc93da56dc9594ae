"""Content pre-copy on the destination: the agent's control operations.

``content_pages`` reads one page stream (records.py) into the migration's
page store (``workdir/content``); ``content_build`` writes CRIU's
``pages-<id>.img`` files from it next to the pagemaps the source sent
(``content_compact`` prepares that while the container still runs). The
store is removed with the images once the container runs (or with the
whole work directory on failure).
"""

from __future__ import annotations

import os
from typing import Any

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


def pages(incoming, header: dict[str, Any]) -> dict[str, Any]:
    from migrate.migration.content.records import RecordReader

    store = _store(incoming)
    conn = incoming.conn
    stream = conn.recv_stream(what="pages", timeout=conn.timeouts.io)
    reader = RecordReader(store.write, phase=conn.current_phase)
    for data in stream:
        reader.feed(data)
    reader.finish()
    return {"pages": reader.pages, "zero_pages": reader.zero_pages, "held": len(store)}


def compact(incoming, header: dict[str, Any]) -> dict[str, Any]:
    """After the last live round: lay the store out as CRIU's pages images
    will be (store.PageStore.compact), while the container still runs."""
    return {"pages": _store(incoming).compact()}


def build(incoming, header: dict[str, Any]) -> dict[str, Any]:
    store = _store(incoming)
    target = incoming.path(header.get("dir") or "images")
    copied = store.build_pages_images(target)
    return {"copied": copied, "in_parent": store.pages_in_parent}


def controls() -> dict:
    return {"content_pages": pages, "content_compact": compact, "content_build": build}
