"""Content pre-copy's scan speed: read + hash the memory of a process.

    bench.py content_scan [--reps N] [MIB ...]

A child touches MIB of private memory; interleaved, best of N: reading it
with /proc/PID/mem (``os.preadv``), with ``process_vm_readv`` (what the
scanner uses), the scanner reading and hashing every 4 KiB page
(xxh3-64), and a whole first round (records built, nothing sent). Single
thread: the figures are GB/s per core. The machine is shared: compare the
rows of one run, not runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

CHILD = """
import mmap, os, sys
m = mmap.mmap(-1, {size}, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, {size}, 4096): m[i:i + 8] = os.urandom(8)
print("ok", flush=True)
sys.stdin.read()
"""


def main(argv: list[str]) -> int:
    from migrate.migration.content.mirror import Mirror
    from migrate.migration.content.rounds import RoundStats, live_round
    from migrate.migration.content.scan import ProcessMemory, hash_pages

    reps, sizes, it = 5, [], iter(argv)
    for arg in it:
        if arg == "--reps":
            reps = int(next(it))
        else:
            sizes.append(int(arg))
    for mib in sizes or [256, 1024]:
        size = mib << 20
        child = subprocess.Popen([sys.executable, "-c", CHILD.format(size=size)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            child.stdout.readline()
            pid = child.pid
            ranges = ProcessMemory(pid).ranges()
            total = sum(e - s for s, e in ranges)

            def proc_mem():
                fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
                buf = memoryview(bytearray(1 << 20))
                try:
                    for s, e in ranges:
                        while s < e:
                            n = os.preadv(fd, [buf[:min(len(buf), e - s)]], s)
                            s += n or 4096
                finally:
                    os.close(fd)

            def pvr():
                for _ in ProcessMemory(pid).chunks():
                    pass

            def scan_hash():
                for _, view in ProcessMemory(pid).chunks():
                    hash_pages(view)

            def first_round():
                for _ in live_round({1: pid}, Mirror(), RoundStats()):
                    pass

            cases = {"read /proc/PID/mem": proc_mem, "read process_vm_readv": pvr,
                     "read + xxh3-64 per page": scan_hash, "first round (records)": first_round}
            best = {name: float("inf") for name in cases}
            for _ in range(reps):
                for name, fn in cases.items():
                    t = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - t)
            print(f"{mib} MiB touched ({total >> 20} MiB scanned), best of {reps}, one thread:")
            for name, s in best.items():
                print(f"  {name:28s} {total / s / 1e9:6.2f} GB/s  ({s * 1000:7.1f} ms)")
        finally:
            child.kill()
            child.wait()
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0
