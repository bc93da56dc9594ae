"""The strategies: one module per way of moving a container's memory.

    stop_and_copy.py  freeze, dump into the destination's page server, restore
    pre_copy.py       pre-dump rounds while it runs, then a short stop-and-copy
    post_copy.py      lazy dump: resume at once at the destination, pages pulled
    hybrid.py         pre-copy rounds, then a lazy (post-copy) final dump
    content_pre_copy.py  pre-copy by page hashes, no soft-dirty needed
                      (its parts: migration/content/)

Each module holds one class that implements ``Pipeline`` and names it
``PIPELINE``; ``strategy.Strategy.module`` maps an enum member to its
module. Adding a strategy is one enum member and one sibling module.

The frame around every pipeline (negotiate, checks, rootfs, the one dump
plan under the container's lock, rollback) is ``pipeline.Migration``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from migrate.checkpoint.dump import DumpJob
    from migrate.migration.pipeline import Migration

__all__ = ["Pipeline"]


@runtime_checkable
class Pipeline(Protocol):
    """How one strategy moves memory and hands the container over.

    ``run`` is called once, inside the frame's rollback and with the
    container locked and its dump planned (``job``: CRIU options, metadata,
    ``failed()``/``succeeded()``). It must end with ``m.restore_and_commit()``
    (or its halves, ``send_restore`` and ``commit_restored``) having run
    (the destination runs the container) or raise: the frame
    then resumes the source. ``lazy``: the final dump is lazy (CRIU's
    lazy_pages), which the one dump plan must know.
    """

    lazy: bool

    def run(self, m: Migration, job: DumpJob) -> None: ...
