"""Signal names and numbers as runc's `kill` accepts them."""

import signal

import pytest

from migrate.errors import UsageError
from migrate.runtime.signals import parse_signal


@pytest.mark.parametrize("text,want", [
    ("9", signal.SIGKILL),
    ("15", signal.SIGTERM),
    ("KILL", signal.SIGKILL),
    ("SIGKILL", signal.SIGKILL),
    ("kill", signal.SIGKILL),
    ("sigterm", signal.SIGTERM),
    ("HUP", signal.SIGHUP),
    ("SIGUSR1", signal.SIGUSR1),
    (" TERM ", signal.SIGTERM),
    ("SIGRTMIN", signal.SIGRTMIN),
    ("SIGRTMIN+3", signal.SIGRTMIN + 3),
    ("RTMIN+1", signal.SIGRTMIN + 1),
    ("SIGRTMAX", signal.SIGRTMAX),
    ("SIGRTMAX-2", signal.SIGRTMAX - 2),
    (str(signal.SIGRTMAX), signal.SIGRTMAX),
    ("0", 0),          # kill(2)'s existence check; runc passes it through
])
def test_known_signals(text, want):
    assert parse_signal(text) == int(want)


@pytest.mark.parametrize("text", [
    "NOPE", "SIGNOPE", "", "-9", "65", "1000", "SIGRTMIN+100", "SIGRTMAX+1", "SIGRTMIN-1",
    "SIGRTMINx", "9x",
])
def test_unknown_signals(text):
    with pytest.raises(UsageError, match="unknown signal"):
        parse_signal(text)


def test_returns_plain_int():
    assert type(parse_signal("KILL")) is int
