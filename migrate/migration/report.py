"""The report of one migration: as JSON (``--report FILE.json``) and as a
rich table, from the same data.

Downtime is measured on the source's monotonic clock, from the moment the
container was frozen to the moment the destination's "resumed" message
arrived: it includes the last message's one-way delay, and needs no
clock agreement between the hosts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from migrate.errors import MigrationError

__all__ = ["Iteration", "PhaseReport", "MigrationReport", "Timeline", "REPORT_VERSION"]

REPORT_VERSION = 1


@dataclass(slots=True, kw_only=True)
class Iteration:
    """One memory round: a pre-dump, or the final dump (``final``)."""

    index: int
    pages_written: int = 0
    bytes: int = 0
    seconds: float = 0.0
    final: bool = False
    stop_reason: str = ""      # on the last pre-dump: the rule that ended the rounds
    steps: dict[str, float] = field(default_factory=dict)   # content rounds: seconds per step


@dataclass(slots=True, kw_only=True)
class PhaseReport:
    name: str
    bytes_on_wire: int = 0
    bytes_raw: int = 0
    seconds: float = 0.0

    def add(self, wire: int, raw: int, seconds: float) -> None:
        self.bytes_on_wire += wire
        self.bytes_raw += raw
        self.seconds += seconds


@dataclass(slots=True, kw_only=True)
class MigrationReport:
    container_id: str
    source: str = ""
    destination: str = ""
    strategy: str = ""
    reason: str = ""
    compression: str | None = None
    iterations: list[Iteration] = field(default_factory=list)
    phases: list[PhaseReport] = field(default_factory=list)
    downtime_s: float | None = None
    total_s: float | None = None
    # The frozen interval step by step: [{"step", "seconds"}], in order.
    frozen_steps: list[dict[str, Any]] = field(default_factory=list)
    succeeded: bool = False
    error: str | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def bytes_on_wire(self) -> int:
        return sum(p.bytes_on_wire for p in self.phases)

    @property
    def bytes_raw(self) -> int:
        return sum(p.bytes_raw for p in self.phases)

    @property
    def compression_ratio(self) -> float | None:
        """Raw bytes per byte on the wire (1.0: nothing saved)."""
        return self.bytes_raw / self.bytes_on_wire if self.bytes_on_wire else None

    def add_phases(self, counters: Mapping[str, Any]) -> None:
        """Add a connection's per-phase counters (``Connection.counters``):
        bytes and time, phases without either left out."""
        for name, c in counters.items():
            if c.bytes_on_wire or c.bytes_raw or c.seconds >= 0.0005:
                self._phase(name).add(c.bytes_on_wire, c.bytes_raw, c.seconds)

    def add_bytes(self, by_phase: Mapping[str, int]) -> None:
        """Add bytes that crossed outside the connection (CRIU's page-server
        stream, relayed uncompressed), by the phase they crossed in."""
        for name, n in by_phase.items():
            if n:
                self._phase(name).add(n, n, 0.0)

    def _phase(self, name: str) -> PhaseReport:
        for p in self.phases:
            if p.name == name:
                return p
        self.phases.append(PhaseReport(name=name))
        return self.phases[-1]

    # -- JSON -------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(version=REPORT_VERSION, bytes_on_wire=self.bytes_on_wire,
                    bytes_raw=self.bytes_raw, compression_ratio=_round(self.compression_ratio))
        for key in ("downtime_s", "total_s"):
            data[key] = _round(data[key])
        for p in data["phases"]:
            p["seconds"] = _round(p["seconds"])
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "MigrationReport":
        """Raises ``MigrationError`` for a report this version cannot read."""
        if not isinstance(data, Mapping) or data.get("version") != REPORT_VERSION:
            raise MigrationError("report", f"not a version {REPORT_VERSION} migration report")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["iterations"] = [Iteration(**i) for i in data.get("iterations", [])]
        known["phases"] = [PhaseReport(**p) for p in data.get("phases", [])]
        return cls(**known)

    def write_json(self, path: str) -> None:
        """Write atomically (temp file, fsync, rename). Raises ``MigrationError``."""
        directory = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(self.to_json(), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
        except OSError as err:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise MigrationError("report", f"cannot write {path}: {err.strerror}") from err

    # -- for people ---------------------------------------------------------------

    def table(self) -> Any:
        """A rich renderable (imports rich)."""
        from rich.console import Group
        from rich.table import Table

        summary = Table(title=f"migration of {self.container_id}", show_header=False)
        summary.add_column(style="bold")
        summary.add_column()
        summary.add_row("result", "succeeded" if self.succeeded else f"failed: {self.error}")
        summary.add_row("route", f"{self.source or '?'} -> {self.destination or '?'}")
        summary.add_row("strategy", f"{self.strategy} ({self.reason})" if self.reason else self.strategy)
        summary.add_row("downtime", _seconds(self.downtime_s) + (
            " (" + ", ".join(f"{s['step']} {_seconds(s['seconds'])}" for s in self.frozen_steps)
            + ")" if self.frozen_steps else ""))
        summary.add_row("total time", _seconds(self.total_s))
        ratio = self.compression_ratio
        summary.add_row("on the wire", f"{_size(self.bytes_on_wire)} ({self.compression or 'no compression'}"
                        + (f", ratio {ratio:.2f}" if ratio else "") + ")")
        parts: list[Any] = [summary]
        if self.iterations:
            its = Table(title="memory iterations")
            for col in ("#", "pages written", "bytes", "time"):
                its.add_column(col, justify="right")
            for it in self.iterations:
                its.add_row(f"{it.index}{' (final)' if it.final else ''}", str(it.pages_written),
                            _size(it.bytes), _seconds(it.seconds))
            parts.append(its)
        if self.phases:
            ph = Table(title="bytes by phase")
            for col in ("phase", "on the wire", "raw", "time"):
                ph.add_column(col, justify="left" if col == "phase" else "right")
            for p in self.phases:
                ph.add_row(p.name, _size(p.bytes_on_wire), _size(p.bytes_raw), _seconds(p.seconds))
            parts.append(ph)
        if self.frozen_steps:
            fz = Table(title="frozen: freeze -> resumed")
            for col in ("step", "ends when", "time"):
                fz.add_column(col, justify="right" if col == "time" else "left")
            for s in self.frozen_steps:
                fz.add_row(s["step"], s["until"], _seconds(s["seconds"]))
            parts.append(fz)
        return Group(*parts)


class Timeline:
    """Monotonic marks of one migration; ``downtime`` is frozen -> resumed."""

    # The steps of the frozen interval: (step, the mark that ends it).
    STEPS = (("dump", "dumped"), ("images", "images sent"), ("restore", "restored"),
             ("resume", "resumed"))

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.frozen: float | None = None
        self.resumed: float | None = None
        self.ended: float | None = None
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        """Note when ``name`` happened (the last time, if it happens again)."""
        self.marks[name] = time.monotonic()

    def mark_frozen(self) -> None:
        self.frozen = time.monotonic()
        self.marks["frozen"] = self.frozen

    def mark_resumed(self) -> None:
        self.resumed = time.monotonic()
        self.marks["resumed"] = self.resumed

    def frozen_steps(self) -> list[dict[str, Any]]:
        """freeze -> dump done -> images at the destination -> restore done
        -> resumed, as far as the migration got; the steps add up to the
        downtime."""
        if self.frozen is None:
            return []
        steps, last = [], self.frozen
        for step, until in self.STEPS:
            at = self.marks.get(until)
            if at is None or at < last:
                continue
            steps.append({"step": step, "until": until, "seconds": round(at - last, 6)})
            last = at
        return steps

    def end(self) -> None:
        self.ended = time.monotonic()

    @property
    def downtime(self) -> float | None:
        if self.frozen is None or self.resumed is None:
            return None
        return self.resumed - self.frozen

    @property
    def total(self) -> float:
        return (self.ended or time.monotonic()) - self.started


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
