"""Live migration between two network-namespace hosts, with real CRIU and
real containers: every strategy this kernel supports, and failure injection.

The agent runs on host b, the source command on host a; both through
``nsenter --net`` (not ``ip netns exec``, which remounts /sys and hides the
cgroup hierarchies CRIU needs). Each host has its own --root.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from runtime_helpers import wait_for as _wait_for

from runtime_helpers import Runtime, lazy_pages_daemons, time_scale

pytestmark = pytest.mark.requires("root", "busybox", "criu", "iptables", "netns")

TOKEN = "test-token-7f3a"
PORT = 7711
WORKLOAD = ("ctrhelper memhold 64 /tmp/mem & "
            "i=0; while true; do i=$((i+1)); echo $i >> /tmp/log; sleep 0.05; done")




def _nsenter(host, argv):
    return ["nsenter", f"--net={host.path}", *argv]


class Pair:
    """Two hosts, a runtime root on each, the agent on b."""

    def __init__(self, hosts, tmp_path, bundle):
        self.hosts = hosts
        self.tmp = tmp_path
        self.bundle = bundle
        self.a = Runtime(f"/run/migrate-test/mig-a-{os.getpid()}-{id(self)}")
        self.b = Runtime(f"/run/migrate-test/mig-b-{os.getpid()}-{id(self)}")
        self.work = tmp_path / "incoming"
        self.agent = None
        self.agents = []          # every agent started, killed at cleanup
        self.pipes = []

    def start_agent(self, *extra, work=None, debug=False, cwd=None):
        log_path = self.tmp / "agent.log"
        # The log is shared by every agent of the test: wait for this one's line.
        before = log_path.read_text().count("listening") if log_path.exists() else 0
        log = open(log_path, "a")
        self.agent = subprocess.Popen(
            _nsenter(self.hosts.b, [*self.b.argv, *(["--debug"] if debug else []),
                                    "--root", self.b.root, "receive", "--listen",
                                    f"{self.hosts.b.address}:{PORT}", "--token", TOKEN,
                                    "--work-dir", str(work or self.work), *extra]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=cwd)
        self.agents.append(self.agent)
        _wait_for(lambda: log_path.read_text().count("listening") > before, what="agent")

    def stop_agent(self, agent=None):
        agent = agent or self.agent
        if agent is not None and agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait(timeout=10)

    def run_container(self, cid, script=WORKLOAD):
        self.bundle.sh(script)
        # stdio: pipes held by the test, as an engine's shim would
        proc = subprocess.Popen([*self.a.argv, "--root", self.a.root, "run", "-d", "--bundle",
                                 self.bundle.path, cid], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.wait(timeout=30) == 0
        self.pipes.append(proc)
        _wait_for(lambda: len(self.log()) > 3 and self.mem(), what="workload")

    def migrate(self, cid, *extra, timeout=120):
        report = self.tmp / f"report-{len(self.pipes)}-{time.monotonic_ns()}.json"
        argv = _nsenter(self.hosts.a, [*self.a.argv, "--root", self.a.root, "migrate", cid,
                                       "--to", f"{self.hosts.b.address}:{PORT}", "--token",
                                       TOKEN, "--quiet", "--report", str(report), *extra])
        with open(self.tmp / "migrate.out", "w+") as out:
            res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 timeout=timeout * time_scale())
            out.seek(0)
            text = out.read()
        data = json.loads(report.read_text()) if report.exists() else {}
        return res.returncode, text, data

    def log(self, rootfs=None):
        path = os.path.join(rootfs or self.bundle.rootfs, "tmp/log")
        try:
            with open(path) as f:
                return [int(x) for x in f.read().split()]
        except (FileNotFoundError, ValueError):
            return []

    def mem(self, rootfs=None):
        try:
            with open(os.path.join(rootfs or self.bundle.rootfs, "tmp/mem")) as f:
                n, checksum, ok = f.read().split()
            return int(n), checksum, ok == "1"
        except (FileNotFoundError, ValueError):
            return None

    def assert_running_on(self, rt, cid, rootfs=None):
        assert rt.state(cid)["status"] == "running"
        n = len(self.log(rootfs))
        _wait_for(lambda: len(self.log(rootfs)) > n + 3, what="counter advancing")
        values = self.log(rootfs)
        assert values == list(range(1, len(values) + 1)), "a counter value was lost or repeated"
        self.assert_memory_intact(rootfs)

    def assert_memory_intact(self, rootfs=None):
        """The memory holder, running, sums its whole buffer again (it does
        on every tenth line it writes, the ones whose counter ends in 1:
        the others repeat the expected sum) and finds it unchanged."""
        first = self.mem(rootfs)
        _wait_for(lambda: (m := self.mem(rootfs)) and m[0] > first[0] and m[0] % 10 == 1,
                  timeout=20, what="memory holder summing its buffer again")
        assert self.mem(rootfs)[2], "the memory holder's buffer changed (lost or stale pages)"

    def assert_rolled_back(self, cid, code, out, *, agent_died=False):
        """The migration failed, the source was resumed and runs on, and
        nothing is left at the destination (after a dead agent: once a new
        one has cleared what it left)."""
        assert code != 0 and "resumed" in out, out
        self.assert_running_on(self.a, cid)
        if agent_died:
            assert self.b.status(cid) == "gone"
            self.start_agent()
        self.assert_nothing_at_destination(cid)

    def assert_nothing_at_destination(self, cid):
        assert self.b.status(cid) == "gone"
        _wait_for(lambda: not any(n.startswith(cid + "-") for n in _listdir(self.work)),
                  timeout=20, what="the destination work directory removed")

    def cleanup(self):
        # All of them: a test that restarts the agent must not leave the
        # first one (and its page servers) running for the rest of the run.
        for agent in self.agents:
            self.stop_agent(agent)
        self.a.cleanup()
        self.b.cleanup()
        for p in self.pipes:
            for f in (p.stdin, p.stdout):
                if f:
                    f.close()


def _listdir(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


@pytest.fixture
def pair(netns_hosts, tmp_path, bundle):
    bundle.config["root"]["readonly"] = False
    bundle.write()
    p = Pair(netns_hosts, tmp_path, bundle)
    yield p
    p.cleanup()


def _soft_dirty():
    import needs

    return needs.criu_feature("mem_dirty_track") is None


def _supported(strategy):
    import needs

    mem = needs.criu_feature("mem_dirty_track") is None
    lazy = needs.criu_feature("uffd-noncoop") is None
    with open("/proc/sys/fs/pipe-max-size") as f:
        pipes = int(f.read()) >= 4 << 20
    # pre-copy works everywhere: CRIU's pre-dumps with soft-dirty, content
    # pre-copy without (test_migration_content.py)
    return {"stop-and-copy": True, "post-copy": lazy and pipes, "pre-copy": True,
            "hybrid": mem and lazy and pipes}[strategy]


@pytest.mark.parametrize("strategy", ["stop-and-copy", "post-copy", "pre-copy", "hybrid"])
def test_strategy(pair, cid, strategy):
    pair.start_agent()
    pair.run_container(cid)
    before = pair.mem()
    pid = pair.a.state(cid)["pid"]
    cgroup_tree = _cgroup_tmpfs(pid)
    # /dev and /dev/shm are copied while frozen, not tarred by CRIU
    # (checkpoint.tmpfs_copy): what the container wrote there comes along.
    with open(f"/proc/{pid}/root/dev/shm/note", "w") as f:
        f.write("written before the migration")
    os.chmod(f"/proc/{pid}/root/dev/shm/note", 0o640)
    dev = _tree(f"/proc/{pid}/root/dev")
    code, out, report = pair.migrate(cid, "--strategy", strategy)
    if not _supported(strategy):
        assert code != 0 and f"strategy {strategy} cannot run here" in out, out
        assert "soft-dirty" in out or "lazy" in out or "pipe" in out
        pair.assert_running_on(pair.a, cid)          # refused before any freeze
        pair.assert_nothing_at_destination(cid)
        return
    assert code == 0, out
    assert report["succeeded"]
    if strategy == "pre-copy" and not _soft_dirty():
        assert report["strategy"] == "content-pre-copy" and "soft-dirty" in report["reason"]
    else:
        assert report["strategy"] == strategy
    assert report["downtime_s"] > 0 and report["total_s"] >= report["downtime_s"]
    pages = sum(i["pages_written"] for i in report["iterations"])
    assert pages * 4096 >= 64 << 20, report["iterations"]   # the whole buffer moved
    assert pair.a.status(cid) == "gone"                     # deleted on the source
    pair.assert_running_on(pair.b, cid)
    assert pair.mem()[1] == before[1]                       # same checksum
    # The empty masked tmpfs mounts were not tarred: they came back as binds
    # of one fresh read-only tmpfs (an untarred copy would be one each).
    with open(f"/proc/{pair.b.state(cid)['pid']}/mountinfo") as f:
        masked = [line.split() for line in f if " - tmpfs " in line and line.split()[4] in
                  ("/proc/acpi", "/proc/scsi", "/sys/firmware")]
    assert masked and all("ro" in m[5].split(",") for m in masked)
    assert len({m[2] for m in masked}) == 1, masked
    # /sys/fs/cgroup (a read-only tmpfs of mount points and symlinks on a v1
    # host) is the same tree, read-only, whether it came back tarred or
    # made ahead at the destination (externals.RO_TMPFS).
    assert _cgroup_tmpfs(pair.b.state(cid)["pid"]) == cgroup_tree
    new = pair.b.state(cid)["pid"]
    assert _tree(f"/proc/{new}/root/dev") == dev
    with open(f"/proc/{new}/root/dev/shm/note") as f:
        assert f.read() == "written before the migration"
    assert os.stat(f"/proc/{new}/root/dev/shm/note").st_mode & 0o777 == 0o640


def _tree(top: str):
    """Names, kinds, modes, owners and device numbers below ``top`` (not
    into /dev/pts, whose entries are the pty's own)."""
    out = []
    for parent, dirs, files in os.walk(top):
        if os.path.relpath(parent, top) == "pts":
            dirs[:] = []
            continue
        for name in sorted(dirs + files):
            st = os.lstat(os.path.join(parent, name))
            out.append((os.path.relpath(os.path.join(parent, name), top), st.st_mode,
                        st.st_uid, st.st_gid, st.st_rdev))
    return sorted(out)


def _cgroup_tmpfs(pid: int):
    """/sys/fs/cgroup in the container: its mount options if a tmpfs, and
    its entries (symlinks with their targets)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        line = next((line.split() for line in f if line.split()[4] == "/sys/fs/cgroup"), None)
    if line is None or line[line.index("-") + 1] != "tmpfs":
        return None
    top = f"/proc/{pid}/root/sys/fs/cgroup"
    return (sorted(set(line[5].split(",")) - {"relatime"}),
            sorted((n, os.readlink(os.path.join(top, n)) if os.path.islink(os.path.join(top, n))
                    else "") for n in os.listdir(top)))


def test_auto_says_what_it_picked(pair, cid):
    pair.start_agent()
    pair.run_container(cid)
    code, out, report = pair.migrate(cid, "--strategy", "auto")
    assert code == 0, out
    # The container holds ~64 MiB: post-copy's window without rollback is
    # short enough for auto. Without lazy pages or soft-dirty, the last
    # resort is content pre-copy, not stop-and-copy.
    want = next(s for s in ("hybrid", "post-copy", "pre-copy") if _supported(s)) \
        if any(_supported(s) for s in ("hybrid", "post-copy", "pre-copy")) else "content-pre-copy"
    assert report["strategy"] == want, report["reason"]
    assert report["reason"]
    pair.assert_running_on(pair.b, cid)


def test_rootfs_copy_keeps_writes_made_during_migration(pair, cid):
    pair.start_agent()
    pair.run_container(cid)
    code, out, report = pair.migrate(cid, "--strategy", "stop-and-copy", "--rootfs", "copy")
    assert code == 0, out
    phases = {p["name"] for p in report["phases"]}
    assert {"rootfs", "rootfs-diff"} <= phases
    workdirs = [n for n in _listdir(pair.work) if n.startswith(cid + "-")]
    assert len(workdirs) == 1
    copy_rootfs = os.path.join(pair.work, workdirs[0], "bundle", "rootfs")
    assert pair.b.state(cid)["bundle"] == os.path.join(pair.work, workdirs[0], "bundle")
    source_final = pair.log()
    copied = pair.log(copy_rootfs)
    # every value written up to the freeze is in the copy, and it goes on from there
    assert copied[:len(source_final)] == source_final
    pair.assert_running_on(pair.b, cid, rootfs=copy_rootfs)


def test_wrong_token(pair, cid):
    pair.start_agent()
    pair.run_container(cid)
    argv = _nsenter(pair.hosts.a, [*pair.a.argv, "--root", pair.a.root, "migrate", cid, "--to",
                                   f"{pair.hosts.b.address}:{PORT}", "--token", "wrong",
                                   "--quiet"])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode != 0 and "token" in res.stderr.lower(), res.stderr
    pair.assert_running_on(pair.a, cid)
    pair.assert_nothing_at_destination(cid)


def test_version_mismatch(pair, cid, monkeypatch):
    from migrate.migration import Agent, protocol
    from migrate.testing.migration import FakeHostFacts

    monkeypatch.setattr(protocol, "PROTOCOL_VERSION", protocol.PROTOCOL_VERSION + 1)
    with pair.hosts.b.entered():
        agent = Agent(pair.hosts.b.address, PORT, TOKEN, pair.b.root,
                      work_root=str(pair.work), facts=FakeHostFacts())
    stop = threading.Event()
    thread = threading.Thread(target=agent.serve, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        pair.run_container(cid)
        code, out, _ = pair.migrate(cid)
        assert code != 0 and "protocol" in out.lower(), out
        pair.assert_running_on(pair.a, cid)
        pair.assert_nothing_at_destination(cid)
    finally:
        stop.set()
        agent.close()
        thread.join(timeout=10)


def test_destination_disk_too_small(pair, cid, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        pair.start_agent(work=small)
        pair.run_container(cid)
        code, out, _ = pair.migrate(cid, "--strategy", "stop-and-copy")
        assert code != 0 and "not enough free space" in out, out
        pair.assert_running_on(pair.a, cid)
        assert pair.b.status(cid) == "gone"
    finally:
        pair.stop_agent()
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_restore_failing_at_destination(pair, cid, tmp_path):
    marker = tmp_path / "fail-restore"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\n[ -e {marker} ] && {{ echo no >&2; exit 3; }}\n"
                    "exit 0\n")
    hook.chmod(0o755)
    pair.bundle.config["hooks"] = {"createRuntime": [{"path": str(hook)}]}
    pair.start_agent()
    pair.run_container(cid)
    marker.write_text("")
    code, out, report = pair.migrate(cid, "--strategy", "stop-and-copy")
    assert code != 0 and "createRuntime" in out and "resumed" in out, out
    assert report.get("succeeded") is False or "error" in report
    pair.assert_running_on(pair.a, cid)
    pair.assert_nothing_at_destination(cid)
    # the agent keeps serving: the next migration works
    marker.unlink()
    code, out, _ = pair.migrate(cid, "--strategy", "stop-and-copy")
    assert code == 0, out
    pair.assert_running_on(pair.b, cid)


def _pong_at_destination(pair, cid) -> bytes:
    """Ask the migrated container to answer (it echoes pong once
    /tmp/ping appears) and return the destination's container.log once the
    answer is in it."""
    workdir = next(os.path.join(pair.work, n) for n in _listdir(pair.work)
                   if n.startswith(cid + "-"))
    open(os.path.join(pair.bundle.rootfs, "tmp/ping"), "w").close()
    log = os.path.join(workdir, "container.log")
    _wait_for(lambda: os.path.exists(log) and b"pong" in open(log, "rb").read(),
              what="pong in the destination's container.log")
    with open(log, "rb") as f:
        return f.read()


def test_stdio_moved_off_its_fd_comes_along(pair, cid):
    """The init keeps the pipe it got as stdout on fd 3 and points fd 1
    inside the container (busybox sh does this for a moment around every
    NOFORK applet): the pipe is still the runtime's and becomes the
    destination's container.log on fd 3; fd 1 stays the container's file."""
    pair.start_agent()
    pair.bundle.sh("exec 3>&1 >/tmp/seen; echo moved >&3; i=0; while true; do "
                   "i=$((i+1)); echo $i >> /tmp/log; if [ -e /tmp/ping ]; then rm /tmp/ping; "
                   "echo pong >&3; echo inside; fi; sleep 0.05; done")
    proc = subprocess.Popen([*pair.a.argv, "--root", pair.a.root, "run", "-d", "--bundle",
                             pair.bundle.path, cid], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=30) == 0
    pair.pipes.append(proc)
    assert proc.stdout.readline() == b"moved\n"
    code, out, _ = pair.migrate(cid, "--strategy", "stop-and-copy")
    assert code == 0, out
    assert b"pong" in _pong_at_destination(pair, cid)
    with open(os.path.join(pair.bundle.rootfs, "tmp/seen")) as f:
        assert f.read() == "inside\n"
    assert pair.b.state(cid)["status"] == "running"


def test_stdout_a_host_file_with_output_in_it(pair, cid, tmp_path):
    """The container's stdout and stderr are a host file opened without
    O_APPEND (`migrate run -d ID > out.log`) that already holds output.
    CRIU restores such a file only onto one of the size it had at the dump
    ("File ... has bad size"): the destination's stand-in is made that size
    (a hole), and the output after the migration lands in it, after it."""
    pair.start_agent()
    pair.bundle.sh("echo before-the-migration; i=0; while true; do i=$((i+1)); "
                   "echo $i >> /tmp/log; if [ -e /tmp/ping ]; then rm /tmp/ping; echo pong; fi; "
                   "sleep 0.05; done")
    out_path = tmp_path / "out.log"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([*pair.a.argv, "--root", pair.a.root, "run", "-d", "--bundle",
                                 pair.bundle.path, cid], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out)
        assert proc.wait(timeout=30) == 0
    _wait_for(lambda: out_path.read_text() == "before-the-migration\n", what="the first line")
    code, out, _ = pair.migrate(cid, "--strategy", "stop-and-copy")
    assert code == 0, out
    data = _pong_at_destination(pair, cid)
    size = len("before-the-migration\n")
    assert data[:size] == b"\0" * size and data[size:] == b"pong\n", data
    assert pair.b.status(cid) == "running"


def _when(pair, cid, seen, action):
    """Run ``action`` once ``seen(workdir)`` holds for the destination's work
    directory of this migration."""
    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name in _listdir(pair.work):
                if name.startswith(cid + "-") and seen(os.path.join(pair.work, name)):
                    action()
                    return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _when_pages_arrive(pair, cid, action):
    """Run ``action`` once the destination's page server writes pages."""
    return _when(pair, cid, lambda workdir: any(
        n.startswith("pages-") for n in _listdir(os.path.join(workdir, "images"))), action)


def test_agent_killed_during_the_transfer(pair, cid):
    pair.start_agent()
    pair.run_container(cid)
    watcher = _when_pages_arrive(pair, cid, pair.stop_agent)
    code, out, _ = pair.migrate(cid, "--strategy", "stop-and-copy")
    watcher.join(timeout=5)
    pair.assert_rolled_back(cid, code, out, agent_died=True)


def _mounted_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.mark.parametrize("strategy", ["stop-and-copy", "post-copy"])
def test_the_destination_is_prepared_before_the_freeze(pair, cid, strategy):
    """The restore's bring-up (claim, cgroups, the --root bind) is made on
    the restore_prepare CONTROL, before the source freezes: the report books
    it in its own phase ahead of the dump, and the downtime's restore step
    is the CRIU restore alone."""
    if not _supported(strategy):
        pytest.skip(f"{strategy} cannot run on this machine")
    pair.start_agent()
    pair.run_container(cid)
    code, out, report = pair.migrate(cid, "--strategy", strategy)
    assert code == 0, out
    names = [p["name"] for p in report["phases"]]
    assert "restore-prepare" in names, names
    first_frozen = "dump" if strategy == "post-copy" else "memory"
    assert names.index("restore-prepare") < names.index(first_frozen), names
    pair.assert_running_on(pair.b, cid)


@pytest.mark.parametrize("strategy", ["stop-and-copy", "post-copy"])
def test_agent_killed_after_the_restore_was_prepared(pair, cid, strategy):
    """The agent dies once it has claimed the ID for the restore it prepared
    (whether the source has frozen by then or not): the source is resumed and
    runs on, and the next agent undoes the half-made restore: no claim, no
    cgroup, no --root bind left, and the same ID migrates again."""
    if not _supported(strategy):
        pytest.skip(f"{strategy} cannot run on this machine")
    pair.start_agent()
    pair.run_container(cid)
    claimed = os.path.join(pair.b.root, cid)
    watcher = _when(pair, cid, lambda _workdir: os.path.isdir(claimed), pair.stop_agent)
    code, out, _ = pair.migrate(cid, "--strategy", strategy)
    watcher.join(timeout=5)
    assert code != 0 and "resumed" in out, out
    pair.assert_running_on(pair.a, cid)
    pair.start_agent()      # clears what the killed one left
    pair.assert_nothing_at_destination(cid)
    assert not os.path.exists(claimed)
    assert _mounted_under(pair.b.root) == []
    group = "migrate-" + hashlib.sha256(pair.b.root.encode()).hexdigest()[:8]
    assert not [h for h in os.listdir("/sys/fs/cgroup")
                if os.path.exists(os.path.join("/sys/fs/cgroup", h, group, cid))]
    code, out, _ = pair.migrate(cid, "--strategy", strategy)
    assert code == 0, out
    pair.assert_running_on(pair.b, cid)


def test_post_copy_pages_are_prefetched_ahead_of_the_daemon(pair, cid):
    """The destination's relay asks the source for the lazy pages before
    CRIU's lazy-pages daemon does (criu_rpc/lazy_prefetch.py), and the
    container, running there on them, finds its memory intact. The agent
    runs in a directory holding a "migrate" package: the relay, a Python
    process the agent starts as root, must not import it."""
    if not _supported("post-copy"):
        pytest.skip("post-copy cannot run on this machine")
    trap = pair.tmp / "cwd"
    (trap / "migrate" / "cli").mkdir(parents=True)
    for name in ("migrate/__init__.py", "migrate/cli/__init__.py"):
        (trap / name).write_text('raise SystemExit("imported from the working directory")\n')
    pair.start_agent(debug=True, cwd=trap)
    pair.run_container(cid)
    code, out, report = pair.migrate(cid, "--strategy", "post-copy")
    assert code == 0, out
    pair.assert_running_on(pair.b, cid)
    log = pair.tmp / "agent.log"
    _wait_for(lambda: "pages prefetched" in log.read_text(), what="the relay's summary")
    line = next(x for x in log.read_text().splitlines() if "pages prefetched" in x)
    prefetched, demanded = (int(w) for w in re.findall(r"(\d+) (?:pages prefetched|asked)",
                                                       line))
    assert "failed" not in line, line
    assert "no prefetch" not in log.read_text()
    # The workload holds 64 MiB: most of it came ahead of the daemon.
    assert prefetched > 8 * demanded and prefetched * 4096 > 32 << 20, line
    pair.b("delete", "-f", cid).check()


def _pulling_pages(pair, cid, workdir) -> bool:
    """Whether the container runs at the destination (resumed there: no
    rollback any more) and its lazy-pages daemon has copied pages in."""
    try:
        with open(os.path.join(workdir, "criu", "lazy-pages.log")) as f:
            if "uffd_copy" not in f.read():
                return False
    except OSError:
        return False
    return pair.b.status(cid) == "running"


def _post_copy_killing(pair, cid, victims):
    """A post-copy migration of ``cid`` (256 MiB) during whose pull the
    pids ``victims(workdir)`` returns are SIGKILLed, once; returns what
    ``pair.migrate`` does, and asserts something was killed."""
    pair.run_container(cid, script=WORKLOAD.replace("memhold 64", "memhold 256"))
    killed = []

    def kill_once_pulling(workdir):
        if not _pulling_pages(pair, cid, workdir):
            return False
        for pid in victims(workdir):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return True

    thread = _when(pair, cid, kill_once_pulling, lambda: None)
    result = pair.migrate(cid, "--strategy", "post-copy")
    thread.join(timeout=10)
    assert killed, "the lazy-pages daemon was never seen copying pages"
    return result


def test_post_copy_pull_outlives_the_agent(pair, cid):
    """The agent is killed (its process alone, as the OOM killer would)
    while the restored container still pulls its memory: the lazy-pages
    daemon and the relay in front of it are processes of their own, so
    every page still comes and the container runs on, memory intact."""
    if not _supported("post-copy"):
        pytest.skip("post-copy cannot run on this machine")
    pair.start_agent()
    code, out, report = _post_copy_killing(pair, cid, lambda _workdir: [pair.agent.pid])
    pair.agent.wait(timeout=10)
    assert code == 0, out
    assert pair.a.status(cid) == "gone"
    pair.assert_running_on(pair.b, cid)
    pair.b("delete", "-f", cid).check()


def test_post_copy_pull_cut_after_the_switch(pair, cid):
    """The destination's lazy-pages daemon dies while the restored container
    still lacks pages. Those would read as zeros there, and CRIU's page
    server takes the end of the stream for success (the dump then kills the
    source tree): instead the destination kills its copy, the source keeps
    its own frozen with all its memory, the migration fails saying so, and
    `resume` on the source brings the container back, memory intact."""
    if not _supported("post-copy"):
        pytest.skip("post-copy cannot run on this machine")
    pair.start_agent()
    code, out, report = _post_copy_killing(
        pair, cid, lambda workdir: lazy_pages_daemons(os.path.join(workdir, "images")))
    assert code != 0, out
    assert "stopped coming after the container resumed" in out and "frozen" in out, out
    assert report["succeeded"] is False
    # The destination's copy is killed, never left running on zeros.
    assert pair.b.wait_status(cid, "stopped", timeout=20) == "stopped"
    assert pair.a.status(cid) == "paused"
    n = len(pair.log())
    time.sleep(0.5)
    assert len(pair.log()) == n, "the source ran on although its copy had resumed elsewhere"
    pair.b("delete", "-f", cid).check()
    pair.a("resume", cid).check()
    # Not assert_running_on: the destination's copy ran for a moment and
    # appended to the shared rootfs's counter log, which the source, back at
    # the switch, then writes again. Its memory is what must be whole.
    assert pair.a.status(cid) == "running"
    n = len(pair.log())
    _wait_for(lambda: len(pair.log()) > n + 3, what="counter advancing on the source")
    pair.assert_memory_intact()


def _listening_ports(host):
    """TCP ports listening on ``host``'s address, read in its namespace."""
    import socket as _socket
    import struct

    want = struct.unpack("<I", _socket.inet_aton(host.address))[0]
    with host.entered(), open("/proc/thread-self/net/tcp") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    ports = []
    for row in rows:
        ip, port = row[1].split(":")
        if row[3] == "0A" and int(ip, 16) == want:
            ports.append(int(port, 16))
    return ports


def test_a_stranger_cannot_take_the_post_copy_memory_stream(pair, cid):
    """A peer on the network connects first to every port the source opens
    while it dumps (the lazy pages' relay among them) and speaks first: it
    gets nothing, the destination's daemon (opening with the migration's
    stream secret) still pulls every page, and the memory arrives whole."""
    if not _supported("post-copy"):
        pytest.skip("post-copy cannot run on this machine")
    import socket as _socket

    pair.start_agent()
    pair.run_container(cid)
    before = set(_listening_ports(pair.hosts.a))
    strangers, done = [], threading.Event()

    def squat():
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline and not strangers:
            for port in set(_listening_ports(pair.hosts.a)) - before:
                with pair.hosts.b.entered():
                    s = _socket.create_connection((pair.hosts.a.address, port), timeout=5)
                s.sendall(bytes(32) + b"\x07" + bytes(31))     # a wrong secret, then a GET
                strangers.append(s)
            time.sleep(0.002)

    thread = threading.Thread(target=squat, daemon=True)
    thread.start()
    try:
        code, out, _ = pair.migrate(cid, "--strategy", "post-copy")
    finally:
        done.set()
        thread.join(timeout=10)
    assert strangers, "no port opened by the source was seen during the migration"
    assert code == 0, out
    for s in strangers:
        s.settimeout(5)
        try:
            assert s.recv(1 << 16) == b"", "a stranger was sent data"
        except ConnectionResetError:
            pass
        s.close()
    pair.assert_running_on(pair.b, cid)


def test_link_down_during_the_transfer(pair, cid):
    pair.start_agent()
    pair.run_container(cid)
    watcher = _when_pages_arrive(pair, cid, pair.hosts.a.link_down)
    try:
        code, out, _ = pair.migrate(cid, "--strategy", "stop-and-copy", timeout=120)
    finally:
        watcher.join(timeout=5)
        pair.hosts.a.link_up()
    pair.assert_rolled_back(cid, code, out)


def _rx_bytes(host):
    from pyroute2 import IPRoute

    with host.entered(), IPRoute() as ip:
        (link,) = ip.get_links(ifname=host.ifname)
        return link.get_attr("IFLA_STATS64")["rx_bytes"]


@pytest.mark.parametrize("strategy", ["stop-and-copy", "post-copy"])
def test_the_report_counts_every_byte_and_all_the_time(pair, cid, strategy):
    """The memory stream (CRIU's page-server protocol) is relayed by
    migrate and counted: bytes on the wire cover the touched memory and
    agree with the veth's own counters; phases tile the whole run; the
    frozen steps add up to the downtime."""
    if not _supported(strategy):
        pytest.skip(f"{strategy} cannot run on this machine")
    mib = 128
    pair.start_agent()
    pair.run_container(cid, f"ctrhelper memhold {mib} /tmp/mem & "
                            "i=0; while true; do i=$((i+1)); echo $i >> /tmp/log; sleep 0.05; done")
    # Both directions through host b's veth: what it received plus what it sent.
    rx0, tx0 = _rx_bytes(pair.hosts.b), _rx_bytes(pair.hosts.a)
    code, out, report = pair.migrate(cid, "--strategy", strategy, "--no-compress")
    wire = _rx_bytes(pair.hosts.b) - rx0 + _rx_bytes(pair.hosts.a) - tx0
    assert code == 0, out
    assert report["bytes_on_wire"] >= mib << 20, report["phases"]
    assert abs(report["bytes_on_wire"] - wire) <= 0.05 * wire, (report["bytes_on_wire"], wire)
    print(json.dumps({k: report[k] for k in ("phases", "frozen_steps", "downtime_s", "total_s")}))
    phases = sum(p["seconds"] for p in report["phases"])
    assert abs(phases - report["total_s"]) <= 0.05 * report["total_s"], report["phases"]
    steps = report["frozen_steps"]
    assert [s["step"] for s in steps] == ["dump", "images", "restore", "resume"], steps
    assert abs(sum(s["seconds"] for s in steps) - report["downtime_s"]) < 0.001, steps
    pair.assert_running_on(pair.b, cid)


def test_raise_pipe_max_size_makes_post_copy_possible_and_puts_it_back(pair, cid):
    """The one test that changes fs.pipe-max-size: to the 1 MiB default of a
    fresh machine for as short as it can, and back to what it was."""
    if not _supported("post-copy"):
        pytest.skip("post-copy cannot run on this machine")
    path = "/proc/sys/fs/pipe-max-size"
    pair.start_agent()
    pair.run_container(cid)
    with open(path) as f:
        before = f.read().strip()
    try:
        with open(path, "w") as f:
            f.write(str(1 << 20))
        code, out, report = pair.migrate(cid, "--strategy", "auto", "--raise-pipe-max-size")
        with open(path) as f:
            after = int(f.read())
    finally:
        with open(path, "w") as f:
            f.write(before)
    assert code == 0, out
    assert after == 1 << 20                              # put back
    assert report["strategy"] == "post-copy", report["reason"]
    assert "raised from 1048576" in report["reason"]
    pair.assert_running_on(pair.b, cid)


@pytest.mark.parametrize("strategy", ["stop-and-copy", "post-copy"])
def test_a_loopback_only_netns_is_recreated_and_tcp_goes_on(pair, cid, tmp_path, strategy):
    """A network namespace with nothing but lo is not dumped (CRIU's
    empty_ns): the destination gets a fresh one with lo up, and an
    established TCP connection over 127.0.0.1 survives the move."""
    if not _supported(strategy):
        pytest.skip(f"{strategy} cannot run on this machine")
    hook = tmp_path / "lo-up.sh"
    hook.write_text("#!/bin/sh\npid=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p')\n"
                    "exec nsenter -t \"$pid\" -n ip link set lo up\n")
    hook.chmod(0o755)
    pair.bundle.config["hooks"] = {"createRuntime": [{"path": str(hook)}]}
    pair.bundle.write()
    status = os.path.join(pair.bundle.rootfs, "tmp/tcp")

    def tcp():
        try:
            n, ok = open(status).read().split()
            return int(n), ok == "1"
        except (FileNotFoundError, ValueError):
            return 0, False

    pair.start_agent()
    pair.run_container(cid, "ctrhelper tcppair 7000 /tmp/tcp & " + WORKLOAD)
    _wait_for(lambda: tcp()[0] > 3, what="tcp traffic")
    code, out, report = pair.migrate(cid, "--strategy", strategy, "--tcp-established")
    assert code == 0, out
    assert "holds only lo" in report["reason"], report["reason"]
    pair.assert_running_on(pair.b, cid)
    n = tcp()[0]
    _wait_for(lambda: tcp()[0] > n + 3, what="tcp traffic at the destination")
    assert tcp()[1], "the TCP stream lost or repeated a counter"
