"""Who may open a migration's memory stream.

CRIU's page-server protocol has no authentication: a page server, or the
source's lazy-pages relay, takes the first peer that connects. On a shared
network that peer could read the container's memory, or write pages into
the image the destination restores. So the side that listens is migrate,
not CRIU: it hands CRIU a socket only once the peer has sent, first thing,
the migration's stream secret, which the two sides agreed over the
authenticated control connection (``PageServerStart``, ``LazySource``).
CRIU takes such a socket as ``ps.fd`` (a PAGE_SERVER request) or
``--ps-socket`` (``criu lazy-pages``). Any other peer is closed.

The secret is sent as is: it only proves the peer was told it by the
control connection, and is worth nothing once its one stream is open. The
stream itself is not encrypted (nor is it with CRIU's own page server).
"""

from __future__ import annotations

import hmac
import secrets
import socket
import time

__all__ = ["new_stream_secret", "present_secret", "accept_with_secret", "SECRET_BYTES",
           "listen_on", "loopback_for"]

SECRET_BYTES = 32


def listen_on(address: str) -> socket.socket:
    """A listener on ``address`` (IPv4 or IPv6), on a port the kernel picks."""
    return socket.create_server((address, 0), family=socket.AF_INET6 if ":" in address
                                else socket.AF_INET)


def loopback_for(address: str) -> str:
    """The loopback address of ``address``'s family."""
    return "::1" if ":" in address else "127.0.0.1"


def new_stream_secret() -> str:
    """A fresh secret for one stream, as hex (for a control message)."""
    return secrets.token_hex(SECRET_BYTES)


def present_secret(sock: socket.socket, secret: str) -> None:
    """Open the stream on ``sock`` with ``secret``. Raises OSError, ValueError."""
    sock.sendall(bytes.fromhex(secret))


def accept_with_secret(listener: socket.socket, secret: str, *, timeout: float,
                       per_peer: float = 5.0, refused=None) -> socket.socket:
    """Accept on ``listener`` until a peer sends ``secret`` first; that
    socket is returned (blocking, nothing read past the secret). Other
    peers are closed (``refused(address)`` is told of each). Raises
    TimeoutError after ``timeout`` seconds, OSError if the listener fails."""
    want = bytes.fromhex(secret)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no peer opened the memory stream with this migration's secret")
        listener.settimeout(left)
        try:
            sock, address = listener.accept()
        except socket.timeout:
            continue
        try:
            sock.settimeout(min(per_peer, max(left, 0.1)))
            got = bytearray()
            while len(got) < len(want):
                chunk = sock.recv(len(want) - len(got))
                if not chunk:
                    break
                got += chunk
        except OSError:
            got = bytearray()
        if len(got) == len(want) and hmac.compare_digest(bytes(got), want):
            sock.settimeout(None)
            return sock
        sock.close()
        if refused is not None:
            refused(address)
