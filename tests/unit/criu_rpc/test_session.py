"""The request/notification loop and the session rules, against a scripted
fake of ``criu swrk`` (tests/unit/criu_rpc/fake_swrk.py): no CRIU, no root."""

import errno
import json
import os
import time

import pytest

from conftest import no_leftover
from migrate.criu_rpc import (
    Client,
    CriuOptions,
    InheritFd,
    PageServer,
    Session,
    SwrkOptions,
    plan_pre_dump_chain,
)
from migrate.errors import CriuError, UsageError

pytest.importorskip("pycriu")


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _dirs(tmp_path):
    img, work = tmp_path / "img", tmp_path / "work"
    img.mkdir()
    work.mkdir()
    return img, work


def test_dirs_go_as_fds_that_criu_resolves_through_proc(tmp_path, fake_criu):
    fake = fake_criu("opts")
    img, work = _dirs(tmp_path)
    r, w = os.pipe()
    try:
        before = _fds()
        Client(SwrkOptions(criu=str(fake.path))).restore(CriuOptions(
            images_dir=str(img), work_dir=str(work), status_fd=w,
            inherit_fd=[InheritFd(key="pipe:[1]", fd=r)]))
        after = _fds()
    finally:
        os.close(r)
        os.close(w)
    seen = json.loads((tmp_path / "opts.record.json").read_text())
    assert seen["images_dir_fd"] == str(img)
    assert seen["work_dir_fd"] == str(work)
    assert seen["status_fd"].startswith("pipe:")
    assert seen[f"inherit:{r}"] is True  # inherited by swrk under the same number
    assert after == before  # the directory fds were closed again
    (req,) = fake.requests()
    assert req.opts.images_dir_fd >= 0 and not req.opts.HasField("images_dir")


def test_notifications_are_dispatched_by_name(tmp_path, fake_criu):
    fake = fake_criu("notify")
    img, _ = _dirs(tmp_path)
    seen = []

    def on_pts(note):
        seen.append((note.name, os.read(note.fd, 10)))
        seen.append(("fd", note.fd))

    callbacks = {"pre-dump": lambda n: seen.append((n.name, n.pid)),
                 "orphan-pts-master": on_pts,
                 "post-dump": lambda n: True}
    Client(SwrkOptions(criu=str(fake.path))).dump(
        CriuOptions(images_dir=str(img), pid=99), callbacks)
    assert seen[0] == ("pre-dump", None)
    assert seen[1] == ("orphan-pts-master", b"hello")
    reqs = fake.requests()
    assert reqs[0].opts.notify_scripts is True  # turned on because callbacks were given
    # pre-dump, network-lock (unhandled: acknowledged), orphan-pts-master, post-dump, network-unlock
    assert [r.notify_success for r in reqs[1:]] == [True] * 5


def test_orphan_pts_fd_is_closed_after_the_callback(tmp_path, fake_criu):
    fake = fake_criu("notify")
    img, _ = _dirs(tmp_path)
    kept = {}
    before = _fds()

    def on_pts(note):
        kept["fd"] = note.fd
        kept["dup"] = os.dup(note.fd)

    Client(SwrkOptions(criu=str(fake.path))).dump(
        CriuOptions(images_dir=str(img), pid=99), {"orphan-pts-master": on_pts})
    assert os.read(kept["dup"], 10) == b"hello"
    os.close(kept["dup"])
    assert _fds() == before


def test_callback_answering_false_fails_the_request(tmp_path, fake_criu):
    fake = fake_criu("notify")
    img, _ = _dirs(tmp_path)
    unlocked = []
    with pytest.raises(CriuError) as err:
        Client(SwrkOptions(criu=str(fake.path))).dump(
            CriuOptions(images_dir=str(img), pid=99),
            {"post-dump": lambda n: False, "network-unlock": lambda n: unlocked.append(1)})
    assert err.value.action == "dump"
    assert "pid 99: the post-dump callback answered failure, CRIU resumed the tree" in str(err.value)
    assert unlocked == [1]  # CRIU's clean-up notifications are still served
    assert [r.notify_success for r in fake.requests()[1:]] == [True, True, True, False, True]


def test_callback_exception_is_raised_after_criu_answers(tmp_path, fake_criu):
    fake = fake_criu("notify")
    img, _ = _dirs(tmp_path)

    def boom(note):
        raise ValueError("remote restore failed")

    with Session(SwrkOptions(criu=str(fake.path))) as session:
        with pytest.raises(ValueError, match="remote restore failed") as err:
            session.dump(CriuOptions(images_dir=str(img), pid=99), {"post-dump": boom})
        assert session.state == "closed"
        assert no_leftover(session.pid)
    assert any("post-dump notification" in note for note in err.value.__notes__)
    # Failure answered at post-dump, and the request was serviced to its end.
    assert [r.notify_success for r in fake.requests()[1:]] == [True, True, True, False, True]


