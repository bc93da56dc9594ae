"""Content pre-copy between two netns hosts (issue 14): rounds that hash
memory instead of asking the kernel's soft-dirty bit."""

import os
import re
import signal

import pytest
from runtime_helpers import lazy_pages_daemons, wait_for

from test_migration import _listdir, _soft_dirty, _when, pair  # noqa: F401 - the fixture

# What becomes content pre-copy here: pre-copy without soft-dirty; with it,
# content pre-copy must be asked for by name.


def _strategy():
    return "content-pre-copy" if _soft_dirty() else "pre-copy"


def _store(workdir):
    """The destination's page store: in memory (a tmpfs) when it fits."""
    from migrate.migration.content.destination import memory_store_path

    memory = memory_store_path(workdir)
    return memory if os.path.isdir(memory) else os.path.join(workdir, "content")


def _memory_stores(cid):
    from migrate.migration.content.destination import MEMORY_DIR

    return [n for n in _listdir(MEMORY_DIR) if n.startswith(f"migrate-content-{cid}-")]


def _in_a_round(workdir):
    # the page store exists: the first round's pages are arriving
    return any(n.startswith("pages-") for n in _listdir(_store(workdir)))


def _in_the_final_round(workdir):
    # the final dump's images are arriving (the container is frozen)
    return any(n.startswith("pagemap-") for n in _listdir(os.path.join(workdir, "images")))


def test_content_pre_copy_moves_the_container(pair, cid):  # noqa: F811
    pair.start_agent()
    pair.run_container(cid)
    before = pair.mem()
    code, out, report = pair.migrate(cid, "--strategy", _strategy())
    assert code == 0, out
    # 64 MiB: restored at once from the store (below pipeline.LAZY_LOCAL_MIN_BYTES)
    assert "restored with lazy pages" not in report["reason"]
    if report["compression"] == "zstd":
        # memhold's buffer is pseudo-random: a sample of it does not compress
        assert "pages sent without compression" in report["reason"]
    assert report["succeeded"] and report["strategy"] == "content-pre-copy"
    assert "content rounds" in report["reason"]
    if not _soft_dirty():
        assert "pre-copy asked for" in report["reason"] and "soft-dirty" in report["reason"]
    rounds = [i for i in report["iterations"] if not i["final"]]
    # Nothing writes: a sample after round 1 finds (almost) nothing changed,
    # so another round cannot pay for its scan. The rule that ended the
    # rounds is on the last one it judged (one more round follows if the
    # destination had to compact its store), with its numbers.
    assert 1 <= len(rounds) <= 2, rounds
    (why,) = [r["stop_reason"] for r in rounds if r["stop_reason"]]
    assert why.startswith("another round would not pay") and "MiB changed" in why, why
    assert f"pre-copy stopped: {why}" in report["reason"]
    steps = rounds[0]["steps"]
    assert {"processes", "ranges", "read", "hash+records", "send", "reply",
            "sample changed"} <= set(steps) and steps["read"] > 0, steps
    assert rounds[0]["pages_written"] * 4096 >= 64 << 20       # the buffer, in round 1
    final = report["iterations"][-1]
    assert final["final"] and final["pages_written"] < rounds[0]["pages_written"] // 4
    assert pair.a.status(cid) == "gone"
    pair.assert_running_on(pair.b, cid)
    assert pair.mem()[1] == before[1]



@pytest.mark.parametrize("when", [_in_a_round, _in_the_final_round], ids=["round", "final"])
def test_agent_killed(pair, cid, when):  # noqa: F811
    pair.start_agent()
    pair.run_container(cid)
    watcher = _when(pair, cid, when, pair.stop_agent)
    code, out, report = pair.migrate(cid, "--strategy", _strategy())
    watcher.join(timeout=5)
    # Never frozen (a round), or frozen and resumed (the final round): the
    # source runs on either way.
    pair.assert_rolled_back(cid, code, out, agent_died=True)
    # the new agent swept the dead one's page store too
    assert not _memory_stores(cid)


def test_link_down_in_the_final_round(pair, cid):  # noqa: F811
    pair.start_agent()
    pair.run_container(cid)
    watcher = _when(pair, cid, _in_the_final_round, pair.hosts.a.link_down)
    try:
        code, out, _ = pair.migrate(cid, "--strategy", _strategy(), timeout=120)
    finally:
        watcher.join(timeout=5)
        pair.hosts.a.link_up()
    pair.assert_rolled_back(cid, code, out)
    assert not _memory_stores(cid)


