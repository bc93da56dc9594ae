"""The state store: one directory per container under the runtime root.

    <root>/<id>/state.json   the saved ContainerState (temp file + rename)
    <root>/<id>/exec.fifo    exists while the container is "created"

A container's directory is locked with flock(2) on the directory itself, so
concurrent commands on one container are serialised, and a half-written
state file never replaces a good one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from migrate._record import asdict, field, fields, record

from migrate.errors import ExistsError, KernelError, NotFoundError, UsageError

__all__ = ["ContainerState", "StateStore", "validate_id", "atomic_write"]

# \Z, not $: "$" also matches before a trailing newline.
_ID_RE = re.compile(r"^[A-Za-z0-9_+\-.]{1,1024}\Z")
STATE_FILE = "state.json"
FIFO_NAME = "exec.fifo"


def validate_id(container_id: str) -> str:
    """Refuse IDs that could escape the state directory or confuse tools.

    Raises UsageError.
    """
    if not isinstance(container_id, str) or not container_id:
        raise UsageError("container id cannot be empty")
    if container_id in (".", "..") or not _ID_RE.match(container_id):
        raise UsageError(f'invalid container id "{container_id}": use letters, digits, '
                         f'"_", "+", "-" and "." only')
    return container_id


def atomic_write(path: str, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write via a temp file in the same directory, fsync (when ``durable``),
    rename. Readers see the old file or the new one, never a part."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


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
    rootless_euid: bool = False
    rootless_cgroups: bool = False
    no_pivot: bool = False
    terminal: bool = False
    stopped: bool = False              # set once the init is known to be gone (checkpointed)
    restored: bool = False
    checkpointed: bool = False
    notify_socket: str | None = None   # host NOTIFY_SOCKET to forward READY=1 to

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> "ContainerState":
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        known = set(fields(cls))
        return cls(**{k: v for k, v in raw.items() if k in known})


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
            raise ExistsError(f'container "{container_id}" already exists') from None
        except OSError as err:
            raise KernelError.from_oserror("mkdir", err, path) from err
        return path

    @contextlib.contextmanager
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
        shutil: importing it costs ~3 ms on every delete)."""
        path = self.dir(container_id)
        try:
            entries = os.listdir(path)
        except FileNotFoundError:
            return
        for name in entries:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(os.path.join(path, name))
            if os.path.isdir(os.path.join(path, name)):
                import shutil

                shutil.rmtree(os.path.join(path, name), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path)

    def list_ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _ID_RE.match(n) and n not in (".", "..")
                      and os.path.exists(os.path.join(self.root, n, STATE_FILE)))
