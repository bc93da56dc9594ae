"""Which pipeline moves a container, and when pre-copy stops iterating.

Pure decisions, unit-tested without CRIU: ``Strategy`` names the pipelines
(``--strategy`` is parsed into it once, by the CLI); ``choose`` picks one
from what both hosts' CRIU can do; ``PreCopyController`` decides after each
pre-dump whether another round is worth it (the rules P.Haul and LXD use).

A strategy is one enum member here and one sibling module under
``migration/strategies/`` (named after the member's value, ``-`` -> ``_``)
holding its ``Pipeline``: ``Strategy.module`` is that module's name.
"""

from __future__ import annotations

import enum

from migrate._record import record
from migrate.errors import UnsupportedError, UsageError

__all__ = ["AUTO", "MAX_UNRECOVERABLE_S", "Strategy", "HostFeatures", "Choice", "choose", "parse_strategy",
           "PreCopyPolicy", "PreCopyController"]

# ``--strategy auto``: let ``choose`` decide (parsed to ``None``).
AUTO = "auto"


class Strategy(enum.Enum):
    """A pipeline, by the name ``--strategy`` and the report use, with what
    it needs from the kernels: memory dirty tracking on the source
    (pre-dumps), lazy pages on both hosts (a lazy final dump)."""

    STOP_AND_COPY = ("stop-and-copy", False, False)
    PRE_COPY = ("pre-copy", True, False)
    POST_COPY = ("post-copy", False, True)
    HYBRID = ("hybrid", True, True)
    # Pre-copy that finds what changed by hashing pages, on any kernel
    # (issue 14): what ``pre-copy`` becomes on a source without soft-dirty.
    CONTENT_PRE_COPY = ("content-pre-copy", False, False)

    def __new__(cls, name: str, mem_track: bool, lazy_pages: bool) -> "Strategy":
        member = object.__new__(cls)
        member._value_ = name
        member.mem_track = mem_track
        member.lazy_pages = lazy_pages
        return member

    @property
    def module(self) -> str:
        """The module holding this strategy's ``PIPELINE``."""
        return f"migrate.migration.strategies.{self.value.replace('-', '_')}"

    def __str__(self) -> str:
        return self.value


def parse_strategy(text: str) -> Strategy | None:
    """``--strategy``'s value: a ``Strategy``, or ``None`` for ``auto``.
    Raises UsageError for an unknown name."""
    if text == AUTO:
        return None
    try:
        return Strategy(text)
    except ValueError:
        names = ", ".join([AUTO, *(s.value for s in Strategy)])
        raise UsageError(f"unknown strategy {text!r}: use {names}") from None


@record
class HostFeatures:
    """What one host's CRIU and kernel can do (CRIU's FEATURE_CHECK, plus
    whether a lazy dump's pipes can grow: see criu_rpc.check_lazy_dump_limits)."""

    mem_track: bool
    lazy_pages: bool
    lazy_dump_ok: bool = True       # source only: pipes can grow for a lazy dump
    why_lazy_dump_not_ok: str = ""


@record
class Choice:
    strategy: Strategy
    reason: str


def _missing(strategy: Strategy, src: HostFeatures, dst: HostFeatures) -> str | None:
    if strategy.mem_track and not src.mem_track:
        return ("the source kernel has no memory dirty tracking (soft-dirty, "
                "CONFIG_MEM_SOFT_DIRTY): pre-dumps cannot find what changed")
    if strategy.lazy_pages and not dst.lazy_pages:
        return "the destination kernel lacks userfaultfd non-cooperative events (lazy pages)"
    if strategy.lazy_pages and not src.lazy_pages:
        return "the source CRIU cannot serve lazy pages"
    if strategy.lazy_pages and not src.lazy_dump_ok:
        why = src.why_lazy_dump_not_ok or "a lazy dump cannot grow its pipes on the source"
        return (f"{why}; or pass --raise-pipe-max-size to raise it for this migration only "
                "(while it runs, any process may grow its pipes that far)")
    return None


# What ``auto`` tries, lowest downtime first, and why it takes each: hybrid
# shrinks what the lazy phase must pull, post-copy's downtime does not grow
# with memory, pre-copy only trims it. Content pre-copy needs nothing of
# the kernel, so it is the last resort instead of stop-and-copy (measured:
# never slower than stop-and-copy, 0.13-0.22x its downtime at 1 GiB).
_AUTO_ORDER = {
    Strategy.HYBRID: "both hosts track dirty memory and support lazy pages: pre-copy rounds, "
                     "then a lazy final dump",
    Strategy.POST_COPY: "lazy pages work on both hosts: downtime does not grow with memory",
    Strategy.PRE_COPY: "memory tracking works: iterate pre-dumps, then a short final dump",
}

