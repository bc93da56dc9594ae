"""Live migration between hosts (``migrate migrate`` / ``migrate receive``).

    protocol.py   frames, kinds, handshake (versions, token, CRIU policy)
    transport.py  Connection: messages, streams, files, trees
    endpoints.py  connect() and Listener: TLS and the handshake
    tree.py       directory trees as a stream; the escape-proof writer
    messages.py   every control message's body (PREPARE ... RESTORED), typed
    hostfacts.py  CRIU version, features and cpuinfo of a host
    agent.py      the destination agent
    source.py     connect and negotiate, checks, rollback
    report.py     the migration report (JSON and a rich table)
    progress.py   progress callbacks (silent, or rich bars from the CLI)
    strategy.py   Strategy (the enum), which one, and when pre-copy stops
    pipeline.py   the source's frame: migrate_container(ctx, MigrateOptions)
    strategies/   one module per strategy, each a Pipeline
    destination.py the agent's restore and page servers

Scripted use::

    from migrate.migration import MigrateOptions, migrate_container
    report = migrate_container(ctx, MigrateOptions(container_id="web", host="10.0.0.2",
                                                   port=7777, token=b"secret"))

Names are imported on first use: importing this package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PROTOCOL_VERSION",
    "Kind",
    "CriuPolicy",
    "PeerInfo",
    "Connection",
    "IncomingStream",
    "Listener",
    "connect",
    "Timeouts",
    "TlsConfig",
    "TreeSnapshot",
    "TreeStats",
    "PrepareRequest",
    "SharedMarker",
    "Ready",
    "Control",
    "RestoreRequest",
    "LazySource",
    "Restored",
    "HostFacts",
    "CriuHostFacts",
    "Agent",
    "AgentEvent",
    "Incoming",
    "Outcome",
    "ConnectOptions",
    "SourceSession",
    "connect_and_negotiate",
    "rollback",
    "shared_marker",
    "MigrationReport",
    "Iteration",
    "Timeline",
    "Progress",
    "SilentProgress",
    "RichProgress",
    "MigrateOptions",
    "migrate_container",
    "PreCopyPolicy",
    "Strategy",
    "HostFeatures",
    "choose",
]

_WHERE = {
    "PROTOCOL_VERSION": "protocol", "Kind": "protocol", "CriuPolicy": "protocol",
    "PeerInfo": "protocol",
    "Connection": "transport", "IncomingStream": "transport", "Listener": "endpoints",
    "connect": "endpoints", "Timeouts": "_sockets", "TlsConfig": "_sockets",
    "TreeSnapshot": "tree", "TreeStats": "tree",
    "PrepareRequest": "messages", "SharedMarker": "messages", "Restored": "messages",
    "Ready": "messages", "Control": "messages", "RestoreRequest": "messages",
    "LazySource": "messages",
    "HostFacts": "hostfacts", "CriuHostFacts": "hostfacts",
    "Agent": "agent", "AgentEvent": "agent", "Incoming": "agent", "Outcome": "agent",
    "ConnectOptions": "source", "SourceSession": "source",
    "connect_and_negotiate": "source", "rollback": "source", "shared_marker": "source",
    "MigrationReport": "report", "Iteration": "report", "Timeline": "report",
    "Progress": "progress", "SilentProgress": "progress", "RichProgress": "progress",
    "MigrateOptions": "pipeline", "migrate_container": "pipeline",
    "PreCopyPolicy": "strategy", "Strategy": "strategy", "HostFeatures": "strategy",
    "choose": "strategy",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'migrate.migration' has no attribute {name!r}")
    return getattr(importlib.import_module(f"migrate.migration.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
