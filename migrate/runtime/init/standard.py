"""The init of a new container, run in the child after the C bootstrap.

It owns the container's set-up from mounts to execve; the parent drives it
through the protocol in ``runtime/sync.py``.
"""

from __future__ import annotations

import os
from migrate._record import record

from migrate.errors import KernelError
from migrate.runtime import process as proc
from migrate.runtime.loopback import bring_lo_up
from migrate.runtime.rootfs import RootfsPlan, finalize_rootfs, prepare_rootfs, reopen_dev_null
from migrate.runtime.sync import SyncSocket
from migrate.runtime.syscalls import MS, Syscalls


TYPE_CHECKING = False   # typing costs ~2 ms to import; only checkers need it
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["StandardInit", "run_standard_init"]


@record
class StandardInit:
    container_id: str
    spec: object                      # oci.Spec
    bundle: str
    rootfs: RootfsPlan | None         # None: no new mount namespace (runs in the host's)
    fifo_fd: int | None               # O_PATH fd of exec.fifo (create); None for run
    preserve_fds: int
    new_keyring: bool
    has_hooks: bool
    setgroups_allowed: bool
    new_uts: bool
    seccomp: object | None = None     # runtime.seccomp.SeccompPlan
    ptrace_fence: bool = False        # process.fence_ptrace before the capabilities drop
    bind_sources: tuple = ()          # (index, path): the runtime sends their fds


def _hooks_roundtrip(sock: SyncSocket) -> None:
    sock.send({"type": "hooks"})
    sock.expect("hooks_ok")


def run_standard_init(init: StandardInit, sys: Syscalls, sock: SyncSocket) -> NoReturn:
    spec = init.spec
    process = spec.process
    proc.preload(process, bool(spec.hooks.start_container))
    # Built now, while an error still reaches the parent; loaded at the end.
    seccomp = proc.prepare_seccomp(sys, init.seccomp)
    if init.new_keyring:
        try:
            sys.join_session_keyring(f"_ses.{init.container_id}")
        except OSError as err:
            # Kernels or user namespaces without keyring support: runc ignores this too.
            if err.errno not in (1, 38, 13):   # EPERM, ENOSYS, EACCES
                raise
    net = spec.linux.namespace("network")
    if net is not None and not net.path:
        # Before pivot_root: the ioctl's modules are not importable after it.
        try:
            bring_lo_up()
        except OSError as err:
            raise KernelError("ioctl", "lo", err.errno or 1, "bringing lo up") from None
    os.chdir(init.bundle)
    if init.bind_sources:
        msg, fds = sock.expect("mount_sources")
        if init.rootfs is not None:
            init.rootfs.source_fds.update(zip(msg.get("index", ()), fds))
    before_pivot = (lambda: _hooks_roundtrip(sock)) if init.has_hooks else None
    if init.rootfs is not None:
        prepare_rootfs(sys, init.rootfs, before_pivot)
        reopen_dev_null(init.rootfs)
    elif before_pivot is not None:
        before_pivot()
    console_fd = None
    if process.terminal:
        from migrate.runtime.console import open_container_pty

        console_fd = open_container_pty(
            process.console_size,
            mount=lambda src, dst: sys.mount(src, dst, None, MS.BIND, None))
        sock.send({"type": "console"}, (console_fd,))
        os.close(console_fd)
    # Sysctls before the read-only paths (as runc): /proc/sys is one of them.
    for key, value in spec.linux.sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            sys.write_file(path, value)
        except OSError as err:
            raise KernelError("write", path, err.errno or 1, f"sysctl {key}={value}") from None
    if init.rootfs is not None:
        finalize_rootfs(sys, init.rootfs)
    if init.new_uts:
        if spec.hostname:
            sys.sethostname(spec.hostname)
        if spec.domainname:
            sys.setdomainname(spec.domainname)
    if spec.linux.personality:
        domain = spec.linux.personality.get("domain", "LINUX")
        sys.personality(0x0008 if domain == "LINUX32" else 0)
    if init.ptrace_fence:
        proc.fence_ptrace(sys)
    hand_over = sock.hand_over_listener
    path, env = proc.become_process(sys, process, setgroups_allowed=init.setgroups_allowed,
                                    seccomp=seccomp, hand_over=hand_over, default_umask=0o022)
    proc.prepare_exec(sys, 3 + init.preserve_fds)
    if seccomp is not None and process.no_new_privileges:
        # Before "ready", so the listener fd can still reach the parent,
        # and before exec.fifo and the startContainer hooks, which run
        # filtered (runc does the same).
        proc.load_seccomp(sys, seccomp, hand_over)
    sock.send({"type": "ready"})
    sock.close()
    if init.fifo_fd is not None:
        # Block here until `start` opens the fifo for reading.
        try:
            fd = os.open(f"/proc/self/fd/{init.fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            raise KernelError("open", "exec.fifo", err.errno or 1,
                              "is /proc mounted in the container?") from None
        os.write(fd, b"0")
        os.close(fd)
        os.close(init.fifo_fd)
    # startContainer hooks belong to "start", which `run` does without a fifo.
    _start_container_hooks(spec)
    proc.exec_process(sys, path, process.args, env)
    os._exit(127)


def _start_container_hooks(spec) -> None:
    if spec.hooks.start_container:
        from migrate.runtime.hooks import run_hooks

        run_hooks(spec.hooks.start_container, state=None, name="startContainer")
