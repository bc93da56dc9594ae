"""Dump and restore through migrate.criu_rpc against the ``criu`` command line.

The same process (tests/integration/helpers/counter.py, PID 1 of its own
PID namespace) is dumped and restored again and again, alternating the two
tools and their order every round, so machine noise hits both alike. Two
sizes: the bare counter (a small Python process) and one holding touched
memory (256 MiB by default), for which the table also gives the rate at
which the dump wrote page images. Images go to a temporary directory (page
cache, no fsync). Needs root and criu.

    bench.py criu_rpc [--rounds N] [--mem-mib M] [--dir PATH]
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "helpers"))

LOG_LEVEL = 4  # the client's default; the CLI gets the same -v4


def _images_bytes(path: str) -> tuple[int, int]:
    pages = total = 0
    for name in os.listdir(path):
        size = os.path.getsize(os.path.join(path, name))
        if name.endswith(".img") or name.startswith("stats-"):
            total += size
        if name.startswith("pages-"):
            pages += size
    return pages, total


class _Tool:
    name = ""

    def dump(self, pid: int, images: str) -> None: ...

    def restore(self, images: str) -> int: ...


class _Rpc(_Tool):
    name = "criu_rpc"

    def __init__(self) -> None:
        from migrate.criu_rpc import Client, SwrkOptions

        self.client = Client(SwrkOptions(timeout=300))

    def dump(self, pid: int, images: str) -> None:
        from migrate.criu_rpc import CriuOptions

        self.client.dump(CriuOptions(images_dir=images, pid=pid, log_file="dump.log"))

    def restore(self, images: str) -> int:
        from migrate.criu_rpc import CriuOptions

        return self.client.restore(CriuOptions(images_dir=images, rst_sibling=True,
                                               log_file="restore.log")).pid


class _Cli(_Tool):
    name = "criu CLI"

    def __init__(self, criu: str) -> None:
        self.criu = criu

    def _run(self, argv: list[str]) -> None:
        out = subprocess.run([self.criu, *argv], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"criu {argv[0]} failed: {out.stderr.strip()}")

    def dump(self, pid: int, images: str) -> None:
        self._run(["dump", "-t", str(pid), "-D", images, "-o", "dump.log", f"-v{LOG_LEVEL}"])

    def restore(self, images: str) -> int:
        # --restore-sibling makes the restored tree our child, as rst_sibling does over RPC.
        pidfile = os.path.join(images, "restore.pid")
        self._run(["restore", "-D", images, "-o", "restore.log", f"-v{LOG_LEVEL}", "-d",
                   "--restore-sibling", "--pidfile", pidfile])
        with open(pidfile) as f:
            return int(f.read())


def _first_touch_rate(mib: int = 256) -> float:
    """GB/s at which fresh anonymous pages fault in (DESIGN.md asks to report it)."""
    size = mib << 20
    with mmap.mmap(-1, size) as m:
        view = memoryview(m)
        block = b"\1" * (1 << 20)
        t0 = time.perf_counter()
        for off in range(0, size, 1 << 20):
            view[off:off + len(block)] = block
        elapsed = time.perf_counter() - t0
        view.release()
    return size / elapsed / 1e9


def _measure(label: str, counter, tools: list[_Tool], rounds: int, work: str,
             samples: dict) -> None:
    for r in range(rounds):
        order = tools if r % 2 == 0 else tools[::-1]
        for tool in order:
            images = tempfile.mkdtemp(prefix="img-", dir=work)
            before = counter.value()
            t0 = time.perf_counter()
            tool.dump(counter.pid, images)
            t1 = time.perf_counter()
            pid = tool.restore(images)
            t2 = time.perf_counter()
            counter.adopt(pid, child=True)
            counter.wait_for(before + 1, timeout=30)  # it really runs on
            pages, total = _images_bytes(images)
            s = samples.setdefault((label, tool.name), {"dump": [], "restore": [], "pages": [],
                                                        "total": []})
            s["dump"].append(t1 - t0)
            s["restore"].append(t2 - t1)
            s["pages"].append(pages)
            s["total"].append(total)
            shutil.rmtree(images)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.py criu_rpc", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--mem-mib", type=int, default=256)
    parser.add_argument("--dir", default=None, help="where images go (default: a temp dir)")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, shutil.get_terminal_size((100, 24)).columns))
    if os.geteuid() != 0:
        console.print("criu_rpc: needs root")
        return 1
    criu = shutil.which("criu")
    if criu is None:
        console.print("criu_rpc: criu is not installed")
        return 1
    from counter import Counter

    tools: list[_Tool] = [_Rpc(), _Cli(criu)]
    samples: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-criu-rpc-", dir=args.dir) as work:
        for label, mib in (("small", 0), (f"{args.mem_mib} MiB", args.mem_mib)):
            counter = Counter(os.path.join(work, f"count-{mib}"), mem_mib=mib, interval=0.01,
                              timeout=120)
            try:
                _measure(label, counter, tools, 1, work, {})  # warm-up, discarded
                _measure(label, counter, tools, args.rounds, work, samples)
            finally:
                counter.stop()
        fs = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", work], capture_output=True,
                            text=True, timeout=30).stdout.strip() or "?"

    med = statistics.median
    table = Table(title=f"criu dump/restore: client vs CLI (median of {args.rounds}, "
                        f"interleaved; images on {fs}, page cache)")
    for col in ("process", "tool", "dump s", "restore s", "dump ×CLI", "restore ×CLI",
                "pages MiB", "dump MB/s"):
        table.add_column(col, justify="left" if col in ("process", "tool") else "right")
    for (label, name), s in samples.items():
        cli = samples[(label, tools[1].name)]
        pages = med(s["pages"])
        table.add_row(label, name, f"{med(s['dump']):.3f}", f"{med(s['restore']):.3f}",
                      f"{med(s['dump']) / med(cli['dump']):.2f}",
                      f"{med(s['restore']) / med(cli['restore']):.2f}",
                      f"{pages / 2**20:.1f}", f"{pages / med(s['dump']) / 1e6:.0f}")
    console.print(table)
    console.print(f"×CLI = tool / criu CLI (below 1: faster); dump MB/s = page images written "
                  f"per second of dump. First-touch fault-in here: {_first_touch_rate():.2f} GB/s.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
