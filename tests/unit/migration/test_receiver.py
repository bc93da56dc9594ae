"""The agent's side of one migration (Receiver) against a scripted source,
over a socketpair, with FakeHostFacts and FakeRestore."""

from __future__ import annotations

import os

import pytest

from migrate.errors import MigrationError
from migrate.migration.messages import (Control, PrepareRequest, RestoreRequest, Restored,
                                        SharedMarker)
from migrate.migration.protocol import Kind
from migrate.migration.receiver import Receiver
from migrate.migration.source import SourceSession, rollback, shared_marker
from migrate.testing import FakeHostFacts, FakeRestore
from migration_helpers import FAST, Background


@pytest.fixture
def dirs(tmp_path):
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    return root, work


def start(pair, dirs, *, restore=None, facts=None, events=None, **kw):
    src, dst = pair
    root, work = dirs
    receiver = Receiver(str(root), str(work), restore_fn=restore if restore is not None else FakeRestore(),
                        facts=facts or FakeHostFacts(), timeouts=FAST,
                        on_event=events.append if events is not None else None, **kw)
    served = Background(lambda: receiver.serve(dst))
    session = SourceSession(conn=src, peer=None, facts=FakeHostFacts(), local_features={})
    return session, served


def test_a_whole_migration(pair, dirs, tmp_path):
    restore = FakeRestore()
    events = []
    session, served = start(pair, dirs, restore=restore, events=events,
                            controls={"page-server": lambda inc, c: {"port": 1234, "asked": c.args["n"]}})
    conn = session.conn
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("box")
    images = tmp_path / "images"
    images.mkdir()
    (images / "pages-1.img").write_bytes(os.urandom(100_000))
    with shared_marker(str(tmp_path)) as marker:
        ready = session.prepare(PrepareRequest(container_id="web", strategy="stop-and-copy",
                                               rootfs="copy", images_size=100_000,
                                               rootfs_size=3, cpuinfo=True,
                                               shared_markers=(marker,)))
    assert ready.workdir.startswith("web-") and ready.free_bytes > 0
    conn.send_tree(str(rootfs), label="rootfs")
    conn.send_file(str(images / "pages-1.img"), name="pages-1.img", label="images", ack=True)
    assert conn.recv(Kind.REPLY).header == {"label": "images", "path": "images/pages-1.img",
                                            "bytes": 100_000}
    conn.send(Kind.CONTROL, {"op": "page-server", "n": 3})
    assert conn.recv(Kind.REPLY).header == {"port": 1234, "asked": 3}
    conn.send(Kind.RESTORE, RestoreRequest(container_id="web", bundle="rootfs").to_header())
    assert conn.recv(Kind.RESTORED).header["info"] == {"pid": 4242, "call": 1}
    conn.send(Kind.DONE)
    conn.recv(Kind.DONE)
    outcome = served.result()
    assert outcome.succeeded and outcome.container_id == "web"
    workdir, request, listing = restore.calls[0]
    assert request == RestoreRequest(container_id="web", bundle="rootfs")
    assert {"rootfs/etc/hostname", "images/pages-1.img", "cpuinfo/cpuinfo.img"} <= set(listing)
    assert os.path.isdir(workdir)   # kept for the restored container
    assert (restore.committed, restore.aborted) == (1, 0)
    assert [e.kind for e in events] == ["started", "succeeded"]


def check_refused(pair, dirs, prep, words, **kw):
    session, served = start(pair, dirs, **kw)
    with pytest.raises(MigrationError) as info:
        session.prepare(prep)
    outcome = served.result()
    assert not outcome.succeeded and words in outcome.error
    assert "the destination failed (checks)" in str(info.value) and words in str(info.value)
    assert os.listdir(dirs[1]) == []   # the work directory is gone
    return info.value


def test_container_id_taken(pair, dirs):
    (dirs[0] / "web").mkdir()
    check_refused(pair, dirs, PrepareRequest(container_id="web"),
                  'container "web" already exists')


def test_not_enough_space(pair, dirs):
    check_refused(pair, dirs, PrepareRequest(container_id="web", images_size=1 << 60),
                  "not enough free space")


def test_rootfs_size_counts_only_when_copied(pair, dirs):
    session, served = start(pair, dirs)
    session.prepare(PrepareRequest(container_id="web", rootfs="shared", rootfs_size=1 << 60))
    session.abort("test over")
    assert not served.result().succeeded


