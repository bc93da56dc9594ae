"""Pay the first cgroup attach's RCU grace period early, in the background.

Moving a process into a cgroup (a write to ``cgroup.procs``, v1 or v2)
takes the kernel's global ``cgroup_threadgroup_rwsem`` for writing; when
nobody has taken it for a while, that first waits a whole RCU grace period
(``rcu_sync_enter``), 10-15 ms on these machines, and the writes that follow
within about one more grace period do not. `create` attaches its init only
after reading the config and preparing the cgroups, so a thread started
first moves this process into the cgroup it is already in (no change at
all) and the grace period passes while the main thread works, instead of
after (issue 16). Best effort: any error is ignored, and ``wait`` must be
called before forking, so that no thread is left running across fork(2).
"""

from __future__ import annotations

import _thread
import os

__all__ = ["AttachWarmup", "AttachKeptWarm", "ChildWarmup", "adopt_launcher_warmup",
           "LAUNCHER_WARMUP"]

# Set by the `migrate` launcher (nsexec/launcher.c) for create, run and exec:
# the pid of the child it started to do the same before Python even began.
LAUNCHER_WARMUP = "_MIGRATE_ATTACH_WARMUP"


class AttachWarmup:
    """Started on construction; ``wait()`` returns once the thread is done."""

    __slots__ = ("_done",)

    def __init__(self, cgroup_root: str = "/sys/fs/cgroup", proc_root: str = "/proc"):
        self._done = _thread.allocate_lock()
        self._done.acquire()
        try:
            _thread.start_new_thread(self._run, (cgroup_root, proc_root))
        except RuntimeError:        # no thread: nothing to wait for
            self._done.release()

    def _run(self, cgroup_root: str, proc_root: str) -> None:
        try:
            path = own_procs_file(cgroup_root, proc_root)
            if path is not None:
                _attach(path, str(os.getpid()).encode())
        except OSError:
            pass
        finally:
            self._done.release()

    def wait(self) -> None:
        self._done.acquire()
        self._done.release()


class ChildWarmup:
    """The launcher's warm-up (nsexec/launcher.c): a child that moves itself
    into its own cgroup every few ms, so that the kernel stays past the
    grace period until we attach. ``wait()`` ends it and reaps it (once):
    SIGKILL waits for an attach in progress, so the first grace period is
    over when it returns."""

    __slots__ = ("_pid",)

    def __init__(self, pid: int):
        self._pid = pid

    def wait(self) -> None:
        if self._pid > 0:
            try:
                os.kill(self._pid, 9)       # our unreaped child: the pid is still ours
                os.waitpid(self._pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass
            self._pid = 0


_adopted: list[ChildWarmup] = []


def adopt_launcher_warmup(environ=os.environ) -> ChildWarmup | None:
    """The launcher's warm-up, taken out of ``environ`` (so nothing we
    start inherits its pid); None when there is none."""
    value = environ.pop(LAUNCHER_WARMUP, "")
    if not (value.isdigit() and int(value) > 0):
        return None
    _adopted.append(ChildWarmup(int(value)))
    return _adopted[-1]


def reap_launcher_warmup() -> None:
    """Before exiting: wait for the launcher's warm-up if nobody did (an
    error came first), rather than leave a zombie to a PID 1 that may never
    reap it."""
    adopt_launcher_warmup()
    for warmup in _adopted:
        warmup.wait()


def _attach(procs_file: str, pid: bytes) -> None:
    """Move process ``pid`` into the cgroup of ``procs_file`` (ours: no
    change, but the attach and its grace period happen)."""
    fd = os.open(procs_file, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, pid)
    finally:
        os.close(fd)


def own_procs_file(cgroup_root: str = "/sys/fs/cgroup", proc_root: str = "/proc") -> str | None:
    """The ``cgroup.procs`` of the cgroup this process is in, in the unified
    hierarchy (pure v2 at the root, or the hybrid layout's ``unified``);
    None when there is none."""
    with open(f"{proc_root}/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                own = line[3:].strip()
                break
        else:
            return None
    for mount in (cgroup_root, os.path.join(cgroup_root, "unified")):
        if os.path.exists(os.path.join(mount, "cgroup.controllers")):
            return os.path.join(mount + own.rstrip("/"), "cgroup.procs")
    return None


class AttachKeptWarm:
    """AttachWarmup's attach, repeated every ``interval`` seconds until
    ``stop()`` (at most ``limit`` seconds): the first pays the grace period
    in the background, the next keep it paid (each within one grace period
    of the last), so that attaches and cgroup2 mounts made meanwhile by
    another process (CRIU's restore) do not wait for one. Best effort, as
    AttachWarmup; ``stop()`` must be called before forking."""

    __slots__ = ("_stop", "_done")

    def __init__(self, cgroup_root: str = "/sys/fs/cgroup", proc_root: str = "/proc",
                 interval: float = 0.004, limit: float = 5.0):
        self._stop = _thread.allocate_lock()
        self._stop.acquire()
        self._done = _thread.allocate_lock()
        self._done.acquire()
        try:
            _thread.start_new_thread(self._run, (cgroup_root, proc_root, interval, limit))
        except RuntimeError:
            self._done.release()

    def _run(self, cgroup_root: str, proc_root: str, interval: float, limit: float) -> None:
        import time

        try:
            path = own_procs_file(cgroup_root, proc_root)
            if path is None:
                return
            pid = str(os.getpid()).encode()
            end = time.monotonic() + limit
            while time.monotonic() < end:
                _attach(path, pid)
                if self._stop.acquire(True, interval):
                    return
        except OSError:
            pass
        finally:
            self._done.release()

    def stop(self) -> None:
        """Stop attaching; returns once the thread is done."""
        try:
            self._stop.release()
        except RuntimeError:        # stopped already
            pass
        self._done.acquire()
        self._done.release()
