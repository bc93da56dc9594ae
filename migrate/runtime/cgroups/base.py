"""What every cgroup manager shares.

- ``CgroupManager`` (in ``protocol.py``, which alone needs ``typing``) is
  the Protocol; ``v1.py`` (v1 and hybrid) and ``v2.py`` (pure unified)
  implement it on top of ``ManagerBase`` here.
- ``CgroupFiles``: the one seam through which managers touch cgroupfs
  (read, write, mkdir, rmdir, kill, sleep). Unit tests pass a subclass that
  plays the kernel on a ``tmp_path`` tree.
- Parsers for ``/proc/self/mountinfo`` and ``/proc/self/cgroup``, and the
  cgroups-path rules of runc's cgroupfs driver.
- ``ManagerBase``: rootless tolerance, the freeze/signal/thaw dance of
  ``kill_all``, recursive pid listing and bounded removal.

Nothing here keeps state between calls; roots are parameters.
"""

from __future__ import annotations

import errno
import os
import _signal as signal  # not signal.py: its enums cost start-up time (migrate/_light.py)
import time
from migrate._light import contextmanager, suppress
from migrate._log import getLogger

TYPE_CHECKING = False  # typing costs ~10 ms at start-up; annotations only
if TYPE_CHECKING:
    from typing import Any, Iterator

from migrate.errors import KernelError, MigrateError, UsageError


log = getLogger("migrate.runtime.cgroups")

STATE_VERSION = 1
DEFAULT_PARENT = "/migrate"

# Super options of a v1 cgroup mount that are not controller names.
_V1_NON_CONTROLLER_OPTIONS = frozenset({
    "rw", "ro", "none", "all", "noprefix", "xattr", "clone_children",
    "cpuset_v2_mode", "favordynmods", "nsdelegate", "memory_recursiveprot",
})

# rmdir of a cgroup whose last task just exited can fail with EBUSY for a
# moment (the task is still being released); runc retries the same way
# (libcontainer/cgroups/utils.go RemovePath).
_RMDIR_DELAYS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)


# One cgroup line of mountinfo: where it is mounted, the hierarchy path
# mounted there, "cgroup" or "cgroup2", and (v1) the controllers, such as
# ("cpu", "cpuacct") or ("name=systemd",).
class Mount(tuple):
    """(mount_point, root, fstype, controllers); a namedtuple, without the
    ``collections`` import (start-up cost, migrate/_light.py)."""

    __slots__ = ()

    def __new__(cls, mount_point: str, root: str, fstype: str, controllers: tuple):
        return tuple.__new__(cls, (mount_point, root, fstype, controllers))

    mount_point = property(lambda self: self[0])
    root = property(lambda self: self[1])
    fstype = property(lambda self: self[2])
    controllers = property(lambda self: self[3])

    def __repr__(self) -> str:
        return (f"Mount(mount_point={self[0]!r}, root={self[1]!r}, fstype={self[2]!r}, "
                f"controllers={self[3]!r})")