def test_restore_notifications_and_pid(tmp_path, fake_criu):
    fake = fake_criu("restore")
    img, _ = _dirs(tmp_path)
    order = []
    names = ("pre-restore", "setup-namespaces", "post-setup-namespaces", "post-restore",
             "pre-resume", "post-resume")
    result = Client(SwrkOptions(criu=str(fake.path))).restore(
        CriuOptions(images_dir=str(img)), {n: (lambda note: order.append((note.name, note.pid)))
                                           for n in names})
    assert result.pid == 4242
    assert order == [("pre-restore", None), ("setup-namespaces", 4242),
                     ("post-setup-namespaces", None), ("post-restore", 4242),
                     ("pre-resume", None), ("post-resume", None)]


def test_unknown_notification_name_is_refused_before_criu_runs(tmp_path, fake_criu):
    fake = fake_criu("notify")
    img, _ = _dirs(tmp_path)
    with pytest.raises(UsageError, match="post_dump"):
        Client(SwrkOptions(criu=str(fake.path))).dump(
            CriuOptions(images_dir=str(img), pid=99), {"post_dump": lambda n: None})
    assert fake.requests() == []


def test_failure_carries_errno_message_and_output(tmp_path, fake_criu):
    fake = fake_criu("fail")
    img, _ = _dirs(tmp_path)
    with pytest.raises(CriuError) as err:
        Client(SwrkOptions(criu=str(fake.path))).dump(CriuOptions(images_dir=str(img), pid=7))
    e = err.value
    assert (e.action, e.errno) == ("dump", 3)
    # CRIU's own cr_errmsg names the harmless RLIMIT_NOFILE line; the real one wins.
    assert "pid 7: something on stderr" in str(e)
    assert "RLIMIT" not in str(e)
    assert e.log_path is None  # no log file was written
    assert any("something on stderr" in line for line in e.log_tail)


def test_an_answer_that_does_not_decode_is_a_one_line_criu_error(tmp_path, fake_criu):
    fake = fake_criu("garbage")
    img, _ = _dirs(tmp_path)
    session = Session(SwrkOptions(criu=str(fake.path)))
    started = time.monotonic()
    with pytest.raises(CriuError) as err:
        session.restore(CriuOptions(images_dir=str(img)))
    assert time.monotonic() - started < 5   # swrk killed, not waited for
    message = str(err.value)
    assert "cannot decode CRIU's answer: criu_resp.cr_errmsg: " in message, message
    assert "\n" not in message
    assert no_leftover(session.pid) and session.state == "closed"


def test_fields_of_a_newer_criu_are_skipped(tmp_path, fake_criu):
    fake = fake_criu("newer")
    img, _ = _dirs(tmp_path)
    seen = []
    result = Client(SwrkOptions(criu=str(fake.path))).restore(
        CriuOptions(images_dir=str(img)),
        {name: seen.append for name in ("pre-restore", "setup-namespaces", "post-restore")})
    assert [(n.name, n.pid) for n in seen] == [
        ("pre-restore", 4343), ("setup-namespaces", 4343), ("post-restore", 4343)]
    assert result.pid == 4343
    assert [r.notify_success for r in fake.requests()[1:]] == [True, True, True]


def test_swrk_dying_without_answer(tmp_path, fake_criu):
    fake = fake_criu("die")
    img, _ = _dirs(tmp_path)
    with pytest.raises(CriuError) as err:
        Client(SwrkOptions(criu=str(fake.path))).restore(CriuOptions(images_dir=str(img)))
    assert "criu swrk exited with status 3 without answering" in str(err.value)
    assert "fake swrk: giving up" in err.value.log_tail


def test_swrk_dying_with_our_answer_unread(tmp_path, fake_criu):
    fake = fake_criu("die-unread")
    img, _ = _dirs(tmp_path)
    with pytest.raises(CriuError) as err:
        Client(SwrkOptions(criu=str(fake.path))).restore(
            CriuOptions(images_dir=str(img)), {"post-restore": lambda note: True})
    assert "criu swrk exited with status 9 without answering" in str(err.value)


def test_timeout_kills_and_reaps_swrk(tmp_path, fake_criu):
    fake = fake_criu("silent")
    img, _ = _dirs(tmp_path)
    session = Session(SwrkOptions(criu=str(fake.path), timeout=0.5))
    started = time.monotonic()
    with pytest.raises(CriuError) as err:
        session.restore(CriuOptions(images_dir=str(img)))
    assert time.monotonic() - started < 5
    assert err.value.errno == errno.ETIMEDOUT
    assert "no answer from CRIU within 0.5 s" in str(err.value)
    assert no_leftover(session.pid)
    session.close()


def test_swrk_that_does_not_exit_is_killed_and_reaped(tmp_path, fake_criu):
    """After the last answer the session hangs up and waits for swrk to
    exit (on its pidfd), ``kill_after`` seconds at most."""
    fake = fake_criu("linger")
    img, _ = _dirs(tmp_path)
    session = Session(SwrkOptions(criu=str(fake.path), kill_after=0.3))
    started = time.monotonic()
    session.check(CriuOptions(images_dir=str(img)))
    assert 0.3 <= time.monotonic() - started < 5
    assert session.state == "closed"
    assert no_leftover(session.pid)


