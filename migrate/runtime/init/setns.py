"""The init of a process joining an existing container (exec).

The C bootstrap already joined every namespace (setns into the mount
namespace also moved us to the container's root); what is left is the
process itself: terminal, limits, user, capabilities, execve.
"""

from __future__ import annotations

import os
from migrate._record import record

from migrate.runtime import process as proc
from migrate.runtime.sync import SyncSocket
from migrate.runtime.syscalls import Syscalls


TYPE_CHECKING = False   # typing costs ~2 ms to import; only checkers need it
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["SetnsInit", "run_setns_init"]


@record
class SetnsInit:
    process: object            # oci.Process
    preserve_fds: int
    setgroups_allowed: bool
    seccomp: object | None = None    # runtime.seccomp.SeccompPlan: the container's


def run_setns_init(init: SetnsInit, sys: Syscalls, sock: SyncSocket) -> NoReturn:
    process = init.process
    seccomp = proc.prepare_seccomp(sys, init.seccomp)
    if process.terminal:
        from migrate.runtime.console import open_container_pty

        master = open_container_pty(process.console_size)
        sock.send({"type": "console"}, (master,))
        os.close(master)
    hand_over = sock.hand_over_listener
    path, env = proc.become_process(sys, process, setgroups_allowed=init.setgroups_allowed,
                                    seccomp=seccomp, hand_over=hand_over)
    proc.prepare_exec(sys, 3 + init.preserve_fds)
    if seccomp is not None and process.no_new_privileges:
        proc.load_seccomp(sys, seccomp, hand_over)   # see runtime/process.py
    sock.send({"type": "ready"})
    sock.close()
    proc.exec_process(sys, path, process.args, env)
    os._exit(127)
