#!/usr/bin/env python3
"""Benchmarks, each comparing migrate side by side with runc or the criu CLI
in one run. Usage: bench.py [NAME [ARGS...]]; without NAME, all of them.

Each module in scripts/benchmarks/ has ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

ORDER = ["run_latency", "exec_latency", "criu_rpc", "checkpoint", "migration", "precopy",
         "content_scan"]


def main(argv: list[str]) -> int:
    available = [n for n in ORDER if os.path.exists(os.path.join(HERE, "benchmarks", f"{n}.py"))]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nbenchmarks: " + ", ".join(available))
        return 0
    names = [argv[0]] if argv else available
    rc = 0
    for name in names:
        if name not in available:
            print(f"bench: unknown benchmark {name!r}; have: {', '.join(available)}", file=sys.stderr)
            return 2
        module = importlib.import_module(f"benchmarks.{name}")
        if any(a in ("-h", "--help") for a in argv[1:]):
            print((module.__doc__ or name).strip())
            continue
        rc |= module.main(argv[1:] if argv else [])
    return rc


def _stop_cleanly(signum, _frame) -> None:
    # SIGTERM/SIGHUP (a `timeout`, a closed terminal) unwind like Ctrl-C, so
    # every benchmark's finally deletes the containers and hosts it made:
    # the default action would leave them running, skewing what runs next.
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_cleanly)
    sys.exit(main(sys.argv[1:]))
