"""What the benchmarks share: the migrate binary and a busybox bundle."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))


def time_command(argv: list[str], *, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, cwd: str | None = None,
                 limit: float = 60) -> float:
    """Wall seconds of one run of ``argv`` (quiet unless told, must succeed:
    CalledProcessError otherwise).

    ``wait()`` without a timeout: it blocks in waitpid(2). With a timeout,
    Python polls with a sleep that doubles up to 50 ms, which rounded every
    sample up to 31.5, 63.5 or 113.5 ms (what runc and migrate both showed
    before; checkpoints and restores of 0.365, 0.415, 0.465 s); a watchdog
    kills the command after ``limit`` seconds instead.
    """
    import threading
    import time

    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd)
    watchdog = threading.Timer(limit, proc.kill)
    watchdog.start()
    try:
        code = proc.wait()
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter() - t0
    if code:
        raise subprocess.CalledProcessError(code, argv)
    return elapsed


def print_latency_table(title: str, samples: dict[str, list[float]]) -> None:
    """Median, min and p90 in ms per runtime, and each median's ratio to runc's."""
    from rich.console import Console
    from rich.table import Table

    med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    table = Table(title=title)
    for col in ("runtime", "median ms", "min ms", "p90 ms", "ratio vs runc"):
        table.add_column(col, justify="right" if col != "runtime" else "left")
    for name, vals in samples.items():
        ms = sorted(v * 1000 for v in vals)
        table.add_row(name, f"{med[name]:.1f}", f"{ms[0]:.1f}", f"{ms[int(len(ms) * 0.9) - 1]:.1f}",
                      f"{med[name] / med['runc']:.2f}")
    Console().print(table)


def migrate_bin() -> str:
    return os.environ.get("MIGRATE_BIN") or shutil.which("migrate") or "/opt/migrate/venv/bin/migrate"


def make_bundle(work: str, name: str, args: list[str], *, writable: bool = False) -> str:
    """A bundle under ``work`` running ``args`` (busybox + ctrhelper rootfs)."""
    from runtime_helpers import build_rootfs

    path = os.path.join(work, name)
    os.makedirs(path)
    build_rootfs(os.path.join(path, "rootfs"))
    subprocess.run([migrate_bin(), "spec", "--bundle", path], check=True, timeout=60)
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args
    if writable:
        cfg["root"]["readonly"] = False
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    return path
