"""Container status from saved state plus live facts, and the transition table."""

import os

import pytest

from migrate.errors import InvalidStateError
from migrate.runtime.container import ALLOWED, Container, Status, pid_alive, proc_start_time
from migrate.runtime.state import ContainerState, StateStore

PID = 4242
START = 987654


def _write_stat(proc, pid=PID, comm="sh", state="S", start=START):
    d = proc / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    # pid (comm) state ppid ... field 22 is starttime.
    rest = [state] + ["0"] * 18 + [str(start)] + ["0"] * 10
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")


@pytest.fixture
def proc(tmp_path):
    return tmp_path / "proc"


def test_proc_start_time(proc):
    _write_stat(proc)
    assert proc_start_time(PID, str(proc)) == START


def test_proc_start_time_with_a_tricky_command_name(proc):
    _write_stat(proc, comm="a) (b c) 9")
    assert proc_start_time(PID, str(proc)) == START


@pytest.mark.parametrize("state", ["Z", "X"])
def test_zombies_have_no_start_time(proc, state):
    _write_stat(proc, state=state)
    assert proc_start_time(PID, str(proc)) == 0


def test_missing_process(proc):
    proc.mkdir()
    assert proc_start_time(PID, str(proc)) == 0
    assert not pid_alive(PID, START, str(proc))


def test_real_proc_self():
    assert proc_start_time(os.getpid()) > 0


def test_pid_alive_detects_pid_reuse(proc):
    _write_stat(proc, start=START + 1)
    assert not pid_alive(PID, START, str(proc))
    assert not pid_alive(0, START, str(proc))
    assert not pid_alive(PID, 0, str(proc))
    _write_stat(proc)
    assert pid_alive(PID, START, str(proc))


@pytest.fixture
def container(tmp_path, proc):
    store = StateStore(str(tmp_path / "root"))
    store.create_dir("web")
    st = ContainerState(id="web", bundle="/b", rootfs="/b/rootfs", pid=PID, pid_start=START)
    store.save(st)
    return Container.load(store, "web", str(proc))


class _Cgroups:
    def __init__(self, frozen=False, error=None):
        self.frozen = frozen
        self.error = error

    def is_frozen(self):
        if self.error:
            raise self.error
        return self.frozen


def _fifo(container):
    os.mkfifo(container.store.fifo_path(container.id))


def test_status_stopped_when_the_init_is_gone(container):
    assert container.status() is Status.STOPPED


def test_status_stopped_when_marked(container, proc):
    _write_stat(proc)
    container.state.stopped = True
    assert container.status() is Status.STOPPED


def test_status_created_while_the_fifo_exists(container, proc):
    _write_stat(proc)
    _fifo(container)
    assert container.status() is Status.CREATED


def test_status_running(container, proc):
    _write_stat(proc)
    assert container.status() is Status.RUNNING
    assert str(Status.RUNNING) == "running"


def test_status_paused_when_frozen(container, proc):
    _write_stat(proc)
    container._cgroups = _Cgroups(frozen=True)
    assert container.status() is Status.PAUSED


def test_a_vanished_cgroup_is_not_paused(container, proc):
    _write_stat(proc)
    container._cgroups = _Cgroups(error=FileNotFoundError(2, "gone"))
    assert container.status() is Status.RUNNING


def test_no_cgroup_state_means_no_manager(container):
    assert container.state.cgroup == {}
    assert container.cgroups is None


def test_transition_table():
    S = Status
    assert ALLOWED["start"] == {S.CREATED}
    assert ALLOWED["delete"] == {S.CREATED, S.STOPPED}
    assert ALLOWED["resume"] == {S.PAUSED}
    assert S.STOPPED not in ALLOWED["kill"]
    assert S.STOPPED not in ALLOWED["exec"] and S.PAUSED not in ALLOWED["exec"]
    assert ALLOWED["checkpoint"] == {S.RUNNING, S.PAUSED}
    assert all(S.CREATING not in allowed for allowed in ALLOWED.values())


def test_require_returns_the_status(container, proc):
    _write_stat(proc)
    _fifo(container)
    assert container.require("start") is Status.CREATED


@pytest.mark.parametrize("op,setup,message", [
    ("start", "running", 'container "web" is already running'),
    ("start", "stopped", 'cannot start container "web": container not running'),
    ("delete", "running", 'container "web" is running: cannot delete it without --force'),
    ("resume", "running", 'container "web" is running, not paused'),
    ("exec", "stopped", 'cannot exec container "web": container not running'),
    ("pause", "paused", 'container "web" is paused: cannot pause'),
])
def test_require_refuses_with_a_clear_message(container, proc, op, setup, message):
    if setup != "stopped":
        _write_stat(proc)
    if setup == "paused":
        container._cgroups = _Cgroups(frozen=True)
    with pytest.raises(InvalidStateError) as info:
        container.require(op)
    assert str(info.value) == message
    assert info.value.from_ == setup and info.value.to == op
    assert info.value.container_id == "web"


def test_save_persists(container):
    container.state.pid = 99
    container.save()
    assert Container.load(container.store, "web").state.pid == 99
