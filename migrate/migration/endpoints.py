"""Where connections come from: ``connect()`` (the source) and
``Listener`` (the agent). Both return a ``Connection`` only once TLS (if
configured) and the handshake (``protocol.py``) have passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
from collections.abc import Callable
from typing import Any

from migrate.errors import MigrationError
from migrate.migration._sockets import (
    Timeouts,
    TlsConfig,
    client_tls_context,
    configure_socket,
    server_tls_context,
)
from migrate.migration.progress import Progress
from migrate.migration.protocol import (
    CriuPolicy,
    HandshakeConfig,
    Kind,
    PeerInfo,
    Reject,
    client_handshake,
    encode_frame,
    server_handshake,
)
from migrate.migration.transport import Connection, available_compression

__all__ = ["connect", "Listener"]


def _format_peer(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr) or "?"


def _handshake_config(token: str | bytes, *, host: str | None, criu_version: str | None,
                      features: dict[str, Any] | None, compression: tuple[str, ...],
                      criu_policy: CriuPolicy) -> HandshakeConfig:
    from migrate import __version__

    return HandshakeConfig(token=token.encode() if isinstance(token, str) else token,
                           host=host or socket.gethostname(), migrate_version=__version__,
                           criu_version=criu_version, features=dict(features or {}),
                           compression=compression, criu_policy=criu_policy)


def connect(host: str, port: int, token: str | bytes, *, tls: TlsConfig | None = None,
            criu_version: str | None = None, features: dict[str, Any] | None = None,
            compress: bool = True, criu_policy: CriuPolicy = CriuPolicy.NOT_OLDER,
            timeouts: Timeouts | None = None, host_name: str | None = None,
            progress: Progress | None = None) -> Connection:
    """Connect to an agent and run the handshake (the source's side).

    ``compress`` offers zstd (used if the agent has it too). Raises
    ``MigrationError`` (phase "connect") if the agent cannot be reached,
    ``ProtocolError`` if either side refuses the other.
    """
    timeouts = timeouts or Timeouts()
    config = _handshake_config(token, host=host_name, criu_version=criu_version, features=features,
                               compression=available_compression() if compress else (),
                               criu_policy=criu_policy)
    where = _format_peer((host, port))
    try:
        sock = socket.create_connection((host, port), timeout=timeouts.connect)
    except OSError as err:
        hint = " (is `migrate receive` running there?)" if isinstance(err, ConnectionRefusedError) else ""
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise MigrationError("connect", f"cannot connect to {where}: {reason}{hint}") from err
    try:
        configure_socket(sock, timeouts)
        if tls is not None:
            ctx = client_tls_context(tls)
            sock.settimeout(timeouts.connect)
            try:
                sock = ctx.wrap_socket(sock, server_hostname=tls.server_name or host)
            except (OSError, ssl.SSLError, ssl.CertificateError) as err:
                raise MigrationError("connect", f"TLS with {where} failed: "
                                     f"{getattr(err, 'reason', None) or err}") from err
    except BaseException:
        sock.close()
        raise
    conn = Connection(sock, peer=where, peer_role="destination", timeouts=timeouts,
                      progress=progress)
    try:
        with conn.in_phase("handshake"):
            conn.peer_info, conn.compression = client_handshake(conn, config)
    except BaseException:
        conn.close()
        raise
    return conn


class Listener:
    """The agent's listening socket; ``accept()`` returns an authenticated
    ``Connection``. ``port`` 0 lets the kernel pick (see ``address``).

    Raises ``MigrationError`` (phase "listen") if the address cannot be bound.
    """

    def __init__(self, addr: str, port: int, token: str | bytes, *, tls: TlsConfig | None = None,
                 criu_version: str | None = None, features: dict[str, Any] | None = None,
                 compression: tuple[str, ...] | None = None,
                 criu_policy: CriuPolicy = CriuPolicy.NOT_OLDER,
                 timeouts: Timeouts | None = None, host_name: str | None = None,
                 backlog: int = 8) -> None:
        self.timeouts = timeouts or Timeouts()
        self.config = _handshake_config(
            token, host=host_name, criu_version=criu_version, features=features,
            compression=available_compression() if compression is None else compression,
            criu_policy=criu_policy)
        self._tls = server_tls_context(tls) if tls is not None else None
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr, port))
            sock.listen(backlog)
        except OSError as err:
            sock.close()
            raise MigrationError("listen", f"cannot listen on {_format_peer((addr, port))}: "
                                 f"{err.strerror or err}") from err
        self._sock = sock

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    def fileno(self) -> int:
        return self._sock.fileno()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def accept_socket(self, timeout: float | None = None) -> tuple[socket.socket, str] | None:
        """The next TCP connection (``None`` when ``timeout`` passes first),
        configured but not yet TLS-wrapped or authenticated."""
        self._sock.settimeout(timeout)
        try:
            sock, addr = self._sock.accept()
        except socket.timeout:
            return None
        configure_socket(sock, self.timeouts)
        return sock, _format_peer(addr)

    def handshake(self, sock: socket.socket, peer: str, *, progress: Progress | None = None,
                  timeout: float | None = None,
                  admit: Callable[[PeerInfo], str | None] | None = None) -> Connection:
        """TLS (if configured) and the server's handshake on an accepted
        socket, each step within ``timeout`` (default: the connect timeout);
        ``admit`` may refuse an authenticated peer (see ``server_handshake``).
        Closes it and raises ``MigrationError``/``ProtocolError`` on
        failure."""
        timeout = timeout or self.timeouts.connect
        try:
            if self._tls is not None:
                sock.settimeout(timeout)
                try:
                    sock = self._tls.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError) as err:
                    raise MigrationError("handshake", f"TLS with {peer} failed: "
                                         f"{getattr(err, 'reason', None) or err}",
                                         source_state="unknown") from err
        except BaseException:
            sock.close()
            raise
        conn = Connection(sock, peer=peer, peer_role="source",
                          timeouts=dataclasses.replace(self.timeouts, io=timeout),
                          progress=progress)
        conn.source_state = "unknown"
        try:
            with conn.in_phase("handshake"):
                conn.peer_info, conn.compression = server_handshake(conn, self.config, admit=admit)
        except BaseException:
            conn.close(drain=0.5)
            raise
        conn.timeouts = self.timeouts
        return conn

    def refuse(self, sock: socket.socket, reason: str) -> None:
        """Tell a connection we will not serve it now (busy), and close it."""
        with contextlib.suppress(OSError, ssl.SSLError):
            sock.settimeout(2.0)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
            sock.sendall(encode_frame(Kind.REJECT, Reject(reason=reason).to_header()))
        with contextlib.suppress(OSError):
            sock.close()

    def accept(self, timeout: float | None = None) -> Connection | None:
        """Accept and authenticate one connection (``None`` on timeout)."""
        got = self.accept_socket(timeout)
        if got is None:
            return None
        return self.handshake(*got)
