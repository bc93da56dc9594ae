"""Iterative pre-copy, on a kernel with soft-dirty tracking: runc's
`checkpoint --pre-dump` / `--parent-path` chain, and live migration with
`--strategy pre-copy` and `hybrid` between two netns hosts, there and back.

This machine's kernel has no soft-dirty bit, so these skip here; CI runs
them in scripts/vm/guest.sh's guest (scripts/run-tests.sh does). Containers
are small: the guest is emulated, ~20x slower.
"""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from runtime_helpers import Runtime, time_scale, wait_for

pytestmark = pytest.mark.requires("root", "busybox", "criu", "iptables",
                                  'criu_feature("mem_dirty_track")')

MIB = 16
PAGES = MIB * 256
TOKEN = "precopy-token-51c2"
PORT = 7721
# A buffer that keeps its checksum while ~20 pages a second are rewritten
# (so every round has something new to send), and a counter in the rootfs.
WORKLOAD = (f"ctrhelper memhold {MIB} /tmp/mem 20 & "
            "i=0; while true; do i=$((i+1)); echo $i >> /tmp/log; sleep 0.05; done")


def _counter(bundle):
    try:
        with open(os.path.join(bundle.rootfs, "tmp/log")) as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ValueError):
        return []


def _mem(bundle):
    """(iterations, checksum, intact) from the memory holder."""
    try:
        with open(os.path.join(bundle.rootfs, "tmp/mem")) as f:
            n, checksum, ok = f.read().split()
        return int(n), checksum, ok == "1"
    except (FileNotFoundError, ValueError):
        return None


def _assert_runs_intact(bundle, checksum):
    """The counter advances with no value lost or repeated, and the memory
    holder runs on with the buffer it started with."""
    n = len(_counter(bundle))
    wait_for(lambda: len(_counter(bundle)) > n + 3, what="counter advancing")
    values = _counter(bundle)
    assert values == list(range(1, len(values) + 1)), "a counter value was lost or repeated"
    first = _mem(bundle)
    wait_for(lambda: _mem(bundle)[0] > first[0], what="memory holder running")
    _, now, intact = _mem(bundle)
    assert intact and now == checksum, "the buffer's checksum changed"


def _pages_written(images):
    from migrate.checkpoint.dump import read_dump_stats

    return int(read_dump_stats(str(images)).get("pages_written", 0))


@pytest.fixture
def rw_bundle(bundle):
    bundle.config["root"]["readonly"] = False
    bundle.sh(WORKLOAD)
    return bundle


def test_pre_dump_chain_then_restore(runtime, rw_bundle, cid, tmp_path):
    """runc's flags: two pre-dumps, a dump on top, restore from the chain."""
    runtime("run", "-d", "--bundle", rw_bundle.path, cid).check()
    wait_for(lambda: _mem(rw_bundle), what="memory holder")
    checksum = _mem(rw_bundle)[1]
    runtime("checkpoint", "--pre-dump", "--image-path", str(tmp_path / "pre1"), cid).check()
    assert runtime.state(cid)["status"] == "running"
    runtime("checkpoint", "--pre-dump", "--parent-path", "../pre1",
            "--image-path", str(tmp_path / "pre2"), cid).check()
    assert runtime.state(cid)["status"] == "running"
    runtime("checkpoint", "--parent-path", "../pre2", "--image-path", str(tmp_path / "final"),
            cid).check()
    assert runtime("state", cid).returncode != 0           # gone, as with runc
    rounds = [_pages_written(tmp_path / d) for d in ("pre1", "pre2", "final")]
    print("pages written per round:", rounds)
    assert rounds[0] >= PAGES, rounds
    # soft-dirty at work: later rounds only send what changed since
    assert rounds[1] < rounds[0] // 2 and rounds[2] < rounds[0] // 2, rounds
    runtime("restore", "-d", "--image-path", str(tmp_path / "final"), "--bundle",
            rw_bundle.path, cid).check()
    assert runtime.state(cid)["status"] == "running"
    _assert_runs_intact(rw_bundle, checksum)
    runtime("delete", "--force", cid).check()


