"""The control messages' bodies: what each puts on the wire, what the
receiving side accepts, and the one-line ProtocolError for what it does not."""

from __future__ import annotations

import pytest

from migrate.errors import ProtocolError
from migrate.migration.messages import (Control, LazySource, PageServerAddress, PageServerExit,
                                        PageServerStart, PageServerWait, Ready, RestorePrepare,
                                        RestorePrepared, RestoreRequest, Restored)


def test_restore_request_on_the_wire():
    """The JSON the source sends (agents of the same protocol version read
    it): "network" for CRIU's net, lazy as {address, port, secret}."""
    secret = "ab" * 32
    req = RestoreRequest(container_id="web", bundle="/b", lazy=LazySource(address="10.0.0.1",
                                                                          port=7000, secret=secret),
                         tcp_established=True, empty_ns=frozenset({"net"}))
    assert req.to_header() == {"request": {
        "container_id": "web", "bundle": "/b",
        "lazy": {"address": "10.0.0.1", "port": 7000, "secret": secret},
        "tcp_established": True, "file_locks": False, "ext_unix_sk": False,
        "leave_stopped": True, "empty_ns": ["network"]}}
    assert RestoreRequest.from_header(req.to_header()) == req
    plain = RestoreRequest(container_id="web")
    assert plain.to_header()["request"]["lazy"] is None
    assert plain.to_header()["request"]["empty_ns"] == []
    assert RestoreRequest.from_header(plain.to_header()) == plain


@pytest.mark.parametrize("secret", [None, "", "ab" * 31, "zz" * 32, 7])
def test_a_lazy_source_without_a_good_secret_is_refused(secret):
    from migrate.errors import ProtocolError

    lazy = {"address": "10.0.0.1", "port": 7000, "secret": secret}
    with pytest.raises(ProtocolError, match="secret"):
        RestoreRequest.from_header({"request": {"container_id": "web", "lazy": lazy}})


def test_restore_request_defaults_and_extra_keys():
    req = RestoreRequest.from_header({"request": {"container_id": "web", "empty_ns": ["net"],
                                                  "content": {"rounds": 3}}})
    assert req.leave_stopped and req.bundle is None and req.lazy is None
    assert req.empty_ns == frozenset({"net"})
    # Unknown keys are kept for strategies, and sent again.
    assert req.extra == {"content": {"rounds": 3}}
    assert req.to_header()["request"]["content"] == {"rounds": 3}


@pytest.mark.parametrize("request_, words", [
    (None, "RESTORE request is not a JSON object"),
    ([], "RESTORE request is not a JSON object"),
    ({}, "RESTORE has no container_id"),
    ({"container_id": ""}, "RESTORE has no container_id"),
    ({"container_id": 7}, "RESTORE has no container_id"),
    ({"container_id": "w", "bundle": 3}, "RESTORE has no bundle"),
    ({"container_id": "w", "lazy": "10.0.0.1:7000"}, "RESTORE lazy is not a JSON object"),
    ({"container_id": "w", "lazy": {"address": "a", "port": 0}}, "port is not a port number"),
    ({"container_id": "w", "lazy": {"address": "a", "port": "80"}}, "port is not a port number"),
    ({"container_id": "w", "lazy": {"port": 80}}, "RESTORE lazy has no address"),
    ({"container_id": "w", "tcp_established": "yes"}, "tcp_established is not true or false"),
    ({"container_id": "w", "leave_stopped": 0}, "leave_stopped is not true or false"),
    ({"container_id": "w", "empty_ns": ["pid"]}, "empty_ns is not a list of namespaces"),
    ({"container_id": "w", "empty_ns": "net"}, "empty_ns is not a list of namespaces"),
])
def test_malformed_restore_requests_are_protocol_errors(request_, words):
    with pytest.raises(ProtocolError, match=words) as info:
        RestoreRequest.from_header({"request": request_}, phase="restore")
    assert info.value.phase == "restore"
    assert "\n" not in str(info.value)


def test_control_keeps_op_apart_from_its_arguments():
    c = Control.from_header({"op": "page_server", "dir": "pre/1", "parent": None})
    assert c == Control(op="page_server", args={"dir": "pre/1", "parent": None})
    assert Control.from_header(c.to_header()) == c
    for bad in ({}, {"op": ""}, {"op": 3}):
        with pytest.raises(ProtocolError, match="CONTROL has no op"):
            Control.from_header(bad)


