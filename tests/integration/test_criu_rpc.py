"""migrate.criu_rpc against the real ``criu swrk``, on a plain process tree.

The tree is tests/integration/helpers/counter.py, PID 1 of its own PID
namespace: it keeps writing a counter to a file, so "the counter continues"
after a restore proves the memory came back, and a frozen counter proves a
tree was held. Restores use ``rst_sibling`` so the restored tree is our
child and the fixtures reap it.

The lazy-pages test raises ``fs.pipe-max-size`` to 4 MiB for its duration
(a lazy dump fails at the default 1 MiB even for this small process) and
says so in a warning.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from counter import Counter, is_alive  # noqa: E402

from migrate.criu_rpc import (  # noqa: E402
    LAZY_DUMP_PIPE_SIZE,
    Client,
    CriuOptions,
    LazyPagesOptions,
    PageServer,
    Session,
    SwrkOptions,
    plan_pre_dump_chain,
    start_lazy_pages,
)
from migrate.errors import CriuError, UnsupportedError  # noqa: E402

pytestmark = [pytest.mark.requires("root", "criu"), pytest.mark.timeout(120)]

# Generous: a timeout here means a bug, and killing CRIU mid-dump is worse.
SWRK = SwrkOptions(timeout=60)


@pytest.fixture
def client() -> Client:
    return Client(SWRK)


@pytest.fixture
def counters(tmp_path):
    """Start counters with ``counters(**kw)``; every copy is killed and reaped."""
    started: list[Counter] = []

    def start(**kwargs) -> Counter:
        c = Counter(tmp_path / f"count-{len(started)}", **kwargs)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def _dir(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.mkdir()
    return str(path)


def _restore(client: Client, counter: Counter, images_dir: str, **kwargs) -> int:
    result = client.restore(CriuOptions(images_dir=images_dir, rst_sibling=True,
                                        log_file="restore.log", **kwargs))
    counter.adopt(result.pid, child=True)
    return result.pid


def _assert_stopped_at(counter: Counter, value: int, *, for_s: float = 0.3) -> None:
    time.sleep(for_s)
    assert counter.value() == value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_images(src: str, dst: str) -> None:
    for name in os.listdir(src):
        if not name.endswith(".log"):
            shutil.copy(os.path.join(src, name), dst)


# -- version, check, features ---------------------------------------------------


def test_version_and_check(client):
    version = client.version()
    out = subprocess.run(["criu", "--version"], capture_output=True, text=True, timeout=30)
    assert f"Version: {version}" in out.stdout
    assert version.as_tuple() >= (4, 0, 0)
    client.check()


def test_feature_check_agrees_with_the_criu_command_line(client):
    features = client.feature_check()

    def cli(feature: str) -> bool:
        out = subprocess.run(["criu", "check", "--feature", feature], capture_output=True,
                             timeout=30, stdin=subprocess.DEVNULL)
        return out.returncode == 0

    assert features.mem_track is cli("mem_dirty_track")
    assert features.lazy_pages is cli("uffd-noncoop")
    assert isinstance(features.pidfd_store, bool)
    print(f"features here: {features}")
    assert client.feature_check(mem_track=True, lazy_pages=False, pidfd_store=False) == \
        type(features)(mem_track=features.mem_track)


def test_memory_tracking_is_off_on_this_kernel(client):
    # DESIGN.md: no CONFIG_MEM_SOFT_DIRTY on the project's kernels.
    if subprocess.run(["criu", "check", "--feature", "mem_dirty_track"], capture_output=True,
                      timeout=30).returncode == 0:
        pytest.skip("this kernel has soft-dirty memory tracking")
    assert client.feature_check().mem_track is False


# -- dump and restore -------------------------------------------------------------


def test_dump_then_restore_and_the_counter_continues(client, counters, tmp_path):
    c = counters()
    c.wait_for(5)
    images = _dir(tmp_path, "img")
    client.dump(CriuOptions(images_dir=images, pid=c.pid))
    assert not is_alive(c.pid)
    dumped = c.value()
    _assert_stopped_at(c, dumped)
    assert os.path.exists(os.path.join(images, "inventory.img"))

    pid = _restore(client, c, images)
    assert pid != 0 and is_alive(pid)
    # Continues from where it was, not from 1: the memory came back.
    assert c.wait_for(dumped + 10) >= dumped + 10
    assert c.value() > dumped


def test_dump_with_leave_running(client, counters, tmp_path):
    c = counters()
    before = c.wait_for(3)
    client.dump(CriuOptions(images_dir=_dir(tmp_path, "img"), pid=c.pid, leave_running=True))
    assert is_alive(c.pid)
    c.wait_for(before + 10)


def test_page_server_on_loopback_receives_a_dump(client, counters, tmp_path):
    c = counters()
    c.wait_for(3)
    src, dst = _dir(tmp_path, "src"), _dir(tmp_path, "dst")
    ready_r, ready_w = os.pipe()
    try:
        with client.session() as session:
            info = session.page_server(CriuOptions(
                images_dir=dst, ps=PageServer(address="127.0.0.1", port=0), status_fd=ready_w))
            # status_fd: one byte once it listens.
            assert select.select([ready_r], [], [], 10)[0] and os.read(ready_r, 1) == b"\0"
            assert info.port > 0 and is_alive(info.pid)
            client.dump(CriuOptions(images_dir=src, pid=c.pid,
                                    ps=PageServer(address="127.0.0.1", port=info.port)))
            assert session.wait_pid(info.pid) == 0
    finally:
        os.close(ready_r)
        os.close(ready_w)
    assert any(n.startswith("pages-") for n in os.listdir(dst))
    assert not any(n.startswith("pages-") for n in os.listdir(src))
    dumped = c.value()
    _copy_images(src, dst)
    _restore(client, c, dst)
    c.wait_for(dumped + 5)


def test_one_shot_page_server_outlives_the_call(client, counters, tmp_path):
    c = counters()
    c.wait_for(3)
    src, dst = _dir(tmp_path, "src"), _dir(tmp_path, "dst")
    info = client.page_server(CriuOptions(images_dir=dst, ps=PageServer(address="127.0.0.1")))
    try:
        assert is_alive(info.pid)
        client.dump(CriuOptions(images_dir=src, pid=c.pid, leave_running=True,
                                ps=PageServer(address="127.0.0.1", port=info.port)))
        deadline = time.monotonic() + 10
        while is_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not is_alive(info.pid)  # it exits after one dump
        assert any(n.startswith("pages-") for n in os.listdir(dst))
    finally:
        if is_alive(info.pid):
            os.kill(info.pid, 9)


@pytest.fixture
def pipe_max_size_for_lazy_pages():
    """Raise fs.pipe-max-size to what a lazy dump needs, and put it back."""
    path = "/proc/sys/fs/pipe-max-size"
    with open(path) as f:
        old = int(f.read())
    if old < LAZY_DUMP_PIPE_SIZE:
        warnings.warn(f"test raises fs.pipe-max-size from {old} to {LAZY_DUMP_PIPE_SIZE} for a "
                      "lazy dump (restored afterwards)", stacklevel=1)
        with open(path, "w") as f:
            f.write(str(LAZY_DUMP_PIPE_SIZE))
    yield
    if old < LAZY_DUMP_PIPE_SIZE:
        with open(path) as f:
            still_ours = int(f.read()) == LAZY_DUMP_PIPE_SIZE
        if still_ours:
            with open(path, "w") as f:
                f.write(str(old))


@pytest.mark.requires('criu_feature("uffd-noncoop")')
def test_lazy_pages_round_trip(client, counters, tmp_path, pipe_max_size_for_lazy_pages):
    c = counters(mem_mib=16)
    c.wait_for(3)
    src, dst = _dir(tmp_path, "src"), _dir(tmp_path, "dst")
    port = _free_port()
    ps = PageServer(address="127.0.0.1", port=port)
    ready_r, ready_w = os.pipe()
    outcome: dict[str, object] = {}
    notified = threading.Event()

    def dump() -> None:
        try:
            client.dump(CriuOptions(images_dir=src, pid=c.pid, lazy_pages=True, ps=ps,
                                    status_fd=ready_w),
                        {"status-ready": lambda note: notified.set()})
            outcome["dumped"] = True
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    source = threading.Thread(target=dump)
    source.start()
    daemon = None
    try:
        # The lazy dump answers only once every page is gone: readiness comes
        # from status_fd (and the status-ready notification) instead.
        assert select.select([ready_r], [], [], 30)[0], outcome
        assert os.read(ready_r, 1) == b"\0"
        assert notified.wait(5)
        assert is_alive(c.pid)  # frozen, still holding its memory
        dumped = c.value()
        _assert_stopped_at(c, dumped, for_s=0.2)
        _copy_images(src, dst)
        daemon = start_lazy_pages(LazyPagesOptions(images_dir=dst, page_server=ps))
        _restore(client, c, dst, lazy_pages=True)
        c.wait_for(dumped + 10)
        daemon.wait(timeout=60)
        source.join(60)
        assert outcome == {"dumped": True}
        assert not is_alive(c.pids[0])  # the source is gone once its pages are
        c.wait_for(c.value() + 5)
    finally:
        os.close(ready_r)
        os.close(ready_w)
        if daemon is not None:
            daemon.close()
        for pid in c.pids:
            if is_alive(pid):
                os.kill(pid, 9)
        source.join(60)


# -- pre-dump chains ----------------------------------------------------------------


@pytest.mark.requires('criu_feature("mem_dirty_track")')
def test_pre_dumps_then_dump_in_one_session(client, counters, tmp_path):
    c = counters(mem_mib=8)
    c.wait_for(3)
    dirs = [_dir(tmp_path, n) for n in ("pre-1", "pre-2", "dump")]
    plans = plan_pre_dump_chain(CriuOptions(pid=c.pid), dirs)
    with client.session() as session:
        session.pre_dump(plans[0])
        assert is_alive(c.pid)
        session.pre_dump(plans[1])
        session.dump(plans[2])
    assert os.path.realpath(os.path.join(dirs[2], "parent")) == os.path.realpath(dirs[1])
    dumped = c.value()
    _restore(client, c, dirs[2])
    c.wait_for(dumped + 5)


def test_pre_dump_without_memory_tracking_fails_and_the_tree_runs_on(client, counters, tmp_path):
    if client.feature_check(lazy_pages=False, pidfd_store=False).mem_track:
        pytest.skip("memory tracking works here; the chain test covers pre-dump")
    c = counters()
    before = c.wait_for(3)
    with client.session() as session:
        with pytest.raises(CriuError) as err:
            session.pre_dump(CriuOptions(images_dir=_dir(tmp_path, "pre"), pid=c.pid,
                                         track_mem=True))
        assert session.state == "closed"
    print(f"pre-dump here: {err.value}")
    assert err.value.action == "pre-dump" and err.value.log_tail
    c.wait_for(before + 5)


# -- failures -------------------------------------------------------------------------


def test_bad_pid_raises_with_the_log_tail(client, tmp_path):
    pid = 4_000_000  # above any pid_max we run with (32768 here), so surely not running
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    with pytest.raises(CriuError) as err:
        client.dump(CriuOptions(images_dir=_dir(tmp_path, "img"), pid=pid))
    e = err.value
    print(e.details())
    assert e.action == "dump" and e.errno == errno.ESRCH
    assert f"pid {pid}" in str(e) and "RLIMIT" not in str(e)
    assert e.log_path == str(tmp_path / "img" / "criu.log")
    assert any("Error" in line for line in e.log_tail)
    assert e.log_tail[-1].endswith("Dumping FAILED.")


def test_missing_images_dir(client, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(CriuError) as err:
        client.restore(CriuOptions(images_dir=str(missing)))
    assert err.value.errno == errno.ENOENT and str(missing) in str(err.value)


def test_empty_images_dir_raises_with_the_log_tail(client, tmp_path):
    images = _dir(tmp_path, "img")
    with pytest.raises(CriuError) as err:
        client.restore(CriuOptions(images_dir=images))
    e = err.value
    print(e.details())
    assert e.action == "restore" and images in str(e)
    assert any("inventory" in line for line in e.log_tail)


def test_callback_that_raises_aborts_the_dump_cleanly(counters, tmp_path):
    c = counters()
    before = c.wait_for(3)
    seen = []

    def post_dump(note):
        seen.append(note.name)
        raise RuntimeError("destination is gone")

    with Session(SWRK) as session:
        with pytest.raises(RuntimeError, match="destination is gone") as err:
            session.dump(CriuOptions(images_dir=_dir(tmp_path, "img"), pid=c.pid),
                         {"pre-dump": lambda n: seen.append(n.name), "post-dump": post_dump})
        assert not os.path.exists(f"/proc/{session.pid}")  # swrk reaped
    assert seen == ["pre-dump", "post-dump"]
    assert any("post-dump" in note for note in err.value.__notes__)
    assert is_alive(c.pid)
    c.wait_for(before + 5)  # resumed


def test_post_dump_held_then_failure_resumes_the_tree(client, counters, tmp_path):
    c = counters()
    c.wait_for(3)
    held = {}

    def post_dump(note):
        held["start"] = c.value()
        time.sleep(1.5)  # e.g. the destination restores meanwhile
        held["end"] = c.value()
        return False

    started = time.monotonic()
    with pytest.raises(CriuError) as err:
        client.dump(CriuOptions(images_dir=_dir(tmp_path, "img"), pid=c.pid),
                    {"post-dump": post_dump})
    assert time.monotonic() - started >= 1.5
    assert held["start"] == held["end"]  # frozen while held
    assert "post-dump callback answered failure" in str(err.value)
    assert is_alive(c.pid)
    c.wait_for(held["end"] + 5)


def test_post_dump_held_while_restored_elsewhere(client, counters, tmp_path):
    """The stop-and-copy shape: hold the source at post-dump, restore the
    images, then answer success and let CRIU kill the source."""
    c = counters()
    c.wait_for(3)
    images = _dir(tmp_path, "img")
    source = c.pid

    def post_dump(note):
        dumped = c.value()
        _restore(client, c, images)
        c.wait_for(dumped + 3)
        assert is_alive(source)
        return True

    client.dump(CriuOptions(images_dir=images, pid=source), {"post-dump": post_dump})
    assert not is_alive(source) and is_alive(c.pid)
    c.wait_for(c.value() + 3)


def test_notifications_in_order(client, counters, tmp_path):
    c = counters()
    c.wait_for(3)
    images = _dir(tmp_path, "img")
    order: list[tuple[str, int | None]] = []
    record = {n: (lambda note: order.append((note.name, note.pid))) for n in (
        "pre-dump", "post-dump", "pre-restore", "setup-namespaces", "post-setup-namespaces",
        "post-restore", "pre-resume", "post-resume", "network-lock", "network-unlock")}
    client.dump(CriuOptions(images_dir=images, pid=c.pid), record)
    assert [n for n, _ in order] == ["pre-dump", "post-dump"]
    order.clear()
    result = client.restore(CriuOptions(images_dir=images, rst_sibling=True,
                                        log_file="restore.log"), record)
    c.adopt(result.pid, child=True)
    names = [n for n, _ in order]
    assert names == ["pre-restore", "setup-namespaces", "post-setup-namespaces",
                     "post-restore", "pre-resume", "post-resume"]
    assert dict(order)["post-restore"] == result.pid


def test_orphan_pts_master_fd_arrives_over_scm_rights(client, counters, tmp_path):
    master, slave = os.openpty()
    try:
        c = counters(tty_fd=slave)
    finally:
        os.close(slave)
    received = {}
    try:
        c.wait_for(3)
        assert select.select([master], [], [], 5)[0] and os.read(master, 100)
        images = _dir(tmp_path, "img")
        client.dump(CriuOptions(images_dir=images, pid=c.pid, orphan_pts_master=True))
        c.launcher.wait(10)
        os.close(master)  # its pty index must be free again for the restore
        master = -1
        dumped = c.value()

        def on_master(note):
            received["fd"] = os.dup(note.fd)

        _restore_pid = client.restore(
            CriuOptions(images_dir=images, orphan_pts_master=True, rst_sibling=True,
                        log_file="restore.log"), {"orphan-pts-master": on_master}).pid
        c.adopt(_restore_pid, child=True)
        c.wait_for(dumped + 5)
        fd = received["fd"]
        assert select.select([fd], [], [], 5)[0]
        lines = os.read(fd, 4096).split()
        # What the restored counter prints on its (new) terminal carries on.
        assert int(lines[0]) in (dumped, dumped + 1) and int(lines[-1]) >= dumped + 4
    finally:
        if master >= 0:
            os.close(master)
        if "fd" in received:
            os.close(received["fd"])


def test_lazy_dump_refused_before_freezing_when_pipes_cannot_grow(client, counters, tmp_path):
    with open("/proc/sys/fs/pipe-max-size") as f:
        if int(f.read()) >= LAZY_DUMP_PIPE_SIZE:
            pytest.skip("fs.pipe-max-size is already raised here")
    c = counters()
    before = c.wait_for(3)
    images = _dir(tmp_path, "img")
    with pytest.raises(UnsupportedError, match="sysctl fs.pipe-max-size="):
        client.dump(CriuOptions(images_dir=images, pid=c.pid, lazy_pages=True,
                                ps=PageServer(address="127.0.0.1", port=_free_port())))
    assert os.listdir(images) == []  # CRIU never ran
    c.wait_for(before + 3)
