"""Small network chores inside a container's network namespace."""

from __future__ import annotations

import os

__all__ = ["set_lo_up"]

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def set_lo_up(netns_path: str) -> None:
    """Bring ``lo`` up in the namespace at ``netns_path``.

    setns(2) into a network namespace applies to the calling thread only,
    so a forked child does it and exits; we never change our own namespace.
    Two ioctls on a socket rather than pyroute2: importing pyroute2 costs
    ~120 ms, which every restore would pay. Best effort: a failure here must
    not undo a successful restore.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import fcntl
            import socket
            import struct

            from migrate.runtime.syscalls import LinuxSyscalls

            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            LinuxSyscalls().setns(fd, 0x40000000)   # CLONE_NEWNET
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                req = struct.pack("16sH14x", b"lo", 0)
                flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
                fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
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
