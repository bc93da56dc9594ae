"""Socket options, timeouts and TLS contexts of migration connections.

A migration must notice a dead peer or a cut link within seconds, whatever
it is doing at the time:

* waiting for a message (nothing in flight): TCP keepalive probes start
  after ``keepalive_idle`` seconds of silence, every ``keepalive_interval``
  seconds, and give up after ``keepalive_count`` unanswered ones;
* sending (data in flight, so keepalive is off by definition):
  TCP_USER_TIMEOUT drops the connection when sent data stays unacknowledged
  that long; it also caps the keepalive verdict (tcp(7));
* a live but stuck peer: every blocking call also has a socket timeout
  (``io``), longer where the peer legitimately works a while.

Either way the blocked call fails with ETIMEDOUT or a timeout, which the
connection turns into a ``MigrationError`` naming the phase.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from migrate.errors import UsageError

__all__ = ["Timeouts", "TlsConfig", "configure_socket", "server_tls_context",
           "client_tls_context"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds. ``io`` bounds one blocking send or receive; ``wait`` bounds
    waiting for the peer to finish a long step (a restore, a dump)."""

    connect: float = 10.0
    io: float = 60.0
    wait: float = 600.0
    keepalive_idle: int = 2
    keepalive_interval: int = 1
    keepalive_count: int = 4
    user_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect", "io", "wait", "user_timeout"):
            if not getattr(self, name) > 0:
                raise UsageError(f"timeout {name}: {getattr(self, name)!r} is not positive")
        for name in ("keepalive_idle", "keepalive_interval", "keepalive_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"timeout {name}: {value!r} is not a positive integer")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    """TLS for the control connection.

    Agent: ``cert`` and ``key`` are its certificate; with ``ca`` it also
    demands a client certificate signed by that CA (mutual TLS). Source:
    ``ca`` verifies the agent (default: the system's CAs), against
    ``server_name`` or else the host it connects to; ``cert`` and ``key``
    are its client certificate, for an agent that wants one.
    """

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise UsageError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")


def configure_socket(sock: socket.socket, timeouts: Timeouts) -> None:
    """Keepalive, user timeout and no Nagle delay on a TCP socket (other
    families, e.g. the socketpairs of unit tests, are left alone)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, timeouts.keepalive_idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, timeouts.keepalive_interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, timeouts.keepalive_count)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeouts.user_timeout * 1000))
    # Control messages are small and each waits for an answer.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _load(action, what: str, path: str | None) -> None:
    try:
        action()
    except (OSError, ssl.SSLError) as err:
        raise UsageError(f"cannot load TLS {what} {path}: {getattr(err, 'strerror', None) or err}") from err


def server_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """Raises ``UsageError`` for missing or unreadable files."""
    if tls.cert is None:
        raise UsageError("the agent's TLS needs a certificate and key (--tls-cert, --tls-key)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(lambda: ctx.load_cert_chain(tls.cert, tls.key), "certificate", tls.cert)
    if tls.ca is not None:
        _load(lambda: ctx.load_verify_locations(tls.ca), "CA", tls.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """Raises ``UsageError`` for missing or unreadable files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # verifies the server and its name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca is not None:
        _load(lambda: ctx.load_verify_locations(tls.ca), "CA", tls.ca)
    else:
        ctx.load_default_certs()
    if tls.cert is not None:
        _load(lambda: ctx.load_cert_chain(tls.cert, tls.key), "certificate", tls.cert)
    return ctx
