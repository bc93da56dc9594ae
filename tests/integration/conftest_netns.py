"""The ``netns_hosts`` fixture: two network-namespace hosts joined by a veth
(see netns_hosts.py), removed after the test even when it fails.
Imported by conftest.py."""

from __future__ import annotations

import pytest

from netns_hosts import NetnsHosts


@pytest.fixture
def netns_hosts():
    with NetnsHosts() as hosts:
        yield hosts
