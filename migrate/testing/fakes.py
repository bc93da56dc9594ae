"""``FakeSyscalls``: a recording stand-in for ``LinuxSyscalls`` in unit tests.

Every call is appended to ``.calls`` as a small frozen dataclass (``Mount``,
``WriteFile``, ...), in order, including calls that fail, so a test can
check the plan the code under test made::

    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2, errno=errno.EPERM)   # the 2nd mount fails
    mount_one(sys, m, plan)
    assert sys.of(Mount) == [Mount(...), Mount(...), Mount(...)]

Nothing reaches the kernel: mounts, mknod, chown and kill are only
recorded, and ``write_file`` never writes. Two things are modelled so the
fake fails where the kernel would (see ``migrate.testing._contract``):

- with ``check_paths`` (the default), ``mount``, ``umount`` and
  ``write_file`` raise ENOENT for a path that does not exist (a read-only
  look with ``os.path.exists``);
- ``kill`` succeeds only for the pids given in ``pids`` (ESRCH otherwise).

A method of the ``Syscalls`` Protocol that the fake does not model yet
raises ``NotImplementedError``, as does any other public attribute called
on it: a test never passes because a call silently did nothing.
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass
from typing import Iterable

__all__ = [
    "FakeSyscalls",
    "Call",
    "WarmCgroupAttach",
    "Mount",
    "Umount",
    "PivotRoot",
    "Setns",
    "Unshare",
    "Sethostname",
    "Setdomainname",
    "Mknod",
    "Chown",
    "Kill",
    "WriteFile",
    "Prctl",
    "Capset",
    "JoinSessionKeyring",
    "MountSetattr",
    "OpenTree",
    "MoveMount",
    "MarkFdsCloexec",
    "Personality",
    "SeccompPrepare",
    "SeccompLoad",
    "LandlockScope",
]

_call = dataclass(frozen=True, slots=True)


class Call:
    """Base of the recorded calls."""

    __slots__ = ()


@_call
class Mount(Call):
    source: str | None
    target: str
    fstype: str | None
    flags: int
    data: str | None



@_call
class Umount(Call):
    target: str
    flags: int = 0



@_call
class PivotRoot(Call):
    new_root: str
    put_old: str



@_call
class Setns(Call):
    fd: int
    nstype: int


@_call
class Unshare(Call):
    flags: int


@_call
class Sethostname(Call):
    name: str


@_call
class Setdomainname(Call):
    name: str


@_call
class Mknod(Call):
    path: str
    mode: int
    device: int



@_call
class Chown(Call):
    path: str
    uid: int
    gid: int



@_call
class Kill(Call):
    pid: int
    sig: int


@_call
class WriteFile(Call):
    path: str
    data: str



@_call
class WarmCgroupAttach(Call):
    cgroup_root: str
    proc_root: str


class _Done:
    def wait(self) -> None:
        pass


@_call
class Prctl(Call):
    option: int
    arg2: int = 0
    arg3: int = 0
    arg4: int = 0
    arg5: int = 0


@_call
class Capset(Call):
    effective: int
    permitted: int
    inheritable: int


@_call
class JoinSessionKeyring(Call):
    name: str | None


@_call
class MountSetattr(Call):
    path: str | int            # a path, or the fd of a detached tree
    attr_set: int
    attr_clr: int
    propagation: int = 0
    recursive: bool = False
    userns_fd: int = 0



@_call
class OpenTree(Call):
    path: str
    recursive: bool = False


@_call
class MoveMount(Call):
    from_fd: int
    target: str


@_call
class MarkFdsCloexec(Call):
    first: int


@_call
class Personality(Call):
    persona: int


@_call
class SeccompPrepare(Call):
    plan: object          # runtime.seccomp.SeccompPlan


@_call
class SeccompLoad(Call):
    filter: object        # what seccomp_prepare returned (the fake: the plan)


@_call
class LandlockScope(Call):
    scoped: int           # LANDLOCK_SCOPE_* bits


@dataclass(slots=True)
class _Failure:
    call_type: type
    nth: int
    errno: int


class FakeSyscalls:
    """Records calls instead of making them. See the module docstring."""

    def __init__(self, *, pids: Iterable[int] = (), check_paths: bool = True,
                 prctl_results: dict[int, int] | None = None):
        self.calls: list[Call] = []
        self.pids: set[int] = set(pids)
        self.check_paths = check_paths
        self.prctl_results: dict[int, int] = dict(prctl_results or {})
        self._failures: list[_Failure] = []
        self._written: dict[str, str] = {}
        self._next_fd = 1 << 20  # open_tree returns the next: past fs.nr_open, never real

    # -- test helpers ------------------------------------------------------

    def fail_on(self, call_type: type, nth: int = 1, errno: int = _errno.EPERM) -> None:
        """Make the ``nth`` call of ``call_type`` (1-based, counted over
        ``.calls``, so ``clear`` restarts the count) raise ``OSError(errno)``.
        The failing call is still recorded."""
        if not (isinstance(call_type, type) and issubclass(call_type, Call)):
            raise TypeError(f"fail_on needs a call type such as Mount, not {call_type!r}")
        if nth < 1:
            raise ValueError("nth counts from 1")
        self._failures.append(_Failure(call_type, nth, errno))

    def of(self, call_type: type) -> list[Call]:
        """The recorded calls of one type, in order."""
        return [c for c in self.calls if type(c) is call_type]

    def clear(self) -> None:
        """Forget recorded calls (failure rules stay, counted from here)."""
        self.calls.clear()

    # -- the machinery -----------------------------------------------------

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        count = sum(1 for c in self.calls if type(c) is type(call))
        for rule in self._failures:
            if rule.call_type is type(call) and rule.nth == count:
                raise _oserror(rule.errno, call)

    def _need_path(self, call: Call) -> None:
        if self.check_paths and not os.path.exists(_path_of(call)):
            raise _oserror(_errno.ENOENT, call)

    # -- Syscalls ----------------------------------------------------------

    def mount(self, source, target, fstype, flags, data):
        call = Mount(source, target, fstype, flags, data)
        self._record(call)
        self._need_path(call)

    def umount(self, target, flags=0):
        call = Umount(target, flags)
        self._record(call)
        self._need_path(call)

    def pivot_root(self, new_root, put_old):
        self._record(PivotRoot(new_root, put_old))

    def setns(self, fd, nstype):
        self._record(Setns(fd, nstype))

    def unshare(self, flags):
        self._record(Unshare(flags))

    def sethostname(self, name):
        self._record(Sethostname(name))

    def setdomainname(self, name):
        self._record(Setdomainname(name))

    def mknod(self, path, mode, device):
        self._record(Mknod(path, mode, device))

    def chown(self, path, uid, gid):
        self._record(Chown(path, uid, gid))

    def kill(self, pid, sig):
        call = Kill(pid, sig)
        self._record(call)
        if pid not in self.pids:
            raise _oserror(_errno.ESRCH, call)

    def write_file(self, path, data):
        call = WriteFile(path, data)
        self._record(call)
        self._need_path(call)
        self._written[path] = data

    def warm_cgroup_attach(self, cgroup_root, proc_root):
        self._record(WarmCgroupAttach(cgroup_root, proc_root))
        return _Done()

    def prctl(self, option, arg2=0, arg3=0, arg4=0, arg5=0):
        self._record(Prctl(option, arg2, arg3, arg4, arg5))
        return self.prctl_results.get(option, 0)

    def capset(self, effective, permitted, inheritable):
        self._record(Capset(effective, permitted, inheritable))

    def join_session_keyring(self, name):
        self._record(JoinSessionKeyring(name))

    def mount_setattr(self, path, *, attr_set, attr_clr, propagation=0,
                      recursive=False, userns_fd=0):
        self._record(MountSetattr(path, attr_set, attr_clr, propagation, recursive, userns_fd))

    def open_tree(self, path, *, recursive=False):
        call = OpenTree(path, recursive)
        self._record(call)
        self._need_path(call)
        self._next_fd += 1
        return self._next_fd

    def move_mount(self, from_fd, to_path):
        call = MoveMount(from_fd, to_path)
        self._record(call)
        self._need_path(call)

    def mark_fds_cloexec(self, first):
        self._record(MarkFdsCloexec(first))

    def personality(self, persona):
        self._record(Personality(persona))

    def seccomp_prepare(self, plan):
        self._record(SeccompPrepare(plan))
        return plan

    def seccomp_load(self, filter):
        self._record(SeccompLoad(filter))
        # A notifying plan gets a listener fd, as from seccomp(2): a real
        # one (of /dev/null), so the code under test may close it.
        if getattr(filter, "notifies", False):
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return None

    def landlock_scope(self, scoped):
        self._record(LandlockScope(scoped))

    def written(self, path: str) -> str | None:
        """What the last ``write_file`` to ``path`` that did not fail wrote."""
        return self._written.get(path)

    def __getattr__(self, name: str):
        # Only reached for attributes the class does not define.
        if name.startswith("_"):
            raise AttributeError(name)

        def unmodelled(*args, **kwargs):
            raise NotImplementedError(f"FakeSyscalls does not model {name}(): add it "
                                      f"to migrate/testing/fakes.py")

        return unmodelled


def _path_of(call: Call) -> str | None:
    for name in ("path", "target", "new_root"):
        value = getattr(call, name, None)
        if isinstance(value, str):
            return value
    return None


def _oserror(err: int, call: Call) -> OSError:
    # OSError(errno, ...) returns the matching subclass (ESRCH ->
    # ProcessLookupError, ENOENT -> FileNotFoundError), as the real calls do.
    name = type(call).__name__.lower()
    path = _path_of(call)
    where = f" {path}" if path else ""
    return OSError(err, f"{name}{where}: {os.strerror(err)}", path)
