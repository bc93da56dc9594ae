"""systemd's NOTIFY_SOCKET, proxied so a container's READY=1 reaches the host.

When the runtime itself runs under ``NOTIFY_SOCKET`` (a Type=notify unit),
the container gets its own socket instead: ``<state dir>/notify/`` is bound
into the container at ``/run/notify`` and the process's NOTIFY_SOCKET points
there. Whoever starts the container (``start``, or ``run``) listens on it and
forwards what arrives to the host's socket, until READY=1.
"""

from __future__ import annotations

import contextlib
import os
import socket

__all__ = ["CONTAINER_DIR", "CONTAINER_SOCKET", "NotifyProxy", "prepare_notify_dir"]

CONTAINER_DIR = "/run/notify"
CONTAINER_SOCKET = f"{CONTAINER_DIR}/notify.sock"


def prepare_notify_dir(state_dir: str) -> str:
    path = os.path.join(state_dir, "notify")
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path


class NotifyProxy:
    """Listens in the state directory, forwards to the host's socket."""

    def __init__(self, state_dir: str, host_socket: str):
        self.path = os.path.join(state_dir, "notify", "notify.sock")
        self.host = host_socket
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)   # the container's user may not be root

    def fileno(self) -> int:
        return self.sock.fileno()

    def forward_one(self, timeout: float | None = None) -> bool:
        """Forward one datagram; True once READY=1 has gone through."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return False
        host = self.host
        # systemd allows abstract sockets ("@name").
        address = "\0" + host[1:] if host.startswith("@") else host
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as out:
            with contextlib.suppress(OSError):
                out.sendto(data, address)
        return b"READY=1" in data.split(b"\n")

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
