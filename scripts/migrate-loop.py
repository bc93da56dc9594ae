#!/usr/bin/env python3
"""Migrate a container back and forth between two hosts N times; print a summary.

Each host is a network namespace (``--host-a``/``--host-b``: names under
/run/netns) with its own ``--root``; an agent runs on each. Example (what
scripts/demo.sh sets up):

    scripts/migrate-loop.py --container demo --host-a mig-a --addr-a 10.251.0.1 \\
        --host-b mig-b --addr-b 10.251.0.2 --root-a /run/migrate-a --root-b /run/migrate-b -n 6
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

TOKEN = "migrate-loop"


def nsenter(host: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{host}", *argv]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--container", required=True)
    p.add_argument("--host-a", required=True)
    p.add_argument("--addr-a", required=True)
    p.add_argument("--root-a", required=True)
    p.add_argument("--host-b", required=True)
    p.add_argument("--addr-b", required=True)
    p.add_argument("--root-b", required=True)
    p.add_argument("-n", type=int, default=4, help="number of migrations")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--port", type=int, default=7790)
    p.add_argument("--migrate", default=shutil.which("migrate") or "/opt/migrate/venv/bin/migrate")
    a = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="migrate-loop-")
    hosts = [(a.host_a, a.addr_a, a.root_a), (a.host_b, a.addr_b, a.root_b)]
    agents = []
    try:
        for host, addr, root in hosts:
            log = open(os.path.join(work, f"agent-{host}.log"), "w")
            agents.append(subprocess.Popen(
                nsenter(host, [a.migrate, "--root", root, "receive", "--listen", f"{addr}:{a.port}",
                               "--token", TOKEN, "--work-dir", os.path.join(work, host)]),
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True))
        time.sleep(1.0)
        rows = []
        for i in range(a.n):
            (src, _, src_root), (_, dst_addr, _) = hosts[i % 2], hosts[(i + 1) % 2]
            report = os.path.join(work, f"report-{i}.json")
            t0 = time.monotonic()
            res = subprocess.run(nsenter(src, [a.migrate, "--root", src_root, "migrate", a.container,
                                               "--to", f"{dst_addr}:{a.port}", "--token", TOKEN,
                                               "--strategy", a.strategy, "--quiet",
                                               "--report", report]),
                                 capture_output=True, text=True, timeout=600,
                                 stdin=subprocess.DEVNULL)
            if res.returncode != 0:
                print(f"migration {i + 1} failed: {res.stderr.strip()}", file=sys.stderr)
                return 1
            data = json.load(open(report))
            rows.append((i + 1, f"{src} -> {hosts[(i + 1) % 2][0]}", data["strategy"],
                         data["downtime_s"], data["total_s"], data["bytes_on_wire"],
                         time.monotonic() - t0))
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{a.n} migrations of {a.container}")
        for col in ("#", "route", "strategy", "downtime ms", "total ms", "control bytes", "wall ms"):
            t.add_column(col, justify="right" if col not in ("route", "strategy") else "left")
        for n, route, strat, down, total, wire, wall in rows:
            t.add_row(str(n), route, strat, f"{down * 1000:.0f}", f"{total * 1000:.0f}",
                      str(wire), f"{wall * 1000:.0f}")
        downs = [r[3] for r in rows]
        t.add_row("", "median", "", f"{statistics.median(downs) * 1000:.0f}",
                  f"{statistics.median([r[4] for r in rows]) * 1000:.0f}", "", "")
        Console().print(t)
        return 0
    finally:
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGTERM)
                try:
                    agent.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(agent.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
