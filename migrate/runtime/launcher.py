"""The one launcher behind create, run and exec.

It forks the child that calls the C bootstrap, then drives the protocol
drawn in ``sync.py`` from the parent side: cgroups, ID maps, hooks, the
console fd. The caller gives what differs: which namespaces to create or
join and the function the child runs as the container's init.
"""

from __future__ import annotations

import os
import _signal as signal  # not signal.py: its enums cost start-up time (migrate/_light.py)
from migrate._light import suppress
from migrate._log import getLogger
from migrate._record import field, record

from migrate.errors import MigrateError
from migrate.runtime import nsexec
from migrate.runtime.nsexec import NsFlag
from migrate.runtime.sync import SyncError, SyncSocket, socketpair

TYPE_CHECKING = False   # typing costs ~2 ms to import; only checkers need it
if TYPE_CHECKING:
    from typing import Callable, NoReturn

__all__ = ["LaunchSpec", "Launched", "launch", "LaunchError"]

_log = getLogger("migrate.runtime.launcher")


class LaunchError(MigrateError):
    pass


@record
class LaunchSpec:
    create: NsFlag = NsFlag(0)
    join: tuple[tuple[str, NsFlag], ...] = ()       # (namespace path, type)
    idmap: object | None = None                      # idmap.IdMapPlan
    dumpable_for_idmap: bool = False
    timens_offsets: str | None = None
    cgroups: object | None = None                    # CgroupManager
    child: Callable[[SyncSocket], NoReturn]          # runs as the init; never returns
    on_hooks: Callable[[int], None] | None = None    # parent side, before pivot_root
    on_seccomp: Callable[[int, int], None] | None = None  # (pid, listener fd) to the agent
    # parent side, when the init's pid is known: fds to pass it (index -> fd)
    mount_sources: Callable[[int], dict[int, int]] | None = None
    write_file: Callable[[str, str], None] | None = None
    timeout: float = 60.0
    # The caller's fds the init must not keep (the claim's lock: an init that
    # held it while waiting on exec.fifo would block `start` forever).
    close_in_child: tuple[int, ...] = ()


@record(frozen=False)
class Launched:
    pid: int
    console_fd: int | None = None
    notify: object | None = None          # notify.NotifyProxy when proxying NOTIFY_SOCKET
    log_lines: list[str] = field(default_factory=list)


def _child_main(spec: LaunchSpec, sock: SyncSocket, log_w: int) -> NoReturn:
    try:
        # A foreground runtime routes signals through a wakeup pipe; the
        # child must not write into it.
        signal.set_wakeup_fd(-1)
        for fd in spec.close_in_child:
            os.close(fd)
        # Before this process becomes visible in the container: nothing of
        # the runtime's environment for /proc/PID/environ (exe_guard.py).
        from migrate.runtime.exe_guard import scrub_environ

        scrub_environ()
        sock.expect("go")
        join = []
        for path, flag in spec.join:
            try:
                join.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
            except OSError as err:
                raise LaunchError(f"open namespace {path}: {err.strerror}") from None
        nsexec.bootstrap(sync_fd=sock.fileno(), log_fd=log_w, create=spec.create,
                         join=join, dumpable_for_idmap=spec.dumpable_for_idmap,
                         timens_offsets=spec.timens_offsets)
        for fd, _ in join:
            os.close(fd)
        os.close(log_w)
        spec.child(sock)
    except BaseException as err:  # noqa: BLE001 - report anything, then die
        text = str(err) if isinstance(err, (MigrateError, OSError, SyncError)) else repr(err)
        try:
            sock.send({"type": "error", "msg": text})
        except Exception:   # noqa: BLE001
            # After "ready" the parent is gone (execve failed after start):
            # the container's stderr (Podman's container log) is all that is left.
            with suppress(OSError):
                os.write(2, f"migrate: {text}\n".encode())
    os._exit(1)


def _debug(message: str) -> None:
    """A debug line for --debug (migrate/_log.py)."""
    _log.debug(message)


def _reap(pid: int) -> None:
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)


