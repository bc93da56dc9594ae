"""Live migration between two network-namespace hosts, migrate against
runc's three manual pipelines, in one run, on the same container and link.

    bench.py migration [--rate MBIT] [--reps N] [--before MIGRATE_BINARY]
                       [--only NAME,...] [--dirty same|new] [--hold] [MIB ...]
                                                        (default 64 256 1024, 3 reps)

Pipelines, each on the same bundle (memhold: MIB MiB touched, a writer
dirtying pages at a fixed rate) over the same veth:

* runc tar: ``runc checkpoint``, the images tarred over TCP, ``runc restore``;
* runc page server: ``criu page-server`` on the destination,
  ``runc checkpoint --page-server`` (memory straight into it), the other
  images tarred over, ``runc restore``;
* runc lazy: ``runc checkpoint --lazy-pages --page-server --status-fd`` on the
  source, the images tarred over once it is ready, ``criu lazy-pages`` on the
  destination, ``runc restore --lazy-pages``; the checkpoint command ends when
  the last page has been pulled;
* migrate stop-and-copy, post-copy and pre-copy (``migrate migrate``); on a
  kernel without soft-dirty pre-copy is content pre-copy (hashed rounds,
  deduplicated final dump: issue 14), its per-round MiB in the last column.

``--only`` keeps the pipelines whose name contains one of the words.
``--hold``: runc's restore may not reuse the memory its checkpoint just
freed. Both "hosts" share this machine's memory: ``runc checkpoint`` kills
the source before ``runc restore`` starts, and the restore's page faults
then get the source's pages back warm, which no second host could; migrate
keeps its source frozen (to resume it on failure) until the destination
has restored, so its restore faults in memory the VM may have returned to
the hypervisor (free page reporting: ~1-3 s per GiB here). With ``--hold``
a holder process takes the container's size in memory right after runc's
checkpoint and keeps it until the restore returns; the time it takes to
get it is not counted in runc's downtime.
``--dirty new``: the writer changes the values it writes (``same``, the
default, rewrites identical ones: dirty pages to soft-dirty, but nothing
changes for content pre-copy's hashes).

The tar receivers and page servers are started before the clock starts.
runc's downtime runs from ``runc checkpoint``'s start to ``runc restore``'s
return (so it includes the ~30-80 ms before CRIU freezes anything);
migrate's is its report's, freeze to resumed. Total is until the last page
is at the destination: for both, the wall time from the command's start
until it exits (runc checkpoint's, migrate migrate's, so migrate's Python
start-up counts too). Each repetition starts with the next pipeline. ``--rate`` shapes both ends of the veth with tc (tbf).
Rounds are interleaved (every pipeline once per repetition) and medians
reported: the machine is shared, so read ratios, not absolute times.

Bytes on the wire are the veth's counters (both directions).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks._common import make_bundle, migrate_bin

TOKEN = "bench-token"
PORT = 7790
TAR_PORT = 7795
PS_PORT = 7796
DIRTY_PAGES_PER_S = 2000
CRIU = shutil.which("criu") or "/usr/local/sbin/criu"


def _on(host, argv):
    return ["nsenter", f"--net={host.path}", *argv]


def _link_bytes(host) -> int:
    from pyroute2 import IPRoute

    with host.entered(), IPRoute() as ip:
        (link,) = ip.get_links(ifname=host.ifname)
        stats = link.get_attr("IFLA_STATS64")
        return stats["rx_bytes"] + stats["tx_bytes"]


def _shape(hosts, mbit: int) -> None:
    # tbf needs a bucket of at least one GSO super-packet (64 KiB) and about
    # a timer tick of traffic.
    burst = max(256 << 10, mbit * 1000 * 1000 // 8 // 100)
    for host in (hosts.a, hosts.b):
        subprocess.run(_on(host, ["tc", "qdisc", "replace", "dev", host.ifname, "root", "tbf",
                                  "rate", f"{mbit}mbit", "burst", str(burst), "latency", "100ms"]),
                       check=True, timeout=30)


def _start(tool: list[str], root: str, bundle: str, cid: str, keep: list) -> None:
    mem = os.path.join(bundle, "rootfs", "tmp", "mem")
    if os.path.exists(mem):
        os.unlink(mem)
    r, w = os.pipe()
    keep += [r, w]
    subprocess.run([*tool, "--root", root, "run", "-d", "--bundle", bundle, cid], check=True,
                   stdin=r, stdout=w, stderr=w, timeout=120)
    deadline = time.monotonic() + 300
    while not os.path.exists(mem) and time.monotonic() < deadline:
        time.sleep(0.05)


def _state_ok(bundle: str, timeout: float = 10) -> bool:
    """The memory holder, now at the destination, sums its whole buffer
    again and finds it as it was: no page lost or stale. It sums on every
    tenth line it writes (those whose counter ends in 1); the other lines
    repeat the expected sum, so the line there right after a migration
    proves nothing."""
    path = os.path.join(bundle, "rootfs", "tmp", "mem")

    def read() -> tuple[int, bool] | None:
        try:
            with open(path) as f:
                n, _sum, ok = f.read().split()
            return int(n), ok == "1"
        except (OSError, ValueError):
            return None

    first = read()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = read()
        if now and first and now[0] > first[0] and now[0] % 10 == 1:
            return now[1]
        time.sleep(0.05)
    return False


def _listening(pid: int, port: int, timeout: float = 30) -> None:
    """Wait until process ``pid`` (in its netns) listens on TCP ``port``."""
    want = f":{port:04X} "
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/net/tcp") as f:
            if any(want in line and line.split()[3] == "0A" for line in f):
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


def _tar_receiver(dst_host, dst: str) -> subprocess.Popen:
    """Receives one tar stream over TCP into ``dst``; started before the clock."""
    os.makedirs(dst, exist_ok=True)
    p = subprocess.Popen(_on(dst_host, [sys.executable, "-c",
        "import socket,subprocess,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        f"s.bind(('{dst_host.address}',{TAR_PORT})); s.listen(1); c,_=s.accept()\n"
        f"p=subprocess.Popen(['tar','-x','-C','{dst}'],stdin=subprocess.PIPE)\n"
        "while True:\n d=c.recv(1<<20)\n if not d: break\n p.stdin.write(d)\n"
        "p.stdin.close(); sys.exit(p.wait())\n"]))
    _listening(p.pid, TAR_PORT)
    return p


def _tar_send(src_host, dst_host, src: str, recv: subprocess.Popen) -> None:
    send = subprocess.run(_on(src_host, ["sh", "-c",
        f"tar -c -C {src} . | {sys.executable} -c \"import socket,sys; "
        f"s=socket.create_connection(('{dst_host.address}',{TAR_PORT})); "
        f"[s.sendall(b) for b in iter(lambda: sys.stdin.buffer.read(1<<20), b'')]\""]),
        timeout=900)
    assert send.returncode == 0 and recv.wait(timeout=900) == 0, "tar copy failed"


class Runc:
    def __init__(self, hosts, bundle: str, work: str, tag: str):
        self.hosts, self.bundle, self.work = hosts, bundle, work
        self.runc = shutil.which("runc")
        self.cid = f"bench-runc-{tag}"
        self.keep: list = []
        self.root_a, self.root_b = os.path.join(work, "runc-a"), os.path.join(work, "runc-b")
        self.img_a = os.path.join(work, f"runc-img-a-{tag}")
        self.img_b = os.path.join(work, f"runc-img-b-{tag}")
        os.makedirs(self.img_b, exist_ok=True)
        _start([self.runc], self.root_a, bundle, self.cid, self.keep)

    def checkpoint(self, *extra: str, **kw):
        return _on(self.hosts.a, [self.runc, "--root", self.root_a, "checkpoint", "--image-path",
                                  self.img_a, *extra, self.cid])

    def restore(self, *extra: str) -> None:
        r, w = os.pipe()
        self.keep += [r, w]
        subprocess.run(_on(self.hosts.b, [self.runc, "--root", self.root_b, "restore", "-d",
                                          "--image-path", self.img_b, *extra, "--bundle",
                                          self.bundle, self.cid]),
                       check=True, timeout=900, cwd=self.bundle, stdin=r, stdout=w, stderr=w)

    def finish(self) -> bool:
        ok = _state_ok(self.bundle)
        subprocess.run([self.runc, "--root", self.root_b, "delete", "-f", self.cid], timeout=60)
        subprocess.run([self.runc, "--root", self.root_a, "delete", "-f", self.cid], timeout=60,
                       stderr=subprocess.DEVNULL)
        for fd in self.keep:
            os.close(fd)
        shutil.rmtree(self.img_a, ignore_errors=True)
        shutil.rmtree(self.img_b, ignore_errors=True)
        return ok


# --hold: MiB a holder takes after runc's checkpoint (0: none).
HOLD = {"mib": 0}


class _Holder:
    """Takes HOLD MiB of memory (faulted in) until closed; ``seconds``:
    how long taking it took (left out of runc's downtime)."""

    def __init__(self) -> None:
        self.proc, self.seconds = None, 0.0
        if HOLD["mib"]:
            t0 = time.monotonic()
            self.proc = subprocess.Popen([sys.executable, "-c",
                "import mmap,signal,sys\n"
                f"m=mmap.mmap(-1,{HOLD['mib']}<<20,flags=mmap.MAP_PRIVATE|mmap.MAP_ANONYMOUS|"
                "mmap.MAP_POPULATE)\n"
                "sys.stdout.write('ready\\n'); sys.stdout.flush(); signal.pause()\n"],
                stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout.readline().strip() == "ready", "holder failed"
            self.seconds = time.monotonic() - t0

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()


def runc_tar(hosts, bundle, work, tag) -> dict:
    r = Runc(hosts, bundle, work, tag)
    recv = _tar_receiver(hosts.b, r.img_b)
    wire0 = _link_bytes(hosts.b)
    t0 = time.monotonic()
    subprocess.run(r.checkpoint(), check=True, timeout=900, cwd=bundle,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    holder = _Holder()
    try:
        _tar_send(hosts.a, hosts.b, r.img_a, recv)
        r.restore()
    finally:
        holder.close()
    downtime = time.monotonic() - t0 - holder.seconds
    wire = _link_bytes(hosts.b) - wire0
    return {"downtime": downtime, "total": downtime, "wire": wire, "ok": r.finish()}


def runc_page_server(hosts, bundle, work, tag) -> dict:
    r = Runc(hosts, bundle, work, tag)
    ps = subprocess.Popen(_on(hosts.b, [CRIU, "page-server", "--images-dir", r.img_b,
                                        "--address", hosts.b.address, "--port", str(PS_PORT)]),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _listening(ps.pid, PS_PORT)
    recv = _tar_receiver(hosts.b, r.img_b)
    wire0 = _link_bytes(hosts.b)
    t0 = time.monotonic()
    subprocess.run(r.checkpoint("--page-server", f"{hosts.b.address}:{PS_PORT}"), check=True,
                   timeout=900, cwd=bundle, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    holder = _Holder()
    try:
        _tar_send(hosts.a, hosts.b, r.img_a, recv)
        assert ps.wait(timeout=60) == 0, "criu page-server failed"
        r.restore()
    finally:
        holder.close()
    downtime = time.monotonic() - t0 - holder.seconds
    wire = _link_bytes(hosts.b) - wire0
    return {"downtime": downtime, "total": downtime, "wire": wire, "ok": r.finish()}


def runc_lazy(hosts, bundle, work, tag) -> dict:
    r = Runc(hosts, bundle, work, tag)
    recv = _tar_receiver(hosts.b, r.img_b)
    ready_r, ready_w = os.pipe()
    lazy_r, lazy_w = os.pipe()
    wire0 = _link_bytes(hosts.b)
    t0 = time.monotonic()
    ck = subprocess.Popen(r.checkpoint("--lazy-pages", "--page-server",
                                       f"{hosts.a.address}:{PS_PORT}", "--status-fd",
                                       str(ready_w)),
                          pass_fds=(ready_w,), cwd=bundle, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL)
    os.close(ready_w)
    try:
        if not select.select([ready_r], [], [], 900)[0] or os.read(ready_r, 1) != b"\0":
            raise RuntimeError("runc lazy: the page server never got ready")
        _tar_send(hosts.a, hosts.b, r.img_a, recv)
        lp = subprocess.Popen(_on(hosts.b, [CRIU, "lazy-pages", "--page-server", "--address",
                                            hosts.a.address, "--port", str(PS_PORT),
                                            "--images-dir", r.img_b, "--status-fd", str(lazy_w)]),
                              pass_fds=(lazy_w,), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        os.close(lazy_w)
        if not select.select([lazy_r], [], [], 60)[0] or os.read(lazy_r, 1) != b"\0":
            raise RuntimeError("runc lazy: criu lazy-pages never got ready")
        r.restore("--lazy-pages")
        downtime = time.monotonic() - t0
        assert ck.wait(timeout=900) == 0, "runc checkpoint --lazy-pages failed"
        total = time.monotonic() - t0
        lp.wait(timeout=60)
    finally:
        os.close(ready_r)
        os.close(lazy_r)
        if ck.poll() is None:
            ck.kill()
    wire = _link_bytes(hosts.b) - wire0
    return {"downtime": downtime, "total": total, "wire": wire, "ok": r.finish()}


def _migrate(strategy: str, binary: str | None = None):
    def run(hosts, bundle, work, tag) -> dict:
        m = binary or migrate_bin()
        cid = f"bench-m-{tag}"
        keep: list = []
        root_a, root_b = os.path.join(work, "m-a"), os.path.join(work, "m-b")
        _start([m], root_a, bundle, cid, keep)
        log = open(os.path.join(work, "agent.log"), "a")
        agent = subprocess.Popen(_on(hosts.b, [m, "--root", root_b, "receive", "--listen",
                                               f"{hosts.b.address}:{PORT}", "--token", TOKEN,
                                               "--work-dir", os.path.join(work, "incoming"),
                                               "--once"]),
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        _listening(agent.pid, PORT)
        report = os.path.join(work, f"report-{strategy}-{tag}.json")
        wire0 = _link_bytes(hosts.b)
        t0 = time.monotonic()
        res = subprocess.run(_on(hosts.a, [m, "--root", root_a, "migrate", cid, "--to",
                                           f"{hosts.b.address}:{PORT}", "--token", TOKEN,
                                           "--strategy", strategy, "--quiet", "--report",
                                           report]),
                             capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        # Like runc's: from the command's start until it exits after the last page.
        total = time.monotonic() - t0
        wire = _link_bytes(hosts.b) - wire0
        try:
            if res.returncode != 0:
                raise RuntimeError(f"migrate {strategy}: {res.stderr.strip()}")
            with open(report) as f:
                data = json.load(f)
            ok = _state_ok(bundle)
        finally:
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait(timeout=10)
            for root in (root_b, root_a):
                subprocess.run([m, "--root", root, "delete", "-f", cid], timeout=60,
                               stderr=subprocess.DEVNULL)
            for fd in keep:
                os.close(fd)
            log.close()
        return {"downtime": data["downtime_s"], "total": total, "wire": wire, "ok": ok,
                "reported": data.get("bytes_on_wire", 0),
                "rounds": [round(i.get("bytes", 0) / (1 << 20), 2)
                           for i in data.get("iterations", [])] if strategy == "pre-copy" else [],
                "steps": {s["step"]: s["seconds"] for s in data.get("frozen_steps", [])}}
    return run


PIPELINES = {
    "runc tar": runc_tar,
    "runc page server": runc_page_server,
    "runc lazy": runc_lazy,
    "migrate stop-and-copy": _migrate("stop-and-copy"),
    "migrate post-copy": _migrate("post-copy"),
    "migrate pre-copy": _migrate("pre-copy"),
}


def _parse(argv: list[str]) -> tuple[list[int], int | None, int, str | None, list[str], str,
                                      bool]:
    sizes, rate, reps, before, only, dirty, hold = [], None, 3, None, [], "same", False
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            print("usage: bench.py migration [MIB ...] [--rate MBIT] [--reps N] [--before BINARY] "
                  "[--only NAME,...] [--dirty same|new] [--hold]")
            raise SystemExit(0)
        if arg == "--rate":
            rate = int(next(it))
        elif arg == "--before":
            before = next(it)
        elif arg == "--hold":
            hold = True
        elif arg == "--reps":
            reps = int(next(it))
        elif arg == "--only":
            only = next(it).split(",")
        elif arg == "--dirty":
            dirty = next(it)
            if dirty not in ("same", "new"):
                raise SystemExit("bench.py migration: --dirty same|new")
        elif arg.isdigit():
            sizes.append(int(arg))
        else:
            raise SystemExit(f"bench.py migration: unknown argument {arg!r} (--help)")
    return sizes or [64, 256, 1024], rate, reps, before, only, dirty, hold


def main(argv: list[str]) -> int:
    sizes, rate, reps, before, only, dirty, hold = _parse(argv)
    from netns_hosts import NetnsHosts

    import needs

    pipelines = dict(PIPELINES)
    if before:
        # Another build of migrate (say, main's) in the same rounds: before/after.
        pipelines["before: stop-and-copy"] = _migrate("stop-and-copy", before)
        pipelines["before: post-copy"] = _migrate("post-copy", before)
    with open("/proc/sys/fs/pipe-max-size") as f:
        pipes_ok = int(f.read()) >= 4 << 20
    if needs.criu_feature("uffd-noncoop") is not None or not pipes_ok:
        print("migration: post-copy and runc lazy skipped: lazy pages unsupported or "
              "fs.pipe-max-size < 4 MiB (sysctl fs.pipe-max-size=16777216)")
        for name in ("runc lazy", "migrate post-copy", "before: post-copy"):
            pipelines.pop(name, None)
    if needs.criu_feature("mem_dirty_track") is not None:
        # No soft-dirty: pre-copy runs content rounds (issue 14).
        pipelines["migrate pre-copy (content)"] = pipelines.pop("migrate pre-copy")
    if only:
        pipelines = {n: fn for n, fn in pipelines.items() if any(w in n for w in only)}
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    results: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-mig-", dir="/var/tmp") as work, \
            NetnsHosts() as hosts:
        if rate:
            _shape(hosts, rate)
        for mib in sizes:
            bundle = make_bundle(work, f"bundle-{mib}", ["ctrhelper", "memhold", str(mib),
                                                         "/tmp/mem", str(DIRTY_PAGES_PER_S), dirty],
                                 writable=True)
            HOLD["mib"] = mib if hold else 0
            names = list(pipelines)
            for rep in range(reps):
                # Each repetition starts with the next pipeline, so none
                # always runs right after the same other one (whose freed
                # memory and cleanup it would inherit).
                k = rep % len(names)
                for name in names[k:] + names[:k]:
                    fn = pipelines[name]
                    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
                    tag = f"{mib}-{rep}-{slug}"
                    try:
                        results.setdefault((mib, name), []).append(fn(hosts, bundle, work, tag))
                    except Exception as err:  # noqa: BLE001 - one failed round, the rest go on
                        print(f"migration: {mib} MiB {name} round {rep}: {err}", file=sys.stderr)
    _print(results, sizes, pipelines, rate, reps, load, dirty, hold)
    return 0


def _median(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def _median_run(rounds: list[dict]) -> list:
    """The per-round MiB of the run with the median downtime."""
    ranked = sorted(rounds, key=lambda r: r["downtime"])
    return ranked[len(ranked) // 2].get("rounds") or []


def _print(results, sizes, pipelines, rate, reps, load, dirty="same", hold=False) -> None:
    from rich.console import Console
    from rich.table import Table

    link = f"tc tbf {rate} Mbit/s" if rate else "unshaped"
    t = Table(title=f"live migration between two netns hosts over a veth ({link}); writer dirtying "
                    f"{DIRTY_PAGES_PER_S} pages/s ({dirty} values); medians of {reps} interleaved "
                    f"rounds; {'runc restores without the memory its checkpoint freed (--hold); ' if hold else ''}"
                    f"load average at start {' '.join(load)}")
    for col in ("MiB", "pipeline", "downtime s", "total s", "downtime / runc ps",
                "downtime / runc lazy", "downtime / migrate s&c", "total / runc lazy",
                "wire MiB", "report / wire", "frozen steps (median s)", "state ok",
                "rounds MiB (median run)"):
        t.add_column(col, justify="left" if col in ("pipeline", "frozen steps (median s)",
                                                      "rounds MiB (median run)") else "right")
    for mib in sizes:
        ps = results.get((mib, "runc page server"))
        lazy = results.get((mib, "runc lazy"))
        sc = results.get((mib, "migrate stop-and-copy"))
        for name in pipelines:
            rounds = results.get((mib, name))
            if not rounds:
                t.add_row(str(mib), name, "failed", *[""] * 10)
                continue
            down, total = _median(rounds, "downtime"), _median(rounds, "total")
            steps = ""
            if rounds[0].get("steps"):
                steps = " ".join(f"{k} {statistics.median(r['steps'].get(k, 0) for r in rounds):.3f}"
                                 for k in rounds[0]["steps"])
            reported = (f"{_median(rounds, 'reported') / _median(rounds, 'wire'):.3f}"
                        if "reported" in rounds[0] else "-")
            t.add_row(str(mib), name, f"{down:.3f}", f"{total:.3f}",
                      f"{down / _median(ps, 'downtime'):.2f}" if ps else "-",
                      f"{down / _median(lazy, 'downtime'):.2f}" if lazy else "-",
                      f"{down / _median(sc, 'downtime'):.2f}" if sc else "-",
                      f"{total / _median(lazy, 'total'):.2f}" if lazy else "-",
                      f"{_median(rounds, 'wire') / (1 << 20):.1f}", reported, steps,
                      "yes" if all(r["ok"] for r in rounds) else "NO",
                      " ".join(str(x) for x in _median_run(rounds)))
    Console(width=220).print(t)
    # Every round, in the order run: the spread tells noise from a change.
    for (mib, name), rounds in results.items():
        print(f"{mib} MiB {name}: downtime/total per round "
              + ", ".join(f"{r['downtime']:.3f}/{r['total']:.3f}" for r in rounds))
    print("runc's downtime includes runc and CRIU starting before the freeze; migrate's is freeze "
          "to resumed from its report. First-touch memory here: about 1 GB/s to fault in fresh "
          "pages (DESIGN.md); restores of large containers are bounded by it. The machine is "
          "shared: compare ratios within one run.")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
