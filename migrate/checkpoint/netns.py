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