# Post-copy cannot roll back: once the destination runs, a link that fails
# before the last page arrived loses the container. ``auto`` takes it only
# while that window is short; the link rate is not known before the move,
# so the window is estimated at 1 Gbit/s.
ASSUMED_LINK_BYTES_PER_S = 125_000_000
MAX_UNRECOVERABLE_S = 2.0


def _window_s(memory: int) -> float:
    return memory / ASSUMED_LINK_BYTES_PER_S


_CONTENT_INSTEAD = (
    "pre-copy asked for with --strategy; the source kernel has no memory dirty tracking "
    "(soft-dirty, CONFIG_MEM_SOFT_DIRTY), so CRIU's pre-dumps cannot find what changed: "
    "content pre-copy instead, which hashes every page each round and ships the ones whose "
    "hash changed, and sends the final dump's pages only where the destination lacks them "
    "(the source stays frozen and resumable until the destination restored)")

_CONTENT_BECAUSE = ("content pre-copy: rounds hash the memory and ship what changed, "
                    "needing nothing of the kernel; the source stays resumable until the "
                    "destination restored")


def choose(requested: Strategy | None, src: HostFeatures, dst: HostFeatures, *,
           memory: int = 0) -> Choice:
    """The strategy to use and why; ``requested`` ``None`` is ``auto``,
    which weighs post-copy's window without rollback for ``memory`` bytes.
    Raises UnsupportedError when the requested one cannot work on these
    hosts."""
    if requested is Strategy.PRE_COPY and not src.mem_track:
        # Pre-copy works without the kernel's dirty tracking: by content.
        return Choice(strategy=Strategy.CONTENT_PRE_COPY, reason=_CONTENT_INSTEAD)
    if requested is not None:
        why = _missing(requested, src, dst)
        if why:
            raise UnsupportedError(f"strategy {requested.value} cannot run here: {why}")
        return Choice(strategy=requested, reason="asked for with --strategy")
    # What is missing -> the strategies it rules out: each reason said once.
    rejected: dict[str, list[str]] = {}
    for strategy, because in _AUTO_ORDER.items():
        why = _missing(strategy, src, dst)
        if why is None and strategy is Strategy.POST_COPY and \
                _window_s(memory) > MAX_UNRECOVERABLE_S:
            why = (f"its {memory / 2**20:.0f} MiB would take about {_window_s(memory):.0f} s to "
                   f"pull at 1 Gbit/s, during which a failed link loses the container (no "
                   f"rollback once the destination runs; auto accepts {MAX_UNRECOVERABLE_S:g} s)")
        if why is None:
            if strategy is Strategy.POST_COPY and memory:
                because += (f"; its window without rollback is about {_window_s(memory):.1f} s "
                            f"at 1 Gbit/s")
            return Choice(strategy=strategy, reason="; ".join([because, *_rejections(rejected)]))
        rejected.setdefault(why, []).append(strategy.value)
    return Choice(strategy=Strategy.CONTENT_PRE_COPY,
                  reason="; ".join([_CONTENT_BECAUSE, *_rejections(rejected)]))


def _rejections(rejected: dict[str, list[str]]) -> list[str]:
    return [f"not {' or '.join(names)}: {why}" for why, names in rejected.items()]


@record
class PreCopyPolicy:
    """When to stop pre-dumping (P.Haul's and LXD's defaults)."""

    max_iterations: int = 8
    min_pages: int = 64            # stop when a round wrote fewer pages than this
    min_shrink_percent: int = 10   # stop when a round did not shrink by more than this
    min_iterations: int = 1        # at least this many rounds, whatever the rules above say

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise UsageError("--max-iterations must be at least 1")
        if not 1 <= self.min_iterations <= self.max_iterations:
            raise UsageError("--min-iterations must be between 1 and --max-iterations")
        if self.min_pages < 0:
            raise UsageError("--min-pages must not be negative")
        if not 0 <= self.min_shrink_percent < 100:
            raise UsageError("--min-shrink must be a percentage below 100")


class PreCopyController:
    """Feed it the pages each pre-dump wrote; ask whether to go on."""

    __slots__ = ("policy", "rounds", "stop_reason")

    def __init__(self, policy: PreCopyPolicy):
        self.policy = policy
        self.rounds: list[int] = []
        self.stop_reason = ""

    def record(self, pages_written: int) -> None:
        self.rounds.append(pages_written)

    def should_continue(self) -> bool:
        p, r = self.policy, self.rounds
        if not r:
            return True
        if len(r) >= p.max_iterations:
            self.stop_reason = f"reached {p.max_iterations} iterations"
            return False
        if len(r) < p.min_iterations:
            return True
        if r[-1] < p.min_pages:
            self.stop_reason = f"the last round wrote {r[-1]} pages (< {p.min_pages})"
            return False
        if len(r) >= 2 and r[-1] * 100 > r[-2] * (100 - p.min_shrink_percent):
            self.stop_reason = (f"the last round wrote {r[-1]} pages after {r[-2]}: "
                                f"it shrank by less than {p.min_shrink_percent}%")
            return False
        return True
