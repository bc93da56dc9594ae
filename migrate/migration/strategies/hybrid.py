"""Hybrid: pre-copy rounds while the container runs, then a lazy
(post-copy) final dump on top of the last one, so the lazy phase pulls only
what the rounds did not already move.

The rounds are written on the source and streamed (``rounds(local=True)``):
CRIU's lazy dump marks a page as in the parent only against parent
pagemaps it can open itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrate.migration.strategies.post_copy import lazy_dump
from migrate.migration.strategies.pre_copy import rounds

if TYPE_CHECKING:
    from migrate.checkpoint.dump import DumpJob
    from migrate.migration.pipeline import Migration

__all__ = ["PIPELINE", "Hybrid"]


class Hybrid:
    lazy = True

    def run(self, m: Migration, job: DumpJob) -> None:
        from migrate.criu_rpc import Client, SwrkOptions

        with Client(SwrkOptions(criu=m.ctx.criu)).session() as session:
            last = rounds(m, job, session, local=True)
            lazy_dump(m, job, parent=last, session=session)


PIPELINE = Hybrid
