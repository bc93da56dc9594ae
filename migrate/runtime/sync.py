"""The parent/child protocol of the launcher, over one SOCK_SEQPACKET pair.

One JSON object per packet; a file descriptor may ride along (SCM_RIGHTS).
The C bootstrap speaks the first part (it cannot link a JSON library, so it
writes the same objects by hand)::

    parent (create / exec / run)            child (becomes the init)
    fork() ---------------------------------> waits
    put the child in the container cgroups
    {"type": "go"} -------------------------> nsexec: setns, unshare(user)
                   <------------------------- {"type": "idmap"}     new user ns only
    write uid_map / gid_map
    {"type": "idmap_ok"} -------------------> unshare the rest, fork if pid/time ns
                   <------------------------- {"type": "pid", "pid": N}
    open bind sources in the new mount ns
    {"type": "mount_sources"} + fds ---------> new user ns, as root only
                                              Python init: mounts ...
                   <------------------------- {"type": "hooks"}     before pivot_root
    run prestart/createRuntime/createContainer hooks
    {"type": "hooks_ok"} -------------------> pivot_root, console ...
                   <------------------------- {"type": "console"} + pty master fd
                                              load seccomp (no_new_privs: late)
                   <------------------------- {"type": "seccomp"} + listener fd
    send it with the state to the
    seccomp agent (listenerPath)                  only with SCMP_ACT_NOTIFY rules
    {"type": "seccomp_done"} ---------------> close the listener fd
                   <------------------------- {"type": "ready"}
                                              create: block on exec.fifo until start
                                              exec/run: execve at once

At any point the child may send {"type": "error", "msg": "..."} and exit; the
parent sees end-of-file if the child dies silently.
"""

from __future__ import annotations

import os
import sys

# _socket, not socket: socket.py's enum conversions cost ~3 ms per command
# (migrate/_light.py); the C objects have everything used here.
import _socket

from migrate._light import dumps, loads

__all__ = ["SyncSocket", "SyncError", "socketpair"]

_MAX = 65536
_INT = 4      # sizeof(int): SCM_RIGHTS carries C ints


class SyncError(Exception):
    """The other side failed, died or broke the protocol."""


class SyncSocket:
    __slots__ = ("sock",)

    def __init__(self, sock: _socket.socket):
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: dict, fds: tuple[int, ...] = ()) -> None:
        data = dumps(msg).encode()
        try:
            if fds:
                rights = b"".join(fd.to_bytes(_INT, sys.byteorder) for fd in fds)
                self.sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
            else:
                # write(2), not sendto(2): after a seccomp filter is loaded
                # ("ready"), write is what profiles allow (runc's init
                # writes to its pipe too). One write is one packet.
                os.write(self.sock.fileno(), data)
        except OSError as err:
            raise SyncError(f"sending {msg.get('type')}: {err.strerror}") from err

    def recv(self, timeout: float | None = None) -> tuple[dict, list[int]]:
        self.sock.settimeout(timeout)
        try:
            data, fds = _recv_fds(self.sock)
        except TimeoutError:
            raise SyncError("timed out waiting for the container init") from None
        except OSError as err:
            raise SyncError(f"receiving: {err.strerror}") from err
        finally:
            self.sock.settimeout(None)
        if not data:
            for fd in fds:
                os.close(fd)
            raise SyncError("the container init exited before it was ready")
        try:
            msg = loads(data)
        except ValueError:
            raise SyncError(f"malformed message from the container init: {data[:80]!r}") from None
        return msg, fds

    def expect(self, type_: str, timeout: float | None = None) -> tuple[dict, list[int]]:
        msg, fds = self.recv(timeout)
        if msg.get("type") == "error":
            raise SyncError(msg.get("msg", "unknown error"))
        if msg.get("type") != type_:
            raise SyncError(f'expected "{type_}" from the container init, got "{msg.get("type")}"')
        return msg, fds

    def hand_over_listener(self, fd: int) -> None:
        """Child side: give the seccomp listener fd to the runtime, which
        sends it to the seccomp agent, and wait until it did."""
        self.send({"type": "seccomp"}, (fd,))
        self.expect("seccomp_done")

    def close(self) -> None:
        self.sock.close()


def socketpair() -> tuple[SyncSocket, SyncSocket]:
    """(parent end, child end); both close-on-exec so nothing leaks into the container."""
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    return SyncSocket(a), SyncSocket(b)


def _recv_fds(sock) -> tuple[bytes, list[int]]:
    """One packet and up to 4 fds passed with it (socket.recv_fds; C ints
    decoded by hand: the ``array`` module imports ``collections``)."""
    data, ancdata, _flags, _addr = sock.recvmsg(_MAX, _socket.CMSG_LEN(4 * _INT))
    fds = []
    for level, kind, cdata in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += (int.from_bytes(cdata[i:i + _INT], sys.byteorder, signed=True)
                    for i in range(0, len(cdata) - len(cdata) % _INT, _INT))
    return data, fds
