import pytest

from migrate.errors import UnsupportedError, UsageError
from migrate.migration.strategy import (HostFeatures, PreCopyController, PreCopyPolicy,
                                        Strategy, choose, parse_strategy)

ALL = HostFeatures(mem_track=True, lazy_pages=True)
LAZY = HostFeatures(mem_track=False, lazy_pages=True)       # these machines
MEM = HostFeatures(mem_track=True, lazy_pages=False)
NONE = HostFeatures(mem_track=False, lazy_pages=False)
MEM_LAZY_DST = HostFeatures(mem_track=True, lazy_pages=True)
NO_PIPES = HostFeatures(mem_track=False, lazy_pages=True, lazy_dump_ok=False,
                        why_lazy_dump_not_ok="fs.pipe-max-size is 1048576")


S = Strategy


@pytest.mark.parametrize("src,dst,want", [
    (ALL, ALL, S.HYBRID), (LAZY, LAZY, S.POST_COPY), (MEM, MEM, S.PRE_COPY),
    (ALL, MEM, S.PRE_COPY), (MEM, ALL, S.PRE_COPY), (NONE, NONE, S.CONTENT_PRE_COPY),
    (LAZY, NONE, S.CONTENT_PRE_COPY), (NO_PIPES, LAZY, S.CONTENT_PRE_COPY),
])
def test_auto_picks_the_best_that_works(src, dst, want):
    choice = choose(None, src, dst)
    assert choice.strategy is want
    assert choice.reason


def test_auto_explains_what_it_rejected():
    choice = choose(None, LAZY, LAZY)
    assert "not hybrid" in choice.reason and "soft-dirty" in choice.reason
    choice = choose(None, NO_PIPES, LAZY)
    assert "pipe-max-size" in choice.reason


def test_pre_copy_without_soft_dirty_is_content_pre_copy_and_says_why():
    choice = choose(S.PRE_COPY, LAZY, LAZY)
    assert choice.strategy is S.CONTENT_PRE_COPY
    assert "soft-dirty" in choice.reason and "hashes every page" in choice.reason
    assert choose(S.PRE_COPY, MEM, MEM).strategy is S.PRE_COPY         # CRIU's pre-dumps
    assert choose(S.CONTENT_PRE_COPY, MEM, MEM).strategy is S.CONTENT_PRE_COPY
    assert choose(S.CONTENT_PRE_COPY, NONE, NONE).strategy is S.CONTENT_PRE_COPY
    # auto's last resort is content pre-copy, not stop-and-copy
    choice = choose(None, NONE, NONE)
    assert choice.strategy is S.CONTENT_PRE_COPY and "hash the memory" in choice.reason


def test_auto_weighs_post_copys_window_without_rollback():
    mib = 1 << 20
    small = choose(None, LAZY, LAZY, memory=64 * mib)
    assert small.strategy is S.POST_COPY and "window without rollback is about 0.5 s" in small.reason
    big = choose(None, LAZY, LAZY, memory=1024 * mib)
    assert big.strategy is S.CONTENT_PRE_COPY
    assert "not post-copy: its 1024 MiB would take about 9 s" in big.reason
    assert "loses the container" in big.reason
    # with soft-dirty, CRIU's pre-copy rather than content
    assert choose(None, MEM_LAZY_DST, LAZY, memory=1024 * mib).strategy is S.HYBRID
    assert choose(None, MEM, LAZY, memory=1024 * mib).strategy is S.PRE_COPY


def test_explicit_strategy_that_cannot_work_is_refused():
    with pytest.raises(UnsupportedError, match="post-copy.*lazy pages"):
        choose(S.POST_COPY, MEM, MEM)
    with pytest.raises(UnsupportedError, match="hybrid.*dirty tracking"):
        choose(S.HYBRID, LAZY, LAZY)
    assert choose(S.STOP_AND_COPY, NONE, NONE).strategy is S.STOP_AND_COPY


def test_strategy_names_are_parsed_once_into_the_enum():
    assert parse_strategy("auto") is None
    assert [parse_strategy(s.value) for s in Strategy] == list(Strategy)
    assert [s.value for s in Strategy] == ["stop-and-copy", "pre-copy", "post-copy", "hybrid",
                                           "content-pre-copy"]
    with pytest.raises(UsageError, match="unknown strategy 'teleport': use auto, stop-and-copy"):
        parse_strategy("teleport")
    with pytest.raises(UsageError):
        parse_strategy("STOP_AND_COPY")


def test_every_strategy_has_its_module_and_pipeline():
    """One enum member, one sibling module holding a Pipeline."""
    import importlib

    from migrate.migration.strategies import Pipeline

    for s in Strategy:
        pipeline = importlib.import_module(s.module).PIPELINE()
        assert isinstance(pipeline, Pipeline)
        # The plan is lazy exactly when the strategy needs lazy pages.
        assert pipeline.lazy is s.lazy_pages


def _run(pages, **policy):
    c = PreCopyController(PreCopyPolicy(**policy))
    done = []
    for p in pages:
        assert c.should_continue()
        c.record(p)
        done.append(p)
        if not c.should_continue():
            break
    return done, c.stop_reason


def test_precopy_stops_below_the_page_threshold():
    assert _run([10000, 5000, 50, 10]) == ([10000, 5000, 50], "the last round wrote 50 pages (< 64)")


def test_precopy_stops_when_not_shrinking():
    done, why = _run([10000, 9500, 9000])
    assert done == [10000, 9500] and "shrank by less than 10%" in why


def test_precopy_stops_at_max_iterations():
    done, why = _run([1000 // (i + 1) * 100 for i in range(20)], max_iterations=3,
                     min_shrink_percent=0)
    assert len(done) == 3 and "3 iterations" in why


def test_precopy_runs_at_least_min_iterations():
    # the page threshold would stop after the first; min_iterations overrides it
    done, _ = _run([10, 5, 1, 1], min_iterations=3)
    assert done == [10, 5, 1]
    done, why = _run([10, 5, 1, 1], min_iterations=3, max_iterations=3)
    assert done == [10, 5, 1] and "3 iterations" in why


def test_policy_validation():
    for bad in ({"max_iterations": 0}, {"min_pages": -1}, {"min_shrink_percent": 100},
                {"min_iterations": 0}, {"min_iterations": 9}):
        with pytest.raises(UsageError):
            PreCopyPolicy(**bad)


def test_a_fresh_machine_hears_each_reason_once_and_the_fix():
    # No soft-dirty, lazy pages supported, fs.pipe-max-size at its 1 MiB default.
    src = HostFeatures(mem_track=False, lazy_pages=True, lazy_dump_ok=False,
                       why_lazy_dump_not_ok="lazy pages: fs.pipe-max-size is 1048576")
    c = choose(None, src, LAZY)
    assert c.strategy is S.CONTENT_PRE_COPY
    assert c.reason.count("fs.pipe-max-size is 1048576") == 1
    assert c.reason.count("dirty tracking") == 1
    assert c.reason.count("--raise-pipe-max-size") == 1
    assert "not hybrid or pre-copy" in c.reason and "not post-copy" in c.reason
