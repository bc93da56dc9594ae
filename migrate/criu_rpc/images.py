"""Read one kind of CRIU image file: the few images restore checks against
the bundle (mountpoints, netns, and pstree, inventory and ids to tell
whose network namespace was dumped empty), and the statistics a migration
reports after its last page has crossed.

``pycriu.images.load`` understands every image, so it builds all ~80
generated modules first: 40 ms on each restore here with compiled bytecode,
90 ms without. ``read_entries`` decodes the entries with the tables in
``_messages`` (no protobuf at all: see ``_wire``) and returns those
messages, not pycriu's dicts.

The file format (criu/include/image.h, CRIU's Images wiki page): a magic
number, preceded by IMG_COMMON or IMG_SERVICE since images v1.1 (except
the inventory's, which comes alone), then
entries, each a 32-bit size (host byte order, as pycriu reads it) and that many bytes of message.
Only kinds whose entries carry no extra payload after the message are
listed here (pycriu's ``entry_handler`` without an extra handler).
"""

from __future__ import annotations

import sys

from migrate.errors import KernelError, NotFoundError, UsageError

__all__ = ["read_entries", "KINDS", "HEADS"]

# criu/include/magic.h; tests/unit/criu_rpc/test_images.py checks them
# against pycriu's generated magic table.
_IMG_COMMON = 0x54564319
_IMG_SERVICE = 0x55105940

# kind -> (its magic, the .proto file's stem, the message of each entry)
KINDS = {
    "MNTS": (0x55563928, "mnt", "mnt_entry"),
    "NETNS": (0x55933752, "netdev", "netns_entry"),
    "PSTREE": (0x50273030, "pstree", "pstree_entry"),
    "INVENTORY": (0x58313116, "inventory", "inventory_entry"),
    "IDS": (0x54432030, "core", "task_kobj_ids_entry"),
    "STATS": (0x57093306, "stats", "stats_entry"),
    "PAGEMAP": (0x56084025, "pagemap", "pagemap_entry"),
}
# Kinds whose first entry is another message: a head.
HEADS = {"PAGEMAP": "pagemap_head"}


def read_entries(path: str, kind: str) -> list:
    """The entries of the ``kind`` image at ``path`` (see ``KINDS``; for a
    kind in ``HEADS``, the first is its head message).

    Raises NotFoundError (no such image), KernelError (unreadable),
    UsageError naming the file when it is not a ``kind`` image or is
    truncated or corrupt.
    """
    magic, stem, message = KINDS[kind]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise NotFoundError(f"CRIU image {path} does not exist") from None
    except OSError as err:
        raise KernelError.from_oserror("read", err, path) from None
    first = int.from_bytes(data[:4], sys.byteorder)
    offset = 8 if first in (_IMG_COMMON, _IMG_SERVICE) else 4
    if len(data) < offset or int.from_bytes(data[offset - 4:offset], sys.byteorder) != magic:
        raise UsageError(f"{path} is corrupt: not a CRIU {kind} image")
    from migrate.criu_rpc import _messages
    from migrate.criu_rpc._wire import DecodeError

    cls = getattr(_messages, message)
    head = getattr(_messages, HEADS[kind]) if kind in HEADS else None
    entries = []
    while offset < len(data):
        if offset + 4 > len(data):
            raise UsageError(f"{path} is corrupt: truncated at byte {offset}")
        size = int.from_bytes(data[offset:offset + 4], sys.byteorder)
        offset += 4
        if offset + size > len(data):
            raise UsageError(f"{path} is corrupt: truncated entry at byte {offset - 4}")
        try:
            entries.append((head if head is not None and not entries else cls)
                           .decode(data[offset:offset + size]))
        except DecodeError as err:
            raise UsageError(f"{path} is corrupt: {err}") from None
        offset += size
    return entries

