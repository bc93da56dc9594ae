"""events: statistics and OOM notifications, one JSON object per line (runc events)."""

from __future__ import annotations

import json
import re
import sys

import click

__all__ = ["events_cmd", "parse_duration"]

_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
         "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """A Go duration ("5s", "100ms", "1m30s") in seconds. Raises UsageError."""
    from migrate.errors import UsageError

    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise UsageError(f'invalid value "{text}" for flag -interval: invalid duration')
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not s:
        raise UsageError(f'invalid value "{text}" for flag -interval: invalid duration')
    return sign * total


def _emit(event: dict) -> None:
    # Go's json.Encoder: compact, one object per line; flushed at once so a
    # reader of a pipe or file sees each event as it happens.
    sys.stdout.write(json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


@click.command("events", help="Print container events: OOM notifications and statistics.")
@click.option("--interval", default="5s", help="how often statistics are printed (default 5s)")
@click.option("--stats", is_flag=True, help="print the statistics once and exit")
@click.argument("container_id")
@click.pass_obj
def events_cmd(ctx, container_id: str, interval: str, stats: bool) -> int:
    from migrate.errors import UsageError
    from migrate.runtime.lifecycle.events import stats_event, watch_events

    seconds = parse_duration(interval)
    if seconds <= 0:
        raise UsageError("duration interval must be greater than 0")
    if stats:
        _emit(stats_event(ctx, container_id))
        return 0
    try:
        for event in watch_events(ctx, container_id, seconds):
            _emit(event)
    except BrokenPipeError:
        return 0
    return 0
