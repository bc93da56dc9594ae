"""The options a pre-dump chain sends, round by round."""

import pytest

from migrate.criu_rpc import CriuOptions, PageServer, plan_pre_dump_chain, to_criu_opts
from migrate.errors import UsageError


def test_chain_links_each_round_to_the_one_before():
    final = CriuOptions(pid=77, leave_running=True, tcp_established=True)
    plans = plan_pre_dump_chain(final, ["/c/pre-1", "/c/pre-2", "/c/dump"])
    assert [p.images_dir for p in plans] == ["/c/pre-1", "/c/pre-2", "/c/dump"]
    assert [p.parent_img for p in plans] == [None, "../pre-1", "../pre-2"]
    assert all(p.track_mem for p in plans)
    assert all(p.pid == 77 and p.tcp_established for p in plans)
    # Only the final dump carries the caller's final state.
    assert [p.leave_running for p in plans] == [False, False, True]


def test_chain_wire_format():
    plans = plan_pre_dump_chain(CriuOptions(pid=5), ["/c/1", "/c/2"])
    wire = [to_criu_opts(p, images_dir_fd=10 + i) for i, p in enumerate(plans)]
    assert [(o.images_dir_fd, o.track_mem, o.parent_img) for o in wire] == [
        (10, True, ""), (11, True, "../1")]
    assert not wire[0].has("parent_img") and wire[1].has("parent_img")


def test_lazy_pages_only_on_the_final_dump():
    final = CriuOptions(pid=5, lazy_pages=True, ps=PageServer(address="10.0.0.2", port=27000))
    plans = plan_pre_dump_chain(final, ["/c/1", "/c/2"])
    assert [p.lazy_pages for p in plans] == [False, True]
    assert all(p.ps == final.ps for p in plans)


def test_parent_of_the_first_round_and_nested_dirs():
    plans = plan_pre_dump_chain(CriuOptions(pid=5, parent_img="../old"), ["/c/a/1", "/c/b/2"])
    assert [p.parent_img for p in plans] == ["../old", "../../a/1"]


def test_single_round_is_just_the_dump():
    (only,) = plan_pre_dump_chain(CriuOptions(pid=5), ["/c/dump/"])
    assert only.images_dir == "/c/dump" and only.parent_img is None and only.track_mem


@pytest.mark.parametrize("dirs", [[], ["/a", "/a/"]])
def test_bad_chains(dirs):
    with pytest.raises(UsageError):
        plan_pre_dump_chain(CriuOptions(pid=5), dirs)
