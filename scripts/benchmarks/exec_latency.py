"""`exec` latency of `true` in a running container: migrate against runc,
same bundle, one long-running container each, interleaved in one run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from benchmarks._common import make_bundle, migrate_bin, print_latency_table, time_command


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 30
    runc = shutil.which("runc")
    if runc is None:
        print("exec_latency: runc is not installed; nothing to compare with")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-exec-") as work:
        bundle = make_bundle(work, "bundle", ["sleep", "3600"])
        tools = {"migrate": [migrate_bin(), "--root", os.path.join(work, "m-root")],
                 "runc": [runc, "--root", os.path.join(work, "r-root")]}
        started = []
        samples: dict[str, list[float]] = {k: [] for k in tools}
        try:
            for name, base in tools.items():
                subprocess.run([*base, "run", "-d", "--bundle", bundle, f"bx-{name}"], check=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60)
                started.append((base, f"bx-{name}"))
            for i in range(rounds + 2):          # two warm-up rounds, discarded
                for name, base in tools.items():
                    dt = time_command([*base, "exec", f"bx-{name}", "true"])
                    if i >= 2:
                        samples[name].append(dt)
        finally:
            for base, cid in started:
                subprocess.run([*base, "delete", "-f", cid], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    print_latency_table(f"`exec` of `true` in a running container ({rounds} interleaved rounds)", samples)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
