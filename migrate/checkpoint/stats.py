"""CRIU's statistics images (stats-dump, stats-restore).

Read with ``criu_rpc.images`` (no protobuf): pycriu's reader costs ~70 ms of
imports, which a migration paid after its last page had crossed.
"""

from __future__ import annotations

import os

__all__ = ["read_stats"]


def read_stats(images_dir: str, kind: str = "dump") -> dict:
    """The ``dump`` or ``restore`` entry of stats-<kind> as a flat dict of
    the fields CRIU wrote (pycriu's names).

    Times are in microseconds as CRIU writes them. Raises NotFoundError when
    the file is missing, KernelError when it cannot be read, UsageError when
    it is not a stats image.
    """
    from migrate.criu_rpc.images import read_entries

    # CRIU writes no .img suffix here.
    entries = read_entries(os.path.join(images_dir, f"stats-{kind}"), "STATS")
    if not entries or not entries[0].has(kind):
        return {}
    entry = getattr(entries[0], kind)
    return {f.name: getattr(entry, f.name) for f in entry.FIELDS if entry.has(f.name)}
