"""The state store: one directory per container under the runtime root.

    <root>/<id>/state.json   the saved ContainerState (temp file + rename)
    <root>/<id>/exec.fifo    exists while the container is "created"
    <root>/<id>/intent.json  what a create or restore in progress has made or
                             is about to make (cgroups, mounts, processes)

A container's directory is locked with flock(2) on the directory itself, so
concurrent commands on one container are serialised, and a half-written
state file never replaces a good one.

Create and restore are many steps, and SIGKILL can stop them between any
two. So they ``claim()`` the ID (mkdir, then flock, held until the state is
saved) and write ``intent.json`` *before* each side effect: the cgroup
paths before mkdir in cgroupfs, a mount point before mounting, a process as
soon as its pid is known. An ID directory without ``state.json`` is then
either still being made (its lock is held) or left by a killed command, and
``delete --force`` undoes what its intent lists (``undo_intent`` in
``lifecycle/delete.py``). The record is replaced by rename only (no fsync):
it has to survive SIGKILL, not a power cut, which ends every process and
mount it names anyway.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from migrate._light import contextmanager, dumps, loads, suppress
from migrate._record import asdict, field, fields, record

from migrate.errors import ExistsError, KernelError, NotFoundError, UsageError

__all__ = ["ContainerState", "oci_state", "StateStore", "Claim", "validate_id", "atomic_write"]

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-.")
STATE_FILE = "state.json"
FIFO_NAME = "exec.fifo"
INTENT_FILE = "intent.json"
# In the environment of helpers a restore starts (criu swrk and its forks):
# the claimed directory, so `delete --force` finds what no record names.
INTENT_ENV = "MIGRATE_INTENT_DIR"


def validate_id(container_id: str) -> str:
    """Refuse IDs that could escape the state directory or confuse tools.

    Raises UsageError.
    """
    if not isinstance(container_id, str) or not container_id:
        raise UsageError("container id cannot be empty")
    if container_id in (".", "..") or not _is_id(container_id):
        raise UsageError(f'invalid container id "{container_id}": use letters, digits, '
                         f'"_", "+", "-" and "." only')
    return container_id


def _is_id(name: str) -> bool:
    # 1 to 1024 of letters, digits, "_+-." (no regex: ``re`` costs start-up time)
    return 0 < len(name) <= 1024 and _ID_CHARS.issuperset(name)


def atomic_write(path: str, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write via a temp file in the same directory, fsync (when ``durable``),
    rename. Readers see the old file or the new one, never a part.

    Every file the runtime writes for a user (state, pid files, checkpoint
    metadata) goes through here, so a missing directory, a full or read-only
    file system is a KernelError naming the path, never an internal error.
    """
    # A rename replaces whatever has that name: never a device node, fifo,
    # socket or directory (`--pid-file /dev/null` once turned the host's
    # /dev/null into a regular file).
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise KernelError.from_oserror("write", err, path) from None
    else:
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise UsageError(f"{path} exists and is not a regular file: it is not replaced")
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    except OSError as err:
        raise KernelError.from_oserror("write", err, path) from None
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
    except BaseException as err:
        if fd >= 0:
            os.close(fd)
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise KernelError.from_oserror("write", err, path) from None
        raise


@record(frozen=False)
class ContainerState:
    """What later commands need to know about a container (state.json)."""

    id: str
    bundle: str
    rootfs: str
    pid: int = 0
    pid_start: int = 0                 # field 22 of /proc/PID/stat: detects PID reuse
    created: str = ""                  # RFC 3339
    owner: str = ""
    annotations: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)        # the OCI config, as parsed
    cgroup: dict = field(default_factory=dict)        # CgroupManager.to_state()
    namespaces: dict = field(default_factory=dict)    # OCI type -> path to join
    external_descriptors: list = field(default_factory=list)  # what fds 0-2 of init were
    # The identity of the files the init was handed as fds 0-2 (runtime/stdio.py):
    # checkpoint declares them external. Absent from state files written before
    # it: checkpoint then reads the init's fds 0-2 as they are.
    stdio: list = field(default_factory=list)
    rootless_euid: bool = False
    rootless_cgroups: bool = False
    no_pivot: bool = False
    terminal: bool = False
    stopped: bool = False              # set once the init is known to be gone (checkpointed)
    restored: bool = False
    checkpointed: bool = False
    notify_socket: str | None = None   # host NOTIFY_SOCKET to forward READY=1 to

    def to_json(self) -> bytes:
        return dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> "ContainerState":
        raw = loads(data)
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        known = set(fields(cls))
        return cls(**{k: v for k, v in raw.items() if k in known})


def oci_state(state: ContainerState, status: str) -> dict:
    """The runtime-spec state JSON, as `state` prints and hooks receive."""
    return {
        "ociVersion": state.config.get("ociVersion", "1.2.0"),
        "id": state.id,
        "pid": state.pid if status != "stopped" else 0,
        "status": status,
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "created": state.created,
        "owner": state.owner,
        "annotations": state.annotations,
    }