def test_page_server_requests_and_replies():
    secret = "0f" * 32
    start = PageServerStart(dir="pre/2", parent="../1", secret=secret)
    assert start.to_header() == {"op": "page_server", "dir": "pre/2", "parent": "../1",
                                 "secret": secret}
    assert PageServerStart.from_control(Control.from_header(start.to_header())) == start
    # An absent dir is the images directory, as it always was.
    assert PageServerStart.from_control(Control(op="page_server", args={"secret": secret})) \
        == PageServerStart(secret=secret)
    with pytest.raises(ProtocolError, match="page_server has no dir"):
        PageServerStart.from_control(Control(op="page_server", args={"dir": ["x"],
                                                                     "secret": secret}))
    with pytest.raises(ProtocolError, match="page_server has no parent"):
        PageServerStart.from_control(Control(op="page_server", args={"parent": 1,
                                                                     "secret": secret}))
    # No stream without its secret: the agent's page server takes no other peer.
    with pytest.raises(ProtocolError, match="page_server has no secret"):
        PageServerStart.from_control(Control(op="page_server"))
    with pytest.raises(ProtocolError, match="malformed secret"):
        PageServerStart.from_control(Control(op="page_server", args={"secret": "0f" * 31}))
    assert PageServerWait().to_header() == {"op": "page_server_wait"}
    assert PageServerStart.Reply is PageServerAddress and PageServerWait.Reply is PageServerExit
    addr = PageServerAddress(address="::1", port=41000)
    assert PageServerAddress.from_header(addr.to_header()) == addr
    with pytest.raises(ProtocolError, match="port is not a port number"):
        PageServerAddress.from_header({"address": "::1", "port": 70000})
    assert PageServerExit.from_header({"exit": 0}) == PageServerExit(exit=0)
    with pytest.raises(ProtocolError, match="exit is not a byte count"):
        PageServerExit.from_header({"exit": "0"})


def test_restore_prepare_carries_the_restore_request():
    """restore_prepare is the RESTORE request as a CONTROL: the agent
    prepares exactly the restore that RESTORE will run."""
    req = RestoreRequest(container_id="web", bundle="/b", empty_ns=frozenset({"net"}))
    prep = RestorePrepare(request=req)
    header = prep.to_header()
    assert header["op"] == "restore_prepare" and header["request"] == req.to_header()["request"]
    assert RestorePrepare.from_control(Control.from_header(header)) == prep
    with pytest.raises(ProtocolError, match="RESTORE request is not a JSON object"):
        RestorePrepare.from_control(Control(op="restore_prepare"))
    assert RestorePrepare.Reply is RestorePrepared
    assert RestorePrepared.from_header(RestorePrepared().to_header()) == RestorePrepared()
    with pytest.raises(ProtocolError, match="did not prepare"):
        RestorePrepared.from_header({})


def test_ready_and_restored():
    ready = Ready(workdir="web-abc", free_bytes=1 << 30)
    assert ready.to_header() == {"workdir": "web-abc", "free_bytes": 1 << 30}
    assert Ready.from_header(ready.to_header()) == ready
    with pytest.raises(ProtocolError, match="READY has no workdir"):
        Ready.from_header({"free_bytes": 1})
    with pytest.raises(ProtocolError, match="free_bytes is not a byte count"):
        Ready.from_header({"workdir": "w", "free_bytes": -1})
    restored = Restored(info={"pid": 7}, commit=lambda: None)
    # The hooks stay on the agent; only the info travels.
    assert restored.to_header() == {"info": {"pid": 7}}
    assert Restored.from_header({"info": {"pid": 7}}).info == {"pid": 7}
    with pytest.raises(ProtocolError, match="RESTORED info is not a JSON object"):
        Restored.from_header({"info": [7]})


def test_a_local_lazy_restore_is_asked_for_only_when_set():
    req = RestoreRequest(container_id="web", lazy_local=True)
    assert req.to_header()["request"]["lazy_local"] is True
    assert RestoreRequest.from_header(req.to_header()) == req
    assert "lazy_local" not in RestoreRequest(container_id="web").to_header()["request"]
    with pytest.raises(ProtocolError):
        RestoreRequest.from_header({"request": {"container_id": "web", "lazy_local": "yes"}})


def test_content_build_lazy_and_an_agent_that_does_not_say():
    from migrate.migration.content.messages import Built, ContentBuild

    control = Control.from_header(ContentBuild(lazy=True).to_header())
    assert ContentBuild.from_control(control) == ContentBuild(dir="images", lazy=True)
    assert ContentBuild.from_control(Control(op="content_build", args={})).lazy is False
    with pytest.raises(ProtocolError):
        ContentBuild.from_control(Control(op="content_build", args={"lazy": 1}))
    built = Built(copied=1, in_parent=0, lazy=8, in_memory=True)
    assert Built.from_header(built.to_header()) == built
    assert Built.from_header({"copied": 0, "in_parent": 5}).lazy == 0