class TwoHosts:
    """A runtime root and an agent on each of two netns hosts, so a
    container can go from a to b and back."""

    def __init__(self, hosts, tmp_path, bundle):
        self.hosts, self.tmp, self.bundle = hosts, tmp_path, bundle
        tag = f"{os.getpid()}-{id(self)}"
        self.rt = {"a": Runtime(f"/run/migrate-test/pc-a-{tag}"),
                   "b": Runtime(f"/run/migrate-test/pc-b-{tag}")}
        self.agents: dict[str, subprocess.Popen] = {}
        self.stdio = []

    def host(self, side):
        return getattr(self.hosts, side)

    def work(self, side):
        return self.tmp / f"incoming-{side}"

    def start_agent(self, side):
        rt, log_path = self.rt[side], self.tmp / f"agent-{side}.log"
        log_path.write_text("")
        with open(log_path, "a") as log:
            self.agents[side] = subprocess.Popen(
                ["nsenter", f"--net={self.host(side).path}", *rt.argv, "--root", rt.root,
                 "receive", "--listen", f"{self.host(side).address}:{PORT}", "--token", TOKEN,
                 "--work-dir", str(self.work(side))],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        wait_for(lambda: "listening" in log_path.read_text(), what=f"agent on {side}")

    def kill_agent(self, side):
        agent = self.agents.pop(side, None)
        if agent is not None and agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait(timeout=30)

    def run(self, cid):
        rt = self.rt["a"]
        # stdio: pipes held by the test, as an engine's shim would
        proc = subprocess.Popen([*rt.argv, "--root", rt.root, "run", "-d", "--bundle",
                                 self.bundle.path, cid], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.wait(timeout=60 * time_scale()) == 0
        self.stdio.append(proc)
        wait_for(lambda: len(_counter(self.bundle)) > 3 and _mem(self.bundle), what="workload")
        return _mem(self.bundle)[1]

    def migrate(self, cid, src, dst, *extra):
        rt, report = self.rt[src], self.tmp / f"report-{time.monotonic_ns()}.json"
        argv = ["nsenter", f"--net={self.host(src).path}", *rt.argv, "--root", rt.root,
                "migrate", cid, "--to", f"{self.host(dst).address}:{PORT}", "--token", TOKEN,
                "--quiet", "--report", str(report), "--max-iterations", "4", *extra]
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=300 * time_scale())
        data = json.loads(report.read_text()) if report.exists() else {}
        return res.returncode, res.stdout + res.stderr, data

    def cleanup(self):
        for side in list(self.agents):
            self.kill_agent(side)
        for rt in self.rt.values():
            rt.cleanup()
        for p in self.stdio:
            for f in (p.stdin, p.stdout):
                f.close()


@pytest.fixture
def two_hosts(netns_hosts, tmp_path, rw_bundle):
    rw_bundle.write()
    t = TwoHosts(netns_hosts, tmp_path, rw_bundle)
    yield t
    t.cleanup()


def _check_rounds(report, strategy):
    assert report["succeeded"] and report["strategy"] == strategy, report
    rounds = [i for i in report["iterations"] if not i["final"]]
    final = [i for i in report["iterations"] if i["final"]]
    print(strategy, "pages per round:", [i["pages_written"] for i in report["iterations"]],
          "downtime", report["downtime_s"], "total", report["total_s"])
    assert len(rounds) >= 2 and len(final) == 1, report["iterations"]
    assert rounds[0]["pages_written"] >= PAGES, rounds       # the whole buffer, once
    # later rounds send only what was dirtied meanwhile
    assert all(r["pages_written"] < rounds[0]["pages_written"] // 2 for r in rounds[1:]), rounds
    # the final dump (frozen) sends what changed since the last round; under
    # emulation a round takes seconds, so that is not tiny, but not everything
    assert final[0]["pages_written"] < rounds[0]["pages_written"] // 2, final
    assert rounds[-1]["stop_reason"] and "pre-copy stopped" in report["reason"]
    assert not any(r["stop_reason"] for r in rounds[:-1])


@pytest.mark.requires("netns")
@pytest.mark.parametrize("strategy", ["pre-copy", "hybrid"])
def test_migrate_there_and_back(two_hosts, cid, strategy):
    import needs

    if strategy == "hybrid" and needs.criu_feature("uffd-noncoop") is not None:
        pytest.skip("hybrid needs lazy pages: " + needs.criu_feature("uffd-noncoop"))
    checksum = two_hosts.run(cid)
    two_hosts.start_agent("b")
    two_hosts.start_agent("a")
    # there: a fresh container; back: one that CRIU restored (its tasks came
    # out of a restore, which is what a second move must seize and pre-dump)
    for src, dst in (("a", "b"), ("b", "a")):
        code, out, report = two_hosts.migrate(cid, src, dst, "--strategy", strategy)
        assert code == 0, out
        _check_rounds(report, strategy)
        assert two_hosts.rt[src].status(cid) == "gone"
        assert two_hosts.rt[dst].state(cid)["status"] == "running"
        _assert_runs_intact(two_hosts.bundle, checksum)


@pytest.mark.requires("netns")
def test_agent_killed_between_rounds_leaves_the_source_running(two_hosts, cid):
    checksum = two_hosts.run(cid)
    two_hosts.start_agent("b")
    work = two_hosts.work("b")

    def second_round_started():
        # the destination makes pre/2 when the source asks for round 2's page server
        return any(os.path.isdir(work / n / "pre" / "2") for n in os.listdir(work)
                   if n.startswith(cid + "-")) if work.is_dir() else False

    def kill_then():
        try:
            wait_for(second_round_started, timeout=120, what="round 2")
        finally:
            two_hosts.kill_agent("b")

    killer = threading.Thread(target=kill_then, daemon=True)
    killer.start()
    code, out, report = two_hosts.migrate(cid, "a", "b", "--strategy", "pre-copy",
                                          "--min-pages", "0", "--min-shrink", "0")
    killer.join(timeout=30)
    assert code != 0, out
    assert two_hosts.rt["a"].state(cid)["status"] == "running"
    _assert_runs_intact(two_hosts.bundle, checksum)
    # nothing left on b: a new agent clears what the dead one left
    assert two_hosts.rt["b"].status(cid) == "gone"
    two_hosts.start_agent("b")
    wait_for(lambda: not any(n.startswith(cid + "-") for n in os.listdir(work)),
             timeout=20, what="the destination's leftovers removed")


def _lock_states(state_dir, stop, seen):
    """Sample the container's lock (flock on its state directory) until
    ``stop``: "free", "held" or "gone", consecutive repeats collapsed."""
    import fcntl

    while not stop.is_set():
        try:
            fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            state = "gone"
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                state = "free"
            except BlockingIOError:
                state = "held"
            finally:
                os.close(fd)        # releases it at once if we got it
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.002)


@pytest.mark.requires("netns")
def test_the_container_stays_locked_from_the_first_round_to_the_commit(two_hosts, cid):
    """No other command (pause, checkpoint, delete) can slip in between the
    pre-dump rounds and the final dump: the lock is taken once. (It used to
    be released between them, while the agent started the next page server.)"""
    two_hosts.run(cid)
    two_hosts.start_agent("b")
    stop, seen = threading.Event(), []
    sampler = threading.Thread(target=_lock_states, daemon=True,
                               args=(os.path.join(two_hosts.rt["a"].root, cid), stop, seen))
    sampler.start()
    try:
        code, out, report = two_hosts.migrate(cid, "a", "b", "--strategy", "pre-copy",
                                              "--min-pages", "0", "--min-shrink", "0")
    finally:
        stop.set()
        sampler.join(timeout=10)
    assert code == 0, out
    assert len([i for i in report["iterations"] if not i["final"]]) >= 2, report["iterations"]
    assert seen == ["free", "held", "gone"], seen
