"""Live migration between two network-namespace hosts: downtime, total time
and bytes on the wire for 64 MiB, 256 MiB and 1 GiB of touched memory (a
writer dirties pages at a fixed rate), per strategy this kernel supports,
next to a runc baseline measured in the same run over the same link (runc
checkpoint, copy of the images over TCP, runc restore).

Bytes on the wire are the veth's counters on the destination (control
connection, CRIU page-server traffic and TCP/IP overhead included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchmarks._common import make_bundle, migrate_bin

TOKEN = "bench-token"
PORT = 7790
DIRTY_PAGES_PER_S = 2000


def _on(host, argv):
    return ["nsenter", f"--net={host.path}", *argv]


def _rx_bytes(host) -> int:
    from pyroute2 import IPRoute

    with host.entered(), IPRoute() as ip:
        (link,) = ip.get_links(ifname=host.ifname)
        return link.get_attr("IFLA_STATS64")["rx_bytes"]


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


def _copy_tree(src_host, dst_host, src: str, dst: str) -> None:
    """Copy CRIU images from one host to the other over TCP (tar stream)."""
    os.makedirs(dst, exist_ok=True)
    port = 7795
    recv = subprocess.Popen(_on(dst_host, [sys.executable, "-c",
        "import socket,subprocess,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        f"s.bind(('{dst_host.address}',{port})); s.listen(1); c,_=s.accept()\n"
        f"p=subprocess.Popen(['tar','-x','-C','{dst}'],stdin=subprocess.PIPE)\n"
        "while True:\n d=c.recv(1<<20)\n if not d: break\n p.stdin.write(d)\n"
        "p.stdin.close(); sys.exit(p.wait())\n"]))
    time.sleep(0.3)
    send = subprocess.run(_on(src_host, ["sh", "-c",
        f"tar -c -C {src} . | {sys.executable} -c \"import socket,sys; "
        f"s=socket.create_connection(('{dst_host.address}',{port})); "
        f"[s.sendall(b) for b in iter(lambda: sys.stdin.buffer.read(1<<20), b'')]\""]),
        timeout=600)
    assert send.returncode == 0 and recv.wait(timeout=600) == 0


def runc_round(hosts, bundle: str, work: str, i: int) -> dict:
    runc = shutil.which("runc")
    cid = f"bench-runc-{i}"
    keep: list = []
    root_a, root_b = os.path.join(work, "runc-a"), os.path.join(work, "runc-b")
    _start([runc], root_a, bundle, cid, keep)
    img_a, img_b = os.path.join(work, f"runc-img-a-{i}"), os.path.join(work, f"runc-img-b-{i}")
    rx0 = _rx_bytes(hosts.b)
    t0 = time.monotonic()
    subprocess.run(_on(hosts.a, [runc, "--root", root_a, "checkpoint", "--image-path", img_a, cid]),
                   check=True, timeout=600, cwd=bundle, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)
    _copy_tree(hosts.a, hosts.b, img_a, img_b)
    r, w = os.pipe()
    keep += [r, w]
    subprocess.run(_on(hosts.b, [runc, "--root", root_b, "restore", "-d", "--image-path", img_b,
                                 "--bundle", bundle, cid]), check=True, timeout=600, cwd=bundle,
                   stdin=r, stdout=w, stderr=w)
    downtime = time.monotonic() - t0
    rx = _rx_bytes(hosts.b) - rx0
    subprocess.run([runc, "--root", root_b, "delete", "-f", cid], timeout=60)
    for fd in keep:
        os.close(fd)
    shutil.rmtree(img_a, ignore_errors=True)
    shutil.rmtree(img_b, ignore_errors=True)
    return {"downtime": downtime, "total": downtime, "rx": rx}


def migrate_round(hosts, bundle: str, work: str, strategy: str, i: int) -> dict:
    m = migrate_bin()
    cid = f"bench-m-{i}"
    keep: list = []
    root_a, root_b = os.path.join(work, "m-a"), os.path.join(work, "m-b")
    _start([m], root_a, bundle, cid, keep)
    log = open(os.path.join(work, "agent.log"), "a")
    agent = subprocess.Popen(_on(hosts.b, [m, "--root", root_b, "receive", "--listen",
                                           f"{hosts.b.address}:{PORT}", "--token", TOKEN,
                                           "--work-dir", os.path.join(work, "incoming"), "--once"]),
                             stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.8)
    report = os.path.join(work, f"report-{strategy}-{i}.json")
    rx0 = _rx_bytes(hosts.b)
    res = subprocess.run(_on(hosts.a, [m, "--root", root_a, "migrate", cid, "--to",
                                       f"{hosts.b.address}:{PORT}", "--token", TOKEN, "--strategy",
                                       strategy, "--quiet", "--report", report]),
                         capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"migrate {strategy}: {res.stderr.strip()}")
    # post-copy's total ends when the last page has gone: the source waits for it.
    rx = _rx_bytes(hosts.b) - rx0
    data = json.load(open(report))
    with open(os.path.join(bundle, "rootfs", "tmp", "mem")) as f:
        ok = f.read().split()[2] == "1"
    try:
        agent.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(agent.pid, signal.SIGKILL)
    subprocess.run([m, "--root", root_b, "delete", "-f", cid], timeout=60)
    for fd in keep:
        os.close(fd)
    images = sum(p["bytes_raw"] for p in data["phases"] if p["name"] == "images")
    return {"downtime": data["downtime_s"], "total": data["total_s"], "rx": rx, "ok": ok,
            "images": images}


def main(argv: list[str]) -> int:
    sizes = [int(x) for x in argv] or [64, 256, 1024]
    from netns_hosts import NetnsHosts

    import needs

    strategies = ["stop-and-copy"]
    with open("/proc/sys/fs/pipe-max-size") as f:
        pipes_ok = int(f.read()) >= 4 << 20
    if needs.criu_feature("uffd-noncoop") is None and pipes_ok:
        strategies.append("post-copy")
    else:
        print("migration: post-copy skipped: lazy pages unsupported or fs.pipe-max-size < 4 MiB "
              "(sysctl fs.pipe-max-size=16777216)")
    if needs.criu_feature("mem_dirty_track") is None:
        strategies += ["pre-copy"]
    else:
        print("migration: pre-copy and hybrid skipped: no memory dirty tracking on this kernel")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-mig-", dir="/var/tmp") as work, \
            NetnsHosts() as hosts:
        for mib in sizes:
            bundle = make_bundle(work, f"bundle-{mib}", ["ctrhelper", "memhold", str(mib), "/tmp/mem",
                                                         str(DIRTY_PAGES_PER_S)], writable=True)
            base = runc_round(hosts, bundle, work, mib)
            rows.append((mib, "runc dump+copy+restore", base, None, base))
            for strategy in strategies:
                r = migrate_round(hosts, bundle, work, strategy, mib)
                rows.append((mib, f"migrate {strategy}", r, r["ok"], base))
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"live migration over a veth between two netns hosts "
                    f"(writer dirtying {DIRTY_PAGES_PER_S} pages/s)")
    for col in ("MiB", "pipeline", "downtime s", "total s", "downtime vs runc", "wire MiB",
                "wire / (memory + images)", "state ok"):
        t.add_column(col, justify="right" if col != "pipeline" else "left")
    for mib, name, r, ok, base in rows:
        need = (mib << 20) + r.get("images", 0)
        t.add_row(str(mib), name, f"{r['downtime']:.3f}", f"{r['total']:.3f}",
                  f"{base['downtime'] / r['downtime']:.1f}x better" if r is not base else "1.0",
                  f"{r['rx'] / (1 << 20):.1f}", f"{r['rx'] / need:.3f}",
                  "-" if ok is None else ("yes" if ok else "NO"))
    Console(width=160).print(t)
    print("first-touch memory here: about 1 GB/s to fault in fresh pages (DESIGN.md); restores of "
          "large containers are bounded by it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
