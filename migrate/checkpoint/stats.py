"""CRIU's statistics images (stats-dump, stats-restore), via pycriu."""

from __future__ import annotations

import os

__all__ = ["read_stats"]


def read_stats(images_dir: str, kind: str = "dump") -> dict:
    """The ``dump`` or ``restore`` entry of stats-<kind>.img as a flat dict.

    Times are in microseconds as CRIU writes them. Raises OSError when the
    file is missing.
    """
    from pycriu import images

    path = os.path.join(images_dir, f"stats-{kind}")     # CRIU writes no .img suffix here
    with open(path, "rb") as f:
        img = images.load(f)
    entry = img["entries"][0] if img.get("entries") else {}
    return dict(entry.get(kind, entry))