def test_a_log_past_its_limit_kills_swrk(tmp_path, fake_criu):
    fake = fake_criu("looping")
    img, work = _dirs(tmp_path)
    session = Session(SwrkOptions(criu=str(fake.path), max_log_bytes=1 << 20, timeout=30))
    started = time.monotonic()
    with pytest.raises(CriuError) as err:
        session.restore(CriuOptions(images_dir=str(img), work_dir=str(work), log_file="restore.log"))
    assert time.monotonic() - started < 10
    log = work / "restore.log"
    assert f"log {log} grew past 1 MiB" in str(err.value) and "criu killed" in str(err.value)
    assert err.value.log_path == str(log)
    size = log.stat().st_size
    time.sleep(0.3)
    assert log.stat().st_size == size < 8 << 20, "the log keeps growing"
    assert no_leftover(session.pid)
    session.close()


def test_every_run_is_bounded_by_default():
    opts = SwrkOptions()
    assert opts.timeout and opts.max_log_bytes


def test_timeout_does_not_count_time_in_callbacks(tmp_path, fake_criu):
    fake = fake_criu("notify")
    img, _ = _dirs(tmp_path)
    Client(SwrkOptions(criu=str(fake.path), timeout=1.0)).dump(
        CriuOptions(images_dir=str(img), pid=99), {"post-dump": lambda n: time.sleep(1.5)})


def test_keep_open_requests_then_wait_pid(tmp_path, fake_criu):
    fake = fake_criu("keep_open")
    img, _ = _dirs(tmp_path)
    with Session(SwrkOptions(criu=str(fake.path))) as s:
        assert str(s.version()) == "4.2.1"
        features = s.feature_check(lazy_pages=False)
        assert (features.mem_track, features.lazy_pages, features.pidfd_store) == (False, None, True)
        info = s.page_server(CriuOptions(images_dir=str(img), ps=PageServer(address="127.0.0.1")))
        assert (info.pid, info.port) == (777, 12345)
        assert s.state == "open"
        assert s.wait_pid(info.pid) == 3
        assert s.state == "closed"
        with pytest.raises(UsageError, match="closed"):
            s.version()
    reqs = fake.requests()
    assert [r.keep_open for r in reqs] == [True, True, True, False]
    assert reqs[1].features.mem_track and not reqs[1].features.HasField("lazy_pages")
    assert reqs[3].pid == 777


def test_pre_dump_chain_in_one_session(tmp_path, fake_criu):
    fake = fake_criu("keep_open")
    dirs = [tmp_path / n for n in ("pre-1", "pre-2", "dump")]
    for d in dirs:
        d.mkdir()
    plans = plan_pre_dump_chain(CriuOptions(pid=55), [str(d) for d in dirs])
    with Session(SwrkOptions(criu=str(fake.path))) as s:
        s.pre_dump(plans[0])
        assert s.state == "pre-dumping"
        with pytest.raises(UsageError, match="only pre-dump or dump"):
            s.version()
        s.pre_dump(plans[1])
        s.dump(plans[2])
        assert s.state == "closed"
    reqs = fake.requests()
    from pycriu import rpc_pb2 as rpc
    assert [r.type for r in reqs] == [rpc.PRE_DUMP, rpc.PRE_DUMP, rpc.DUMP]
    assert not any(r.keep_open for r in reqs)  # CRIU would exit without answering
    assert [r.opts.parent_img for r in reqs] == ["", "../pre-1", "../pre-2"]
    assert all(r.opts.track_mem and r.opts.pid == 55 for r in reqs)


def test_cannot_start_criu():
    with pytest.raises(CriuError) as err:
        Client(SwrkOptions(criu="/nonexistent/criu")).version()
    assert err.value.errno == errno.ENOENT
    assert '"/nonexistent/criu swrk"' in str(err.value)


def test_missing_images_dir_is_reported_before_criu_runs(tmp_path, fake_criu):
    fake = fake_criu("opts")
    with pytest.raises(CriuError) as err:
        Client(SwrkOptions(criu=str(fake.path))).restore(
            CriuOptions(images_dir=str(tmp_path / "nope")))
    assert err.value.errno == errno.ENOENT
    assert f'cannot open images_dir "{tmp_path / "nope"}"' in str(err.value)
    assert fake.requests() == []


def test_session_needs_inherited_fds_up_front(tmp_path, fake_criu):
    fake = fake_criu("opts")
    img, _ = _dirs(tmp_path)
    with Session(SwrkOptions(criu=str(fake.path))) as s:
        with pytest.raises(UsageError, match="pass_fds"):
            s.restore(CriuOptions(images_dir=str(img), inherit_fd=[InheritFd(key="k", fd=0)]))