class StateStore:
    """The runtime root (``--root``) and its container directories."""

    __slots__ = ("root",)

    def __init__(self, root: str):
        self.root = root

    def ensure_root(self) -> None:
        try:
            os.makedirs(self.root, mode=0o711, exist_ok=True)
        except OSError as err:
            raise KernelError.from_oserror("mkdir", err, self.root) from err

    def dir(self, container_id: str) -> str:
        return os.path.join(self.root, validate_id(container_id))

    def fifo_path(self, container_id: str) -> str:
        return os.path.join(self.dir(container_id), FIFO_NAME)

    def exists(self, container_id: str) -> bool:
        return os.path.exists(os.path.join(self.dir(container_id), STATE_FILE))

    def create_dir(self, container_id: str) -> str:
        """Claim an ID: mkdir is atomic, so two creates cannot both win.

        Raises ExistsError, UsageError.
        """
        self.ensure_root()
        path = self.dir(container_id)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            if not self.exists(container_id):
                raise ExistsError(f'container "{container_id}" already exists (being created, '
                                  f'or left half-made by an interrupted create or restore: '
                                  f'"delete --force" removes it)') from None
            raise ExistsError(f'container "{container_id}" already exists') from None
        except OSError as err:
            raise KernelError.from_oserror("mkdir", err, path) from err
        return path

    def claim(self, container_id: str, op: str) -> "Claim":
        """Claim an ID for a multi-step ``op`` (create, restore): the
        directory, locked until ``Claim.release()``, with an intent record
        written before anything else exists. Raises ExistsError, UsageError,
        KernelError."""
        path = self.create_dir(container_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            with suppress(OSError):
                os.rmdir(path)
            raise KernelError.from_oserror("open", err, path) from err
        # Nobody else can hold it yet: the directory is seconds old and ours.
        fcntl.flock(fd, fcntl.LOCK_EX)
        claim = Claim(path, fd, {"op": op})
        claim.record()
        return claim

    def load_intent(self, container_id: str) -> dict:
        """The intent record of a half-made container ({} if none or unreadable)."""
        try:
            with open(os.path.join(self.dir(container_id), INTENT_FILE), "rb") as f:
                raw = loads(f.read())
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def is_half_made(self, container_id: str) -> bool:
        """An ID directory without state.json (a create in progress or killed)."""
        return os.path.isdir(self.dir(container_id)) and not self.exists(container_id)

    @contextmanager
    def lock(self, container_id: str, *, shared: bool = False):
        """Hold flock(2) on the container's directory. Raises NotFoundError."""
        path = self.dir(container_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f'container "{container_id}" does not exist') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self, container_id: str) -> ContainerState:
        """Raises NotFoundError when there is no such container."""
        path = os.path.join(self.dir(container_id), STATE_FILE)
        try:
            with open(path, "rb") as f:
                return ContainerState.from_json(f.read())
        except FileNotFoundError:
            if os.path.isdir(self.dir(container_id)):
                raise NotFoundError(
                    f'container "{container_id}" was never fully created (a create or restore '
                    f'is in progress or was interrupted): "delete --force" removes it') from None
            raise NotFoundError(f'container "{container_id}" does not exist') from None
        except (ValueError, TypeError) as err:
            raise NotFoundError(f'container "{container_id}": state file {path} is corrupt: {err}') from err

    def save(self, state: ContainerState) -> None:
        # Not durable: the rename alone keeps readers from a half-written
        # file, and what state.json describes (live processes) cannot
        # outlive the crash an fsync would guard against. The fsync was
        # 2-15 ms of every create/start/exec on a root on ext4 (here /run
        # is not a tmpfs), with the journal shared by everything else;
        # runc's saveState does not sync either.
        atomic_write(os.path.join(self.dir(state.id), STATE_FILE), state.to_json(),
                     durable=False)

    def remove(self, container_id: str) -> None:
        """Remove the container's directory (it holds only flat files; no
        shutil: importing it costs ~3 ms on every delete). A directory with
        anything mounted at or below it is left alone: rmtree would walk into
        the mount and delete what is there (restore's criu-root is a bind
        mount of the rootfs). Raises KernelError if the directory stays."""
        path = self.dir(container_id)
        try:
            entries = os.listdir(path)
        except FileNotFoundError:
            return
        for name in entries:
            sub = os.path.join(path, name)
            with suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(sub)
            if os.path.isdir(sub):
                from migrate.runtime.mountinfo import mounts_at_or_below

                if mounts_at_or_below(sub):
                    raise KernelError("rmdir", sub, errno.EBUSY,
                                      "something is still mounted there")
                import shutil

                shutil.rmtree(sub, ignore_errors=True)
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise KernelError.from_oserror("rmdir", err, path) from err

    def list_ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _is_id(n) and n not in (".", "..")
                      and os.path.exists(os.path.join(self.root, n, STATE_FILE)))


class Claim:
    """A claimed, locked ID directory and its intent record (see the module
    docstring). ``record(**facts)`` merges facts and rewrites the record
    atomically; call it *before* the side effect it describes."""

    __slots__ = ("dir", "fd", "intent")

    def __init__(self, path: str, fd: int, intent: dict):
        self.dir = path
        self.fd = fd
        self.intent = intent

    def record(self, **facts) -> None:
        self.intent.update(facts)
        atomic_write(os.path.join(self.dir, INTENT_FILE),
                     dumps(self.intent, sort_keys=True).encode(), durable=False)

    def add(self, key: str, item) -> None:
        """Append ``item`` to the list ``key`` and record it."""
        self.record(**{key: [*self.intent.get(key, ()), item]})

    def done(self) -> None:
        """The state is saved: the intent is no longer needed."""
        with suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, INTENT_FILE))

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
