"""Stop-and-copy, pre-copy and hybrid on one container, moved back and forth
between two netns hosts: memory rounds, pages per round, downtime and
total time, and each strategy's downtime as a ratio of stop-and-copy's.

Pre-copy needs soft-dirty tracking, which this machine's kernel lacks:
``bench.py precopy --guest [MIB]`` runs it in scripts/vm/guest.sh's guest.
Under emulation absolute times mean little (CPU ~20x slower); the ratios,
measured interleaved on the same container, are the result.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks._common import make_bundle, migrate_bin

TOKEN = "bench-precopy"
PORT = 7796
DIRTY_PAGES_PER_S = 20
STRATEGIES = ("stop-and-copy", "pre-copy", "hybrid")
REPEATS = 2


def _on(host, argv):
    return ["nsenter", f"--net={host.path}", *argv]


def _in_guest(argv: list[str]) -> int:
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    script = os.path.join(repo, "scripts", "bench.py")
    # The guest's PATH starts with $MIGRATE_PREFIX/venv/bin: the same install.
    env = dict(os.environ, MIGRATE_PREFIX=os.environ.get(
        "MIGRATE_PREFIX", os.path.dirname(os.path.dirname(os.path.dirname(sys.executable)))))
    return subprocess.call([os.path.join(repo, "scripts", "vm", "guest.sh"), "run",
                            f"{sys.executable} {script} precopy {' '.join(argv)}"], env=env)


def _wait_file(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    if "--guest" in argv:
        return _in_guest([a for a in argv if a != "--guest"])
    import needs

    why = needs.criu_feature("mem_dirty_track")
    if why is not None:
        print(f"precopy: skipped here ({why}); run `bench.py precopy --guest`")
        return 0
    mib = int(argv[0]) if argv else 32
    from netns_hosts import NetnsHosts

    m = migrate_bin()
    rows: dict[str, list[dict]] = {s: [] for s in STRATEGIES}
    with tempfile.TemporaryDirectory(prefix="bench-precopy-", dir="/var/tmp") as work, \
            NetnsHosts() as hosts:
        bundle = make_bundle(work, "bundle", ["ctrhelper", "memhold", str(mib), "/tmp/mem",
                                              str(DIRTY_PAGES_PER_S)], writable=True)
        roots = {"a": os.path.join(work, "root-a"), "b": os.path.join(work, "root-b")}
        agents = {}
        r, w = os.pipe()
        try:
            for side in ("a", "b"):
                host = getattr(hosts, side)
                log = open(os.path.join(work, f"agent-{side}.log"), "w")
                agents[side] = subprocess.Popen(
                    _on(host, [m, "--root", roots[side], "receive", "--listen",
                               f"{host.address}:{PORT}", "--token", TOKEN,
                               "--work-dir", os.path.join(work, f"in-{side}")]),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            subprocess.run([m, "--root", roots["a"], "run", "-d", "--bundle", bundle, "bench"],
                           check=True, stdin=r, stdout=w, stderr=w, timeout=600)
            _wait_file(os.path.join(bundle, "rootfs", "tmp", "mem"), 600)
            time.sleep(5)
            here, there = "a", "b"
            # Interleaved: each strategy moves the container once per pass,
            # so all see the same machine load and the same restored container.
            for i in range(REPEATS):
                for strategy in STRATEGIES:
                    report = os.path.join(work, f"report-{strategy}-{i}.json")
                    dst = getattr(hosts, there)
                    res = subprocess.run(
                        _on(getattr(hosts, here),
                            [m, "--root", roots[here], "migrate", "bench", "--to",
                             f"{dst.address}:{PORT}", "--token", TOKEN, "--strategy", strategy,
                             "--quiet", "--report", report]),
                        capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
                    if res.returncode != 0:
                        print(f"precopy: {strategy} failed: {res.stderr.strip()}")
                        return 1
                    with open(report) as f:
                        data = json.load(f)
                    with open(os.path.join(bundle, "rootfs", "tmp", "mem")) as f:
                        data["intact"] = f.read().split()[2] == "1"
                    rows[strategy].append(data)
                    here, there = there, here
        finally:
            subprocess.run([m, "--root", roots[here], "delete", "-f", "bench"], timeout=120,
                           capture_output=True)
            for agent in agents.values():
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait(timeout=30)
            os.close(r)
            os.close(w)
    base = statistics.median(d["downtime_s"] for d in rows["stop-and-copy"])
    print(f"\n{mib} MiB container, writer dirtying {DIRTY_PAGES_PER_S} pages/s, "
          f"{REPEATS} interleaved moves per strategy; kernel {os.uname().release}")
    print(f"{'strategy':<14} {'rounds':>6}  {'pages per round (final last)':<34} "
          f"{'downtime s':>10} {'total s':>8} {'downtime/s&c':>12}  intact  stop rule")
    for strategy, runs in rows.items():
        for d in runs:
            its = d["iterations"]
            pages = ", ".join(str(i["pages_written"]) for i in its)
            rule = next((i.get("stop_reason") for i in its if i.get("stop_reason")), "")
            print(f"{strategy:<14} {len(its):>6}  {pages:<34} {d['downtime_s']:>10.2f} "
                  f"{d['total_s']:>8.2f} {d['downtime_s'] / base:>12.2f}  "
                  f"{'yes' if d['intact'] else 'NO':<6}  {rule}")
    for strategy, runs in rows.items():
        med = statistics.median(d["downtime_s"] for d in runs)
        print(f"median downtime {strategy}: {med:.2f} s = {med / base:.2f}x stop-and-copy")
    return 0 if all(d["intact"] for runs in rows.values() for d in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
