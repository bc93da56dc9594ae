"""Small network chores inside a container's network namespace."""

from __future__ import annotations

import os

__all__ = ["set_lo_up"]

def set_lo_up(netns_path: str) -> None:
    """Bring ``lo`` up in the namespace at ``netns_path``.

    setns(2) into a network namespace applies to the calling thread only,
    so a forked child does it and exits; we never change our own namespace.
    Best effort: a failure here must not undo a successful restore.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from migrate.runtime.loopback import bring_lo_up
            from migrate.runtime.syscalls import LinuxSyscalls

            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            LinuxSyscalls().setns(fd, 0x40000000)   # CLONE_NEWNET
            bring_lo_up()
            code = 0
        finally:
            os._exit(code)
    os.waitpid(pid, 0)


# What CRIU's iptables network lock adds inside the container's network
# namespace (criu/net.c), removed the way CRIU's own unlock does.
_IPTABLES_UNLOCK = ("*filter\n:CRIU - [0:0]\n-D INPUT -j CRIU\n-D OUTPUT -j CRIU\n"
                    "-F CRIU\n-X CRIU\nCOMMIT\n")


def unlock_network(pid: int) -> None:
    """Undo CRIU's network lock in the network namespace of ``pid`` after
    CRIU was stopped before it could unlock itself. Best effort, silent
    when there is nothing to undo (the lock is only taken for a tree with a
    network namespace of its own)."""
    import subprocess

    ns = f"/proc/{pid}/ns/net"
    if not os.path.exists(ns) or os.readlink(ns) == os.readlink("/proc/self/ns/net"):
        return
    for argv, data in ((["iptables-restore", "--noflush"], _IPTABLES_UNLOCK),
                       (["ip6tables-restore", "--noflush"], _IPTABLES_UNLOCK),
                       (["nft", "delete", "table", "inet", "CRIU"], None)):
        try:
            subprocess.run(["nsenter", f"--net={ns}", *argv], input=data, text=True,
                           capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