def launch(spec: LaunchSpec) -> Launched:
    """Start the init; return once it reported "ready".

    Raises LaunchError (with the init's own message), KernelError; on failure
    every process it started is killed and reaped.
    """
    parent, child = socketpair()
    log_r, log_w = os.pipe2(os.O_CLOEXEC)
    pid1 = os.fork()
    if pid1 == 0:
        parent.close()
        os.close(log_r)
        _child_main(spec, child, log_w)
    child.close()
    os.close(log_w)
    result = Launched(pid=0)
    try:
        _drive(spec, parent, pid1, result)
    except BaseException as err:
        for pid in {pid1, result.pid} - {0}:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _reap(pid1)
        if result.console_fd is not None:
            os.close(result.console_fd)
        lines = _drain(log_r)
        if isinstance(err, SyncError):
            detail = next((l for l in reversed(lines) if '"error"' in l), "")
            raise LaunchError(f"container init failed: {err}"
                              + (f" ({detail})" if detail and str(err) not in detail else "")) from None
        raise
    finally:
        parent.close()
    result.log_lines = _drain(log_r)
    return result


def _drive(spec: LaunchSpec, sock: SyncSocket, pid1: int, result: Launched) -> None:
    if spec.cgroups is not None:
        # Before any namespace exists, so the cgroup namespace is rooted at
        # the container's cgroup and every descendant starts inside it.
        spec.cgroups.add(pid1)
    _debug("nsexec container setup")
    sock.send({"type": "go"})
    early = []
    while True:
        msg, fds = early.pop(0) if early and result.pid else sock.recv(spec.timeout)
        kind = msg.get("type")
        if kind in ("hooks", "console", "ready") and not result.pid:
            # With a new PID namespace the intermediate process reports the
            # init's pid after fork(), while the init already runs: an init
            # scheduled first can speak first. Seen on a loaded machine:
            # "ready" before "pid" left `exec` waiting on pid 0 forever.
            early.append((msg, fds))
            continue
        if kind == "error":
            raise SyncError(msg.get("msg", "unknown error"))
        if kind == "idmap":
            from migrate.runtime.idmap import write_idmaps

            write_idmaps(pid1, spec.idmap, spec.write_file)
            sock.send({"type": "idmap_ok"})
        elif kind == "pid":
            result.pid = int(msg["pid"])
            _debug("child process in init()")
            if result.pid != pid1:
                _reap(pid1)   # the intermediate process exits right after
            if spec.mount_sources is not None:
                opened = spec.mount_sources(result.pid)
                try:
                    sock.send({"type": "mount_sources", "index": list(opened)},
                              tuple(opened.values()))
                finally:
                    for fd in opened.values():
                        os.close(fd)
        elif kind == "hooks":
            if spec.on_hooks is not None:
                spec.on_hooks(result.pid)
            sock.send({"type": "hooks_ok"})
        elif kind == "seccomp":
            if not fds:
                raise SyncError("seccomp message without a file descriptor")
            try:
                if spec.on_seccomp is None:
                    raise LaunchError("seccomp: the filter gave a listener fd but no "
                                      "listenerPath is set")
                spec.on_seccomp(result.pid, fds[0])
            finally:
                # Our copy must go: the agent's is the only one that may
                # stay, or the container blocks when the agent dies
                # instead of getting ENOSYS.
                for fd in fds:
                    os.close(fd)
            sock.send({"type": "seccomp_done"})
        elif kind == "console":
            if not fds:
                raise SyncError("console message without a file descriptor")
            result.console_fd = fds[0]
        elif kind == "ready":
            if result.pid <= 0:
                # nsexec.c orders "pid" first; waiting on pid 0 would mean
                # signalling our own process group.
                raise SyncError("the container init was ready before its pid was known")
            # runc's wording for the two inits (standard_init / setns_init).
            _debug("setns_init: about to exec" if spec.join and not spec.create
                   else "init: closing the pipe to signal completion")
            return
        else:
            raise SyncError(f'unexpected message "{kind}" from the container init')


def _drain(fd: int) -> list[str]:
    os.set_blocking(fd, False)
    chunks = []
    with suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace").splitlines()
