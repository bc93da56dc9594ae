"""``lo`` up in a new network namespace, as runc does for every container
(a server on 127.0.0.1 must answer; a Podman pod's containers talk over it)."""

from __future__ import annotations

__all__ = ["bring_lo_up"]

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def bring_lo_up() -> None:
    """Set IFF_UP on ``lo`` of the calling thread's network namespace.

    Two ioctls on a socket rather than netlink: pyroute2 costs ~120 ms to
    import. Raises OSError.
    """
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
