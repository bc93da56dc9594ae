"""Small netlink chores inside a container's network namespace (pyroute2)."""

from __future__ import annotations

import os

__all__ = ["set_lo_up"]


def set_lo_up(netns_path: str) -> None:
    """Bring ``lo`` up in the namespace at ``netns_path``.

    setns(2) of a network namespace applies to the calling thread only, so
    a forked child does it and exits; we never change our own namespace.
    Best effort: a failure here must not undo a successful restore.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from pyroute2 import IPRoute

            from migrate.runtime.syscalls import LinuxSyscalls

            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            LinuxSyscalls().setns(fd, 0x40000000)   # CLONE_NEWNET
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname="lo")
                if idx:
                    ipr.link("set", index=idx[0], state="up")
            code = 0
        finally:
            os._exit(code)
    os.waitpid(pid, 0)
