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
    import sys

    # _socket and int.to_bytes, not socket and struct: this runs in every
    # new container's init, where socket.py's enums cost ~3 ms (migrate/_light.py).
    import _socket

    def ifreq(flags: int) -> bytes:       # struct ifreq: name[16], short flags, padding
        return b"lo".ljust(16, b"\0") + flags.to_bytes(2, sys.byteorder) + bytes(14)

    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        flags = int.from_bytes(fcntl.ioctl(s, _SIOCGIFFLAGS, ifreq(0))[16:18], sys.byteorder)
        if not flags & _IFF_UP:
            fcntl.ioctl(s, _SIOCSIFFLAGS, ifreq(flags | _IFF_UP))
    finally:
        s.close()
