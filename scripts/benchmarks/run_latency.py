"""`run` latency of a `true` container: migrate against runc, same bundle,
interleaved in one run (so machine noise hits both alike)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from benchmarks._common import make_bundle, migrate_bin, print_latency_table, time_command


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 30
    runc = shutil.which("runc")
    if runc is None:
        print("run_latency: runc is not installed; nothing to compare with")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-run-") as work:
        bundle = make_bundle(work, "bundle", ["true"])
        tools = {
            "migrate": [migrate_bin(), "--root", os.path.join(work, "m-root"), "run", "--bundle", bundle],
            "runc": [runc, "--root", os.path.join(work, "r-root"), "run", "--bundle", bundle],
        }
        samples: dict[str, list[float]] = {k: [] for k in tools}
        for i in range(rounds + 2):          # two warm-up rounds, discarded
            for name, argv_ in tools.items():
                dt = time_command([*argv_, f"b{name[0]}{i}"])
                if i >= 2:
                    samples[name].append(dt)
    print_latency_table(f"`run` of a `true` container ({rounds} interleaved rounds)", samples)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
