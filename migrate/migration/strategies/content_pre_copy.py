"""Content pre-copy: pre-copy rounds that find what changed by hashing
pages, not by the kernel's soft-dirty bit, so they work on any kernel
(issue 14). ``--strategy pre-copy`` becomes this on a source without
soft-dirty (``strategy.choose`` says so in the report's reason).

The pipeline itself lives with its building blocks in ``migration/content/``
(scanner, page records, mirror, page store, page server, the agent's hooks):
``content/precopy.py`` has the rounds and the final dump.
"""

from __future__ import annotations

from migrate.migration.content.precopy import ContentPreCopy

__all__ = ["PIPELINE", "ContentPreCopy"]

PIPELINE = ContentPreCopy