def test_cpu_mismatch(pair, dirs):
    src_facts = FakeHostFacts(cpu="cpu-b")
    session, served = start(pair, dirs, facts=FakeHostFacts(runs=frozenset({"cpu-a"})))
    session.facts = src_facts
    with pytest.raises(MigrationError, match="this CPU cannot run what the source's CPU ran"):
        session.prepare(PrepareRequest(container_id="web", cpuinfo=True))
    assert not served.result().succeeded
    assert src_facts.calls[0][0] == "cpuinfo_dump"


def test_rootfs_not_shared(pair, dirs, tmp_path):
    check_refused(pair, dirs, PrepareRequest(container_id="web", shared_markers=(
        SharedMarker(path=str(tmp_path / "nope"), content="x"),)), "is not visible")


def test_rootfs_shared_but_other_content(pair, dirs, tmp_path):
    (tmp_path / "m").write_text("other")
    check_refused(pair, dirs, PrepareRequest(container_id="web", shared_markers=(
        SharedMarker(path=str(tmp_path / "m"), content="mine"),)), "has other content")


def test_agent_without_restore_refuses_at_its_checks(pair, dirs):
    src, dst = pair
    root, work = dirs
    receiver = Receiver(str(root), str(work), restore_fn=None, facts=FakeHostFacts(), timeouts=FAST)
    served = Background(lambda: receiver.serve(dst))
    session = SourceSession(conn=src, peer=None, facts=FakeHostFacts(), local_features={})
    with pytest.raises(MigrationError, match="this agent cannot restore containers"):
        session.prepare(PrepareRequest(container_id="web"))
    assert not served.result().succeeded


def test_bad_container_id(pair, dirs):
    session, served = start(pair, dirs)
    with pytest.raises(MigrationError, match="invalid container id"):
        session.prepare(PrepareRequest(container_id="../../etc"))
    assert not served.result().succeeded


def test_restore_failure_cleans_up_and_tells_the_source(pair, dirs, tmp_path):
    restore = FakeRestore(fail_on=frozenset({1}))
    session, served = start(pair, dirs, restore=restore)
    session.prepare(PrepareRequest(container_id="web"))
    (tmp_path / "r").mkdir()
    session.conn.send_tree(str(tmp_path / "r"), label="rootfs")
    session.conn.send(Kind.RESTORE, RestoreRequest(container_id="web").to_header())
    with pytest.raises(MigrationError) as info:
        session.conn.recv(Kind.RESTORED)
    assert "the destination failed (restore): criu restore failed: fake restore failed" in str(info.value)
    outcome = served.result()
    assert not outcome.succeeded and not os.path.exists(outcome.workdir)


def test_source_abort_after_restore_rolls_the_restore_back(pair, dirs):
    restore = FakeRestore()
    session, served = start(pair, dirs, restore=restore)
    session.prepare(PrepareRequest(container_id="web"))
    session.conn.send(Kind.RESTORE, RestoreRequest(container_id="web").to_header())
    session.conn.recv(Kind.RESTORED)
    session.abort("the source could not finish")
    outcome = served.result()
    assert "the source aborted: the source could not finish" in outcome.error
    assert restore.aborted == 1 and not os.path.exists(outcome.workdir)


def test_source_gone_mid_stream_cleans_up(pair, dirs):
    session, served = start(pair, dirs)
    session.prepare(PrepareRequest(container_id="web"))
    conn = session.conn
    conn.send(Kind.CONTROL, {"op": "nothing"})
    outcome = served.result()
    assert "this agent has no control operation 'nothing'" in outcome.error


def test_escape_attempt_fails_the_migration_and_says_why(pair, dirs, tmp_path):
    from migrate.migration.tree import encode_entry

    session, served = start(pair, dirs)
    session.prepare(PrepareRequest(container_id="web"))
    evil = encode_entry({"op": "put", "path": "../../../tmp/evil", "type": "file", "mode": 0o644,
                         "uid": 0, "gid": 0, "mtime_ns": 0, "size": 1}) + b"!"
    session.conn.send_stream({"what": "tree", "label": "rootfs"}, [evil])
    with pytest.raises(MigrationError, match="refusing path '../../../tmp/evil'"):
        session.conn.recv(Kind.REPLY)
    assert not served.result().succeeded
    assert not (tmp_path / "evil").exists()


def test_label_cannot_escape_the_workdir(pair, dirs, tmp_path):
    session, served = start(pair, dirs)
    session.prepare(PrepareRequest(container_id="web"))
    (tmp_path / "t").mkdir()
    session.conn.send_tree(str(tmp_path / "t"), label="../../outside")
    with pytest.raises(MigrationError, match="refusing path '../../outside'"):
        session.conn.recv(Kind.REPLY)
    assert not served.result().succeeded


