"""The state store: IDs, atomic saves, one directory per container, locks."""

import fcntl
import json
import os

import pytest

from migrate.errors import KernelError

from migrate.errors import ExistsError, NotFoundError, UsageError
from migrate.runtime.state import ContainerState, StateStore, atomic_write, validate_id


@pytest.mark.parametrize("cid", ["web", "a", "my_app-1.2+b", "A" * 1024, "..a", "a.."])
def test_valid_ids(cid):
    assert validate_id(cid) == cid


@pytest.mark.parametrize("cid", ["", ".", "..", "a/b", "../x", "a b", "web\n", "\nweb",
                                 "A" * 1025, "ä", "a\x00b", "a:b"])
def test_invalid_ids(cid):
    with pytest.raises(UsageError):
        validate_id(cid)


def test_invalid_id_message_names_it():
    with pytest.raises(UsageError, match='invalid container id "a/b"'):
        validate_id("a/b")


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    atomic_write(str(path), b"new", 0o640)
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["state.json"]
    assert path.stat().st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_text("good")

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    # A KernelError naming the file (exit 1 with one line), never a bare OSError.
    with pytest.raises(KernelError, match="state.json: No space left on device"):
        atomic_write(str(path), b"half")
    assert path.read_text() == "good"
    assert os.listdir(tmp_path) == ["state.json"]


def _state(cid="web", **kw) -> ContainerState:
    return ContainerState(id=cid, bundle="/b", rootfs="/b/rootfs", **kw)


def test_state_json_round_trip():
    st = _state(pid=42, pid_start=1234, annotations={"a": "b"}, config={"ociVersion": "1.2.0"},
                namespaces={"pid": "/proc/42/ns/pid"}, external_descriptors=["/dev/null"] * 3,
                stdio=[{"fd": 1, "path": "/var/log/x", "mnt_id": 27, "inode": 9, "mode": 0o100644}],
                rootless_euid=True)
    again = ContainerState.from_json(st.to_json())
    assert again == st


def test_state_json_from_before_the_stdio_record():
    """A state file written before ``stdio`` existed loads with none (the
    checkpoint then reads the init's fds as they are)."""
    data = json.dumps({"id": "web", "bundle": "/b", "rootfs": "/r", "pid": 7,
                       "external_descriptors": ["/dev/null", "pipe:[4]", "pipe:[5]"]})
    st = ContainerState.from_json(data)
    assert st.stdio == [] and st.external_descriptors[1] == "pipe:[4]"


def test_state_json_ignores_unknown_keys():
    data = json.dumps({"id": "web", "bundle": "/b", "rootfs": "/r", "future_field": 1})
    assert ContainerState.from_json(data) == ContainerState(id="web", bundle="/b", rootfs="/r")


@pytest.fixture
def store(tmp_path):
    return StateStore(str(tmp_path / "root"))


def test_create_dir_claims_an_id_once(store):
    path = store.create_dir("web")
    assert os.path.isdir(path) and path == store.dir("web")
    assert os.stat(store.root).st_mode & 0o777 == 0o711 & ~_umask()
    with pytest.raises(ExistsError, match='container "web" already exists'):
        store.create_dir("web")


def test_dir_validates_the_id(store):
    with pytest.raises(UsageError):
        store.dir("../escape")


def test_save_load_exists_remove(store):
    store.create_dir("web")
    assert not store.exists("web")            # a claimed ID without state is not a container
    st = _state(pid=7)
    store.save(st)
    assert store.exists("web")
    assert store.load("web") == st
    store.remove("web")
    assert not os.path.exists(store.dir("web"))
    with pytest.raises(NotFoundError, match='container "web" does not exist'):
        store.load("web")


@pytest.mark.parametrize("text", ["{not json", "[]", "null", '{"bundle": "/b"}'])
def test_load_of_a_corrupt_state(store, text):
    store.create_dir("web")
    with open(os.path.join(store.dir("web"), "state.json"), "w") as f:
        f.write(text)
    with pytest.raises(NotFoundError, match="is corrupt"):
        store.load("web")


def test_list_ids_only_lists_containers(store, tmp_path):
    assert store.list_ids() == []              # no root yet
    for cid in ("b", "a"):
        store.create_dir(cid)
        store.save(_state(cid))
    store.create_dir("claimed")                # no state.json yet
    os.mkdir(os.path.join(store.root, "not valid"))
    assert store.list_ids() == ["a", "b"]


def test_lock_is_exclusive(store):
    store.create_dir("web")
    with store.lock("web"):
        fd = os.open(store.dir("web"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(store.dir("web"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)    # released after the block
    finally:
        os.close(fd)


def test_shared_locks_share(store):
    store.create_dir("web")
    with store.lock("web", shared=True):
        fd = os.open(store.dir("web"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_lock_of_unknown_container(store):
    store.ensure_root()
    with pytest.raises(NotFoundError, match='container "ghost" does not exist'):
        with store.lock("ghost"):
            pass


def test_claim_records_intent_before_side_effects_and_holds_the_lock(tmp_path):
    store = StateStore(str(tmp_path / "root"))
    claim = store.claim("web", "create")
    assert store.load_intent("web") == {"op": "create"}
    claim.record(cgroup={"mode": "v2"})
    claim.add("mounts", "/x")
    claim.add("mounts", "/y")
    assert store.load_intent("web") == {"op": "create", "cgroup": {"mode": "v2"},
                                        "mounts": ["/x", "/y"]}
    assert not [n for n in os.listdir(claim.dir) if n.endswith(".tmp")]
    fd = os.open(claim.dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(BlockingIOError):     # held until release
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        claim.release()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_half_made_id_says_how_to_remove_it(tmp_path):
    store = StateStore(str(tmp_path / "root"))
    store.claim("web", "restore").release()
    assert store.is_half_made("web") and store.list_ids() == []
    with pytest.raises(NotFoundError, match="delete --force"):
        store.load("web")
    with pytest.raises(ExistsError, match="delete --force"):
        store.create_dir("web")
    store.remove("web")
    assert not store.is_half_made("web")


def test_save_is_atomic_but_not_synced(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", synced.append)
    store = StateStore(str(tmp_path))
    store.create_dir("web")
    store.save(_state())
    assert store.load("web").bundle == "/b"
    assert synced == []
    atomic_write(str(tmp_path / "durable"), b"x")
    assert len(synced) == 1
