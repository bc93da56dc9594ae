"""The source's picture of what the destination's page store holds.

For every process (pid as CRIU names it) and page (vaddr // 4096): the hash
of the content the destination was sent last. A round ships a page when its
hash now differs from that (or it was never sent). Keying by content at an
address, not by process identity, stays right when a pid is reused or a
mapping replaced: the destination holds what the mirror says, whoever owns
the page now.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["Mirror", "changed_runs"]

PAGE_SHIFT = 12


def changed_runs(known: dict[int, int], first: int, hashes: list[int]) -> Iterator[tuple[int, int]]:
    """(offset, count) runs of pages in ``hashes`` (pages ``first``,
    ``first + 1``...) whose hash is not the one in ``known``; records the new
    hashes in ``known`` as it goes."""
    run = -1
    get = known.get
    for i, h in enumerate(hashes):
        page = first + i
        if get(page) != h:
            known[page] = h
            if run < 0:
                run = i
        elif run >= 0:
            yield run, i - run
            run = -1
    if run >= 0:
        yield run, len(hashes) - run


class Mirror:
    """{pid: {page: hash}} of what the destination holds."""

    __slots__ = ("pages",)

    def __init__(self) -> None:
        self.pages: dict[int, dict[int, int]] = {}

    def of(self, pid: int) -> dict[int, int]:
        return self.pages.setdefault(pid, {})

    def changed(self, pid: int, vaddr: int, hashes: list[int]) -> Iterator[tuple[int, int]]:
        """Runs of changed pages (see ``changed_runs``); marks them as sent."""
        return changed_runs(self.of(pid), vaddr >> PAGE_SHIFT, hashes)

    def __len__(self) -> int:
        return sum(len(p) for p in self.pages.values())