class CgroupFiles:
    """The real cgroupfs. Methods raise ``OSError``; managers wrap them.

    A cgroupfs control file takes one value per ``write(2)``; ``O_TRUNC``
    is harmless there and makes the same code work on plain files.
    """

    def read(self, path: str) -> str:
        # UTF-8, not "ascii": the same text for cgroupfs's ASCII, and its
        # codec is loaded already (encodings.ascii: ~0.2 ms of every exec).
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def write(self, path: str, data: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# ---- parsing -------------------------------------------------------------

def cgroup_mounts(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts in mountinfo text, in order, with the
    controllers each v1 hierarchy carries (its super options)."""
    from migrate.runtime.mountinfo import parse_mountinfo   # only to open a manager

    mounts = []
    for e in parse_mountinfo(text):
        if e.fstype not in ("cgroup", "cgroup2"):
            continue
        controllers: tuple[str, ...] = ()
        if e.fstype == "cgroup":
            controllers = tuple(
                o for o in e.super_options.split(",")
                if o.startswith("name=") or ("=" not in o and o not in _V1_NON_CONTROLLER_OPTIONS))
        mounts.append(Mount(e.mount_point, e.root, e.fstype, controllers))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` as controller -> path; ``""`` is the v2 hierarchy.

    Joined controllers (``2:cpu,cpuacct:/x``) give one key each.
    """
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        if not names:
            own[""] = path
        for name in names.split(","):
            if name:
                own[name] = path
    return own


def normalize_cgroups_path(cgroups_path: str | None, container_id: str) -> str:
    """Apply runc's cgroupfs rules to ``linux.cgroupsPath``.

    Returns ``"/migrate/<id>"`` for an empty path, the cleaned path otherwise
    (absolute paths start with "/", relative ones do not). A path whose ".."
    would climb above its starting point raises ``UsageError``.
    """
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise UsageError(f'invalid container ID for a cgroup path: "{container_id}"')
        return f"{DEFAULT_PARENT}/{container_id}"
    if "\0" in cgroups_path:
        raise UsageError(f'invalid cgroups path "{cgroups_path}"')
    parts: list[str] = []
    for part in cgroups_path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UsageError(f'cgroups path "{cgroups_path}" escapes its cgroup hierarchy')
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        raise UsageError(f'cgroups path "{cgroups_path}" names the hierarchy root itself')
    inner = "/".join(parts)
    return "/" + inner if cgroups_path.startswith("/") else inner


def cgroup_dir(mount: Mount, own_path: str | None, inner: str) -> str:
    """The directory for ``inner`` (see ``normalize_cgroups_path``) in a hierarchy.

    Absolute paths start at the mount; relative ones at this process's own
    cgroup in that hierarchy (runc's fs ``subsysPath``), made relative to the
    part of the hierarchy that is mounted.
    """
    if inner.startswith("/"):
        return mount.mount_point.rstrip("/") + inner
    base = mount.mount_point
    if own_path:
        rel = os.path.relpath(own_path, mount.root)
        if not rel.startswith(".."):
            base = os.path.normpath(os.path.join(mount.mount_point, rel))
    return os.path.join(base, inner)


def levels(mount_point: str, path: str) -> list[str]:
    """Every directory from below ``mount_point`` down to ``path``, in order."""
    rel = os.path.relpath(path, mount_point)
    if rel == ".":
        return []
    out, current = [], mount_point
    for part in rel.split("/"):
        current = os.path.join(current, part)
        out.append(current)
    return out


# ---- the manager core ----------------------------------------------------

class ManagerBase:
    """File access with ``KernelError``, rootless tolerance, shared operations.

    Subclasses provide ``_dirs()`` (unique directories, primary first),
    ``_procs_dir()``, ``freeze``/``thaw``/``is_frozen`` and the rest of the
    Protocol.
    """

    # v1 freezing and v2 frozen-waits poll; bounded so a stuck cgroup fails.
    freeze_retries = 1000

    def __init__(self, *, rootless: bool = False, usable: bool = True,
                 files: CgroupFiles | None = None):
        self._rootless = rootless
        self._usable = usable
        self._files = files if files is not None else CgroupFiles()

    # -- plumbing

    def _read(self, path: str) -> str:
        try:
            return self._files.read(path).strip()
        except OSError as err:
            raise KernelError("read", path, err.errno or errno.EIO) from err

    def _read_opt(self, path: str) -> str | None:
        """The file's content, or None when it does not exist."""
        try:
            return self._files.read(path).strip()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise KernelError("read", path, err.errno or errno.EIO) from err

    def _write(self, path: str, value: str | int, detail: str = "") -> None:
        try:
            self._files.write(path, str(value))
        except OSError as err:
            raise KernelError("write", path, err.errno or errno.EIO, detail) from err

    def _mkdir_p(self, mount_point: str, path: str) -> list[str]:
        """Create the missing levels of ``path``; return the ones created.

        A parent may vanish between two levels (`delete` removes our shared
        parent, /migrate-<hash>, with the last container under it): retried."""
        created = []
        todo = levels(mount_point, path)
        retries = 5
        while todo:
            level = todo[0]
            if os.path.isdir(level):
                todo.pop(0)
                continue
            try:
                self._files.mkdir(level)
            except FileExistsError:
                todo.pop(0)
                continue
            except FileNotFoundError as err:
                retries -= 1
                if retries < 0:
                    raise KernelError("mkdir", level, errno.ENOENT) from err
                todo = levels(mount_point, path)
                continue
            except OSError as err:
                raise KernelError("mkdir", level, err.errno or errno.EIO) from err
            created.append(level)
            todo.pop(0)
        return created

    @contextmanager
    def _tolerated(self, what: str, *, disables: bool = False) -> Iterator[None]:
        """In rootless mode, log a cgroup error instead of raising it."""
        try:
            yield
        except MigrateError as err:
            if not self._rootless:
                raise
            log.debug("rootless: ignoring cgroup error during %s: %s", what, err)
            if disables:
                self._usable = False

    def is_usable(self) -> bool:
        """False when, rootless, the cgroup could not be created or joined."""
        return self._usable

    # -- shared operations

    def _dirs(self) -> list[str]:
        raise NotImplementedError

    def _procs_dir(self) -> str:
        raise NotImplementedError

    def procs_files(self) -> list[str]:
        """The cgroup.procs files ``add`` writes, in its order."""
        return [os.path.join(d, "cgroup.procs") for d in self._dirs()]

    def pids(self) -> list[int]:
        """Every pid in the container's cgroup and its sub-cgroups."""
        top = self._procs_dir()
        if not self._usable or not top or not os.path.isdir(top):
            return []
        found: list[int] = []
        for dirpath, _, _ in os.walk(top):
            content = self._read_opt(os.path.join(dirpath, "cgroup.procs"))
            found.extend(int(p) for p in (content or "").split())
        return sorted(set(found))

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._dirs())

    def kill_all(self, sig: int) -> None:
        """Signal every process of the container.

        Freeze first so that nothing forks between listing and signalling
        (runc signalAllProcesses). After SIGKILL the cgroup is thawed even if
        it was paused: v1 frozen tasks only die once thawed. Other signals
        leave a paused container paused (delivered when it resumes).
        Missing processes are ignored.
        """
        if not self._usable:
            return
        was_frozen, froze = self.is_frozen(), False
        if not was_frozen:
            try:
                self.freeze()
                froze = True
            except MigrateError as err:  # signal anyway: better than nothing
                log.warning("cannot freeze before signalling: %s", err)
        try:
            for pid in self.pids():
                try:
                    self._files.kill(pid, sig)
                except ProcessLookupError:
                    pass
                except OSError as err:
                    raise KernelError("kill", f"pid {pid}", err.errno or errno.EIO) from err
        finally:
            if froze or (was_frozen and sig == signal.SIGKILL):
                self.thaw()

    def _remove_tree(self, top: str) -> None:
        """rmdir ``top`` and its sub-cgroups, deepest first (one attempt each)."""
        if not os.path.isdir(top):
            return
        for path in [dirpath for dirpath, _, _ in os.walk(top, topdown=False)]:
            try:
                self._files.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                raise KernelError("rmdir", path, err.errno or errno.EIO) from err

    def destroy(self) -> None:
        """Remove the container's cgroup directories, then the runtime's own
        parent (``migrate`` or ``migrate-<hash of --root>``) if it is empty.

        EBUSY is retried for about half a second, all hierarchies together.
        Every hierarchy is tried; the first failure is raised with the
        others added as notes.
        """
        try:
            self._destroy_dirs()
        finally:
            self._remove_runtime_parents()

    def _remove_runtime_parents(self) -> None:
        # Here, not in `delete`: a checkpoint, a failed create or restore and
        # a migration's source all destroy cgroups too, and each left an
        # empty parent behind (about 20 per test run) when only `delete`
        # removed it. rmdir fails while another container is under it.
        for path in self._dirs():
            parent = os.path.dirname(path.rstrip("/"))
            name = os.path.basename(parent)
            if name == "migrate" or (name.startswith("migrate-") and len(name) == 16
                                     and all(c in "0123456789abcdef" for c in name[8:])):
                with suppress(OSError):
                    self._files.rmdir(parent)

    def _destroy_dirs(self) -> None:
        pending, errors = self._dirs(), {}
        for delay in (*_RMDIR_DELAYS, None):
            busy = []
            for d in pending:
                try:
                    self._remove_tree(d)
                    errors.pop(d, None)
                except KernelError as err:
                    errors[d] = err
                    if err.errno == errno.EBUSY:
                        busy.append(d)
            if not busy or delay is None:
                break
            self._files.sleep(delay)
            pending = busy
        if errors:
            first, *others = errors.values()
            for other in others:
                first.add_note(f"also: {other}")
            with self._tolerated("destroy"):
                raise first

    def _wait_for(self, path: str, done, what: str) -> None:
        """Poll ``path`` until ``done(content)``; KernelError(EBUSY) if it never is."""
        for i in range(self.freeze_retries):
            if done(self._read(path)):
                return
            self._files.sleep(0.001 if i < 10 else 0.01)
        raise KernelError(what, path, errno.EBUSY, "timed out waiting for the cgroup to settle")


def read_int(text: str | None) -> int | None:
    """A cgroup number: None for missing, "max" or garbage."""
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def read_limit(text: str | None) -> int | None:
    """A limit: None also for v1's "unlimited" (PAGE_COUNTER_MAX pages, ~2**63)."""
    value = read_int(text)
    return None if value is None or value >= 1 << 62 else value


def flat_keyed(text: str | None) -> dict[str, int]:
    """``key value`` lines (cpu.stat, memory.stat, cgroup.events) as a dict."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with suppress(ValueError):
            out[key] = int(value)
    return out


def attr(obj: Any, name: str) -> Any:
    """``obj.name`` or None: the resources model is duck-typed."""
    return None if obj is None else getattr(obj, name, None)
