"""The migration report (JSON and table) and the progress implementations."""

from __future__ import annotations

import io
import json

import pytest

from migrate.errors import MigrationError
from migrate.migration.progress import RichProgress, SilentProgress
from migrate.migration.report import Iteration, MigrationReport, Timeline
from migrate.migration.transport import PhaseBytes


def sample() -> MigrationReport:
    r = MigrationReport(container_id="web", source="a", destination="10.250.0.2:7000",
                        strategy="pre-copy", reason="memory tracking on both hosts",
                        compression="zstd", downtime_s=0.4321, total_s=3.5, succeeded=True)
    r.iterations = [Iteration(index=1, pages_written=65536, bytes=256 << 20, seconds=1.2),
                    Iteration(index=2, pages_written=512, bytes=2 << 20, seconds=0.1, final=True)]
    r.add_phases({"rootfs": PhaseBytes(bytes_on_wire=1000, bytes_raw=4000, seconds=0.5),
                  "images": PhaseBytes(bytes_on_wire=3000, bytes_raw=6000, seconds=1.0),
                  "idle": PhaseBytes()})
    r.add_phases({"images": PhaseBytes(bytes_on_wire=1000, bytes_raw=2000, seconds=0.5)})
    return r


def test_json_has_everything_and_round_trips(tmp_path):
    r = sample()
    data = r.to_json()
    assert data["version"] == 1
    assert data["strategy"] == "pre-copy" and data["reason"] == "memory tracking on both hosts"
    assert data["downtime_s"] == 0.4321 and data["total_s"] == 3.5
    assert [p["name"] for p in data["phases"]] == ["rootfs", "images"]   # empty phases left out
    assert data["phases"][1] == {"name": "images", "bytes_on_wire": 4000, "bytes_raw": 8000,
                                 "seconds": 1.5}
    assert (data["bytes_on_wire"], data["bytes_raw"], data["compression_ratio"]) == (5000, 12000, 2.4)
    assert data["iterations"][0] == {"index": 1, "pages_written": 65536, "bytes": 256 << 20,
                                     "seconds": 1.2, "final": False, "stop_reason": "", "steps": {}}
    path = tmp_path / "report.json"
    r.write_json(str(path))
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(data))
    assert MigrationReport.from_json(loaded).to_json() == loaded
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]   # no temp file left


def test_unreadable_reports():
    with pytest.raises(MigrationError, match="not a version 1"):
        MigrationReport.from_json({"version": 99})
    with pytest.raises(MigrationError, match="cannot write"):
        sample().write_json("/nonexistent/dir/report.json")


def test_ratio_without_bytes():
    assert MigrationReport(container_id="x").compression_ratio is None


def test_table_renders():
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(sample().table())
    failed = MigrationReport(container_id="db", error="link down")
    console.print(failed.table())
    text = console.file.getvalue()
    for words in ("migration of web", "pre-copy (memory tracking on both hosts)", "432 ms",
                  "3.50 s", "65536", "256.0 MiB", "ratio 2.40", "images", "failed: link down"):
        assert words in text, words


def test_timeline():
    t = Timeline()
    assert t.downtime is None
    t.mark_frozen()
    t.mark_resumed()
    t.end()
    assert 0 <= t.downtime <= t.total


def test_progress_implementations():
    from rich.console import Console

    for progress in (SilentProgress(),
                     RichProgress(Console(file=io.StringIO(), force_terminal=False))):
        progress.advance(10)   # before any phase: a default bar
        progress.phase("rootfs", total=100)
        progress.advance(100)
        progress.iteration(1, 4096)
        progress.advance(5000)
        progress.phase("images")
        progress.advance(1)
        progress.done()
        progress.done()


def test_frozen_steps_tile_the_downtime(monkeypatch):
    clock = iter([0.0, 1.0, 1.5, 1.6, 2.1, 2.2, 3.0])
    monkeypatch.setattr("migrate.migration.report.time.monotonic", lambda: next(clock))
    t = Timeline()                       # 0.0
    t.mark_frozen()                      # 1.0
    t.mark("dumped")                     # 1.5
    t.mark("images sent")                # 1.6
    t.mark("restored")                   # 2.1
    t.mark_resumed()                     # 2.2
    steps = t.frozen_steps()
    assert [s["step"] for s in steps] == ["dump", "images", "restore", "resume"]
    assert abs(sum(s["seconds"] for s in steps) - t.downtime) < 1e-9
    assert Timeline().frozen_steps() == []


def test_phases_keep_time_without_bytes_and_count_relayed_bytes():
    from migrate.migration.transport import PhaseBytes

    r = MigrationReport(container_id="c")
    r.add_phases({"dump": PhaseBytes(seconds=2.0), "images": PhaseBytes(10, 20, 0.5),
                  "idle": PhaseBytes()})
    r.add_bytes({"dump": 1 << 20, "resume": 0})
    assert [(p.name, p.bytes_on_wire, p.seconds) for p in r.phases] == [
        ("dump", 1 << 20, 2.0), ("images", 10, 0.5)]
    assert r.bytes_on_wire == (1 << 20) + 10
