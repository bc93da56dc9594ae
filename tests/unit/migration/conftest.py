"""Connections over socketpairs (no network)."""

from __future__ import annotations

import socket

import pytest

from migrate.migration.transport import Connection
from migration_helpers import FAST


@pytest.fixture
def pair():
    """(source-side, destination-side) connections over a socketpair."""
    a, b = socket.socketpair()
    src = Connection(a, peer="dest", peer_role="destination", timeouts=FAST)
    dst = Connection(b, peer="src", peer_role="source", timeouts=FAST)
    yield src, dst
    src.close()
    dst.close()
