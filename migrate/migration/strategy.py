"""Which pipeline moves a container, and when pre-copy stops iterating.

Pure decisions, unit-tested without CRIU: ``choose`` picks a strategy from
what both hosts' CRIU can do; ``PreCopyController`` decides after each
pre-dump whether another round is worth it (the rules P.Haul and LXD use).
"""

from __future__ import annotations

from migrate._record import record
from migrate.errors import UnsupportedError, UsageError

__all__ = ["STRATEGIES", "HostFeatures", "Choice", "choose", "PreCopyPolicy",
           "PreCopyController"]

STRATEGIES = ("auto", "stop-and-copy", "pre-copy", "post-copy", "hybrid")


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
    strategy: str
    reason: str


def _needs(strategy: str) -> tuple[bool, bool]:
    """(memory tracking, lazy pages) a strategy needs."""
    return {"stop-and-copy": (False, False), "pre-copy": (True, False),
            "post-copy": (False, True), "hybrid": (True, True)}[strategy]


def _missing(strategy: str, src: HostFeatures, dst: HostFeatures) -> str | None:
    mem, lazy = _needs(strategy)
    if mem and not src.mem_track:
        return ("the source kernel has no memory dirty tracking (soft-dirty, "
                "CONFIG_MEM_SOFT_DIRTY): pre-dumps cannot find what changed")
    if lazy and not dst.lazy_pages:
        return "the destination kernel lacks userfaultfd non-cooperative events (lazy pages)"
    if lazy and not src.lazy_pages:
        return "the source CRIU cannot serve lazy pages"
    if lazy and not src.lazy_dump_ok:
        why = src.why_lazy_dump_not_ok or "a lazy dump cannot grow its pipes on the source"
        return (f"{why}; or pass --raise-pipe-max-size to raise it for this migration only "
                "(while it runs, any process may grow its pipes that far)")
    return None


def choose(requested: str, src: HostFeatures, dst: HostFeatures) -> Choice:
    """The strategy to use and why. Raises UsageError for an unknown name,
    UnsupportedError when the requested one cannot work on these hosts."""
    if requested not in STRATEGIES:
        raise UsageError(f"unknown strategy {requested!r}: use {', '.join(STRATEGIES)}")
    if requested != "auto":
        why = _missing(requested, src, dst)
        if why:
            raise UnsupportedError(f"strategy {requested} cannot run here: {why}")
        return Choice(strategy=requested, reason="asked for with --strategy")
    # What is missing -> the strategies it rules out: each reason said once.
    rejected: dict[str, list[str]] = {}
    # Lowest downtime first: hybrid shrinks what the lazy phase must pull,
    # post-copy's downtime does not grow with memory, pre-copy only trims it.
    for strategy in ("hybrid", "post-copy", "pre-copy"):
        why = _missing(strategy, src, dst)
        if why is None:
            return Choice(strategy=strategy, reason=_why_chosen(strategy, _rejections(rejected)))
        rejected.setdefault(why, []).append(strategy)
    return Choice(strategy="stop-and-copy", reason="; ".join(_rejections(rejected)))


def _rejections(rejected: dict[str, list[str]]) -> list[str]:
    return [f"not {' or '.join(names)}: {why}" for why, names in rejected.items()]


def _why_chosen(strategy: str, rejected: list[str]) -> str:
    base = {
        "hybrid": "both hosts track dirty memory and support lazy pages: pre-copy rounds, "
                  "then a lazy final dump",
        "post-copy": "lazy pages work on both hosts: downtime does not grow with memory",
        "pre-copy": "memory tracking works: iterate pre-dumps, then a short final dump",
    }[strategy]
    return "; ".join([base, *rejected])


@record
class PreCopyPolicy:
    """When to stop pre-dumping (P.Haul's and LXD's defaults)."""

    max_iterations: int = 8
    min_pages: int = 64            # stop when a round wrote fewer pages than this
    min_shrink_percent: int = 10   # stop when a round did not shrink by more than this

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise UsageError("--max-iterations must be at least 1")
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
        if r[-1] < p.min_pages:
            self.stop_reason = f"the last round wrote {r[-1]} pages (< {p.min_pages})"
            return False
        if len(r) >= 2 and r[-1] * 100 > r[-2] * (100 - p.min_shrink_percent):
            self.stop_reason = (f"the last round wrote {r[-1]} pages after {r[-2]}: "
                                f"it shrank by less than {p.min_shrink_percent}%")
            return False
        return True