def test_pages_that_change_during_the_rounds_arrive_changed(pair, cid):  # noqa: F811
    """The writer changes 2000 pages/s (new values, its running sum kept in
    step): every round finds changed pages, and the final dump's changed
    pages must reach the destination, or its sum check fails there."""
    pair.start_agent()
    pair.run_container(cid, script=("ctrhelper memhold 64 /tmp/mem 2000 new & "
                                    "i=0; while true; do i=$((i+1)); echo $i >> /tmp/log; "
                                    "sleep 0.05; done"))
    # At 64 MiB another round would not pay (the rule above): ask for them.
    code, out, report = pair.migrate(cid, "--strategy", _strategy(), "--min-iterations", "2")
    assert code == 0, out
    rounds = [i for i in report["iterations"] if not i["final"]]
    final = report["iterations"][-1]
    # Later rounds find the changes (one of them may find none when the
    # writer was not scheduled during it, on a loaded machine).
    assert len(rounds) >= 2 and rounds[0]["pages_written"] > 0, rounds
    assert sum(r["pages_written"] for r in rounds[1:]) > 0, rounds
    assert final["final"] and final["pages_written"] > 0, final
    # On the wire: the memory once, plus what changed, plus a little.
    changed = sum(i["pages_written"] for i in report["iterations"][1:]) * 4096
    assert report["bytes_on_wire"] <= (64 << 20) * 1.05 + changed, report["bytes_on_wire"]
    pair.assert_running_on(pair.b, cid)          # the sum check holds there


def _workdir(pair, cid):
    (name,) = [n for n in _listdir(pair.work) if n.startswith(cid + "-")]
    return os.path.join(pair.work, name)


def _assert_every_page_copied_in(workdir, mib):
    """Wait for the destination's local lazy-pages daemon to end; its log has
    one line per process: memhold (``mib`` MiB) got all its pages (a child
    the shell forks after the resume, `sleep`, may exit before it needed
    all of its)."""
    log = os.path.join(workdir, "criu", "lazy-pages.log")

    def transferred():
        with open(log) as f:
            return re.findall(r"UFFD transferred pages: \((\d+)/(\d+)\)", f.read())

    done = wait_for(lambda: not lazy_pages_daemons(workdir) and transferred(), timeout=60,
                    what="the lazy-pages daemon done")
    copied, total = max((int(c), int(t)) for c, t in done)
    assert copied == total >= (mib << 20) // 4096, done


# Lazy restores start from pipeline.LAZY_LOCAL_MIN_BYTES (128 MiB) of memory.
BIG = ("ctrhelper memhold 192 /tmp/mem & "
       "i=0; while true; do i=$((i+1)); echo $i >> /tmp/log; sleep 0.05; done")


def test_the_destination_restores_lazily_from_its_store(pair, cid):  # noqa: F811
    """The destination already holds every page: CRIU restores with lazy
    pages served by a local lazy-pages daemon from the store's files, which
    copies them all in after the tasks resume (nothing pulled over the
    link). Every page arrives, and the buffer's checksum, verified by the
    container after it resumed, holds."""
    pair.start_agent()
    pair.run_container(cid, script=BIG)
    code, out, report = pair.migrate(cid, "--strategy", _strategy())
    assert code == 0, out
    assert "restored with lazy pages from the destination's page store" in report["reason"]
    workdir = _workdir(pair, cid)
    _assert_every_page_copied_in(workdir, 192)
    # the store (in memory here) and the images went when the migration
    # ended (the daemon kept them open)
    from migrate.migration.content.destination import MEMORY_DIR

    if os.path.isdir(MEMORY_DIR):
        assert "the page store was in memory" in report["reason"]
    assert not os.path.exists(os.path.join(workdir, "content"))
    assert not _memory_stores(cid)
    # memhold sums its whole buffer every 10th iteration: wait for one made
    # after the migration
    first = pair.mem()
    wait_for(lambda: pair.mem()[0] > first[0] + 11, what="a full checksum after resuming")
    pair.assert_running_on(pair.b, cid)
    assert pair.a.status(cid) == "gone"


def test_stop_and_copy_restores_lazily_from_the_images(pair, cid):  # noqa: F811
    """The same local lazy restore for stop-and-copy (its images hold every
    page before RESTORE): CRIU restores without reading the memory while
    frozen, every page is copied in after the resume, the checksum holds."""
    pair.start_agent()
    pair.run_container(cid, script=BIG)
    code, out, report = pair.migrate(cid, "--strategy", "stop-and-copy")
    assert code == 0, out
    assert "restored with lazy pages from the images at the destination" in report["reason"]
    _assert_every_page_copied_in(_workdir(pair, cid), 192)
    first = pair.mem()
    wait_for(lambda: pair.mem()[0] > first[0] + 11, what="a full checksum after resuming")
    pair.assert_running_on(pair.b, cid)
    assert pair.a.status(cid) == "gone"


def test_lazy_pages_daemon_killed_during_the_restore(pair, cid):  # noqa: F811
    """The destination's lazy-pages daemon dies as the restore starts: the
    restore fails there, the source resumes and nothing is left behind."""
    pair.start_agent()
    pair.run_container(cid, script=BIG)

    def daemon_started(workdir):
        return os.path.exists(os.path.join(workdir, "criu", "lazy-pages.log")) and \
            lazy_pages_daemons(workdir)

    killed = []

    def kill():
        for workdir in [os.path.join(pair.work, n) for n in _listdir(pair.work)
                        if n.startswith(cid + "-")]:
            for pid in lazy_pages_daemons(workdir):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    watcher = _when(pair, cid, daemon_started, kill)
    code, out, _ = pair.migrate(cid, "--strategy", _strategy())
    watcher.join(timeout=5)
    assert killed, "the lazy-pages daemon was never seen"
    pair.assert_rolled_back(cid, code, out)
    assert not _memory_stores(cid)
