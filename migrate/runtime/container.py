"""``Container``: a saved state plus the live facts (is the init alive, frozen).

The single table of allowed transitions lives here; every lifecycle
operation asks ``require(op)`` first.
"""

from __future__ import annotations

import os

from migrate.errors import InvalidStateError
from migrate.runtime.state import FIFO_NAME, ContainerState, StateStore

__all__ = ["Container", "Status", "ALLOWED", "proc_start_time", "pid_alive"]


class Status(str):
    """A container status: one shared instance per value, so ``is`` compares.

    A str with named instances rather than a ``str`` ``enum.Enum``:
    importing ``enum`` alone costs ~5 ms of every hot command
    (migrate/_light.py). ``Status("running")`` gives ``Status.RUNNING``;
    an unknown value raises ValueError.
    """

    __slots__ = ()
    CREATING: Status
    CREATED: Status
    RUNNING: Status
    PAUSED: Status
    STOPPED: Status

    def __new__(cls, value):
        try:
            return _STATUSES[value]
        except (KeyError, TypeError):
            raise ValueError(f"{value!r} is not a valid Status") from None

    @property
    def value(self) -> str:
        return str.__str__(self)

    @property
    def name(self) -> str:
        return self.value.upper()

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"<Status.{self.name}: {self.value!r}>"


_STATUSES: dict = {}
for _value in ("creating", "created", "running", "paused", "stopped"):
    _STATUSES[_value] = str.__new__(Status, _value)
    setattr(Status, _value.upper(), _STATUSES[_value])
del _value


S = Status
# operation -> statuses it is allowed from (runc's rules, see state_linux.go).
ALLOWED: dict[str, frozenset[Status]] = {
    "start": frozenset({S.CREATED}),
    "kill": frozenset({S.CREATED, S.RUNNING, S.PAUSED}),
    "pause": frozenset({S.CREATED, S.RUNNING}),
    "resume": frozenset({S.PAUSED}),
    "delete": frozenset({S.CREATED, S.STOPPED}),
    "exec": frozenset({S.CREATED, S.RUNNING}),
    "exec_ignore_paused": frozenset({S.CREATED, S.RUNNING, S.PAUSED}),
    "checkpoint": frozenset({S.RUNNING, S.PAUSED}),
    # runc lists whatever is left in the cgroup, even once the init is gone.
    "ps": frozenset({S.CREATED, S.RUNNING, S.PAUSED, S.STOPPED}),
    "update": frozenset({S.CREATED, S.RUNNING, S.PAUSED}),
    "events": frozenset({S.CREATED, S.RUNNING, S.PAUSED}),
}


def proc_start_time(pid: int, proc_root: str = "/proc") -> int:
    """Field 22 of /proc/PID/stat (starttime), 0 if the process is gone."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    # The command name (field 2) may hold spaces and parentheses: split after it.
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return 0
    return int(rest[19])


def pid_alive(pid: int, start: int, proc_root: str = "/proc") -> bool:
    return pid > 0 and start != 0 and proc_start_time(pid, proc_root) == start


class Container:
    __slots__ = ("state", "store", "proc_root", "_cgroups")

    def __init__(self, state: ContainerState, store: StateStore, proc_root: str = "/proc"):
        self.state = state
        self.store = store
        self.proc_root = proc_root
        self._cgroups = None

    @classmethod
    def load(cls, store: StateStore, container_id: str, proc_root: str = "/proc") -> "Container":
        return cls(store.load(container_id), store, proc_root)

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def cgroups(self):
        if self._cgroups is None and self.state.cgroup:
            from migrate.runtime.cgroups import load_manager

            self._cgroups = load_manager(self.state.cgroup, rootless=self.state.rootless_cgroups)
        return self._cgroups

    def is_alive(self) -> bool:
        return not self.state.stopped and pid_alive(self.state.pid, self.state.pid_start,
                                                    self.proc_root)

    def status(self) -> Status:
        if not self.is_alive():
            return Status.STOPPED
        cg = self.cgroups
        if cg is not None:
            try:
                if cg.is_frozen():
                    return Status.PAUSED
            except Exception:  # noqa: BLE001 - a vanished cgroup is not "paused"
                pass
        if os.path.exists(os.path.join(self.store.dir(self.id), FIFO_NAME)):
            return Status.CREATED
        return Status.RUNNING

    def require(self, op: str) -> Status:
        """Raise InvalidStateError unless ``op`` is allowed now."""
        status = self.status()
        if status not in ALLOWED[op]:
            raise InvalidStateError(self.id, status.value, op, _message(self.id, status, op))
        return status

    def save(self) -> None:
        self.store.save(self.state)


# What runc says of a stopped container; engines look for this text.
NOT_RUNNING = "container not running"


def _message(cid: str, status: Status, op: str) -> str:
    if op == "start" and status is Status.RUNNING:
        return f'container "{cid}" is already running'
    if op == "delete":
        return f'container "{cid}" is {status}: cannot delete it without --force'
    if op == "resume":
        return f'container "{cid}" is {status}, not paused'
    if status is Status.STOPPED:
        # runc's words: containerd's shim and Podman match on them
        return f'cannot {op} container "{cid}": {NOT_RUNNING}'
    if op == "exec" and status is Status.PAUSED:
        # runc's words, which callers match on.
        return (f'container "{cid}" is paused: cannot exec in a paused container '
                f"(use --ignore-paused to override)")
    return f'container "{cid}" is {status}: cannot {op}'