def test_restore_fn_returning_a_dict(pair, dirs):
    session, served = start(pair, dirs, restore=lambda workdir, request: {"pid": 7})
    session.prepare(PrepareRequest(container_id="web"))
    session.conn.send(Kind.RESTORE, RestoreRequest(container_id="web").to_header())
    assert session.conn.recv(Kind.RESTORED).header == {"info": {"pid": 7}}
    session.conn.send(Kind.DONE)
    session.conn.recv(Kind.DONE)
    assert served.result().succeeded


def test_done_before_restore_is_a_protocol_error(pair, dirs):
    session, served = start(pair, dirs)
    session.prepare(PrepareRequest(container_id="web"))
    session.conn.send(Kind.DONE)
    with pytest.raises(MigrationError, match="DONE before the container was restored"):
        session.conn.recv(Kind.DONE)
    assert not served.result().succeeded


# -- rollback on the source --------------------------------------------------------


def test_rollback_runs_on_failure_and_tells_the_agent(pair, dirs):
    session, served = start(pair, dirs)
    calls = []
    with pytest.raises(MigrationError) as info:
        with rollback(lambda err: calls.append(err) or "resumed", session=session):
            session.prepare(PrepareRequest(container_id="web"))
            session.conn.source_state = "frozen"
            raise MigrationError("dump", "criu dump failed", source_state="frozen")
    assert len(calls) == 1
    assert str(info.value) == "migration failed during dump: criu dump failed (source container resumed)"
    assert "the source aborted: the source failed: criu dump failed" in served.result().error


def test_rollback_after_commit_does_nothing():
    calls = []
    with pytest.raises(MigrationError, match=r"\(source container running\)"):
        with rollback(lambda err: calls.append(err)) as rb:
            rb.commit()
            raise MigrationError("cleanup", "x")
    assert calls == []


def test_rollback_on_any_exception_and_failed_rollback_is_noted():
    def broken(err):
        raise RuntimeError("resume failed")

    with pytest.raises(KeyboardInterrupt) as info:
        with rollback(broken):
            raise KeyboardInterrupt
    assert any("rolling back on the source failed too: resume failed" in n
               for n in info.value.__notes__)


def test_rollback_keeps_the_error_class():
    from migrate.errors import ProtocolError

    with pytest.raises(ProtocolError, match="source container resumed"):
        with rollback(lambda err: "resumed"):
            raise ProtocolError("handshake", "x")


def test_shared_marker_is_removed(tmp_path):
    with shared_marker(str(tmp_path)) as marker:
        assert open(marker.path).read() == marker.content
    assert os.listdir(tmp_path) == []


def test_restored_defaults():
    assert Restored().info == {} and Restored().commit is None and Restored().after is None


@pytest.mark.parametrize("fails", [False, True])
def test_after_runs_once_the_source_has_done(pair, dirs, fails):
    """``Restored.after`` (the images' removal) runs after DONE is answered,
    so it is not downtime; a failure in it does not fail the migration."""
    import threading

    answered = threading.Event()
    ran = []

    def after():
        ran.append(answered.wait(timeout=5))
        if fails:
            raise OSError("cannot remove")

    def restore(workdir, request):
        return Restored(info={"pid": 1}, commit=lambda: ran.append("commit"), after=after)

    session, served = start(pair, dirs, restore=restore)
    conn = session.conn
    session.prepare(PrepareRequest(container_id="web"))
    conn.send(Kind.RESTORE, RestoreRequest(container_id="web").to_header())
    conn.recv(Kind.RESTORED)
    conn.send(Kind.DONE)
    conn.recv(Kind.DONE)
    answered.set()
    assert served.result().succeeded
    assert ran == ["commit", True]


def test_restore_of_another_container_or_malformed_is_refused(pair, dirs):
    restore = FakeRestore()
    session, served = start(pair, dirs, restore=restore)
    session.prepare(PrepareRequest(container_id="web"))
    session.conn.send(Kind.RESTORE, RestoreRequest(container_id="db").to_header())
    with pytest.raises(MigrationError, match='RESTORE names container "db", PREPARE "web"'):
        session.conn.recv(Kind.RESTORED)
    assert not served.result().succeeded and restore.calls == []


def test_control_hooks_get_the_typed_control(pair, dirs):
    seen = []
    session, served = start(pair, dirs, controls={"probe": lambda inc, c: seen.append(c)})
    session.prepare(PrepareRequest(container_id="web"))
    session.conn.send(Kind.CONTROL, Control(op="probe", args={"n": 1}).to_header())
    assert session.conn.recv(Kind.REPLY).header == {}
    assert seen == [Control(op="probe", args={"n": 1})]
    session.conn.send(Kind.CONTROL, {"op": 5})
    assert "CONTROL has no op: 5" in served.result().error
