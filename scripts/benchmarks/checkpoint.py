"""Checkpoint and restore time of the same container under migrate and runc:
same bundle, same CRIU, interleaved rounds, for 16 MiB and 512 MiB of
touched memory (the in-container helper fills it with a known pattern)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks._common import make_bundle, migrate_bin, time_command


def _run(argv, cwd=None, log=None, stdio=None) -> float:
    """Wall seconds of ``argv`` (must succeed), timed as
    ``_common.time_command`` does. ``stdio``: (in, out) pipe ends for a
    container's fds 0-2; runc can only checkpoint pipes (not host files) as
    a container's stdio."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        if stdio:
            streams = {"stdin": stdio[0], "stdout": stdio[1], "stderr": stdio[1]}
        else:
            streams = {"stdout": out, "stderr": out}
        return time_command(argv, cwd=cwd, limit=300, **streams)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {err.returncode}); see {log}") from None
    finally:
        if log:
            out.close()


def _pipes():
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    return (r_in, w_out), (w_in, r_out)


def _wait_ready(bundle: str, name: str = "state", timeout: float = 120) -> None:
    state = os.path.join(bundle, "rootfs", "tmp", name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(state):
            return
        time.sleep(0.05)
    raise RuntimeError(f"container in {bundle} never got ready")


# The guest's free page reporting (virtio-balloon): free pages it has handed
# back to the host, which the host must fault in again on their next use.
# This machine's kernel counts them here (a stock kernel does not).
_REPORTED = "/sys/module/page_reporting/parameters/reported_kib"


def _reported_mib() -> float | None:
    try:
        with open(_REPORTED) as f:
            return int(f.read()) / 1024
    except (OSError, ValueError):
        return None


def _during(step) -> tuple[float, float | None]:
    """(seconds of ``step()``, MiB the guest reported to the host meanwhile)."""
    before = _reported_mib()
    seconds = step()
    after = _reported_mib()
    return seconds, (after - before if before is not None and after is not None else None)


def one_round(tool: str, argv0: list[str], root: str, bundle: str, work: str, i: int):
    """(checkpoint s, restore s, MiB reported to the host during each)."""
    cid = f"bench-{tool}-{i}"
    images = os.path.join(work, f"img-{tool}-{i}")
    log = os.path.join(work, f"{tool}.log")
    # A state file of this round's own: the previous round's container may
    # write its file until the moment it is killed, and a ready check that
    # saw that one would checkpoint a container still filling its memory.
    name = f"state-{tool}-{i}"
    _set_state_file(bundle, f"/tmp/{name}")
    base = [*argv0, "--root", root]
    theirs, ours = _pipes()
    theirs2, ours2 = _pipes()
    try:
        _run([*base, "run", "-d", "--bundle", bundle, cid], log=log, stdio=theirs)
        _wait_ready(bundle, name)
        # Images go to disk: without this, one runtime's checkpoint is
        # throttled by the writeback of the previous round's images
        # (dirty-page balancing), and 512 MiB dumps swung 0.7-2.4 s.
        os.sync()
        # The restore faults in as much memory as the checkpoint's kill
        # just freed: warm pages, unless the guest reported them to the host
        # in between (then every page costs a host fault; ~0.45 s more for
        # 512 MiB here). Both runtimes get the same order of steps; what is
        # reported during each step is counted, to tell noise from the runtime.
        t_ck, rep_ck = _during(lambda: _run([*base, "checkpoint", "--image-path", images, cid],
                                            cwd=bundle, log=log))
        t_rs, rep_rs = _during(lambda: _run([*base, "restore", "-d", "--image-path", images,
                                             "--bundle", bundle, cid],
                                            cwd=bundle, log=log, stdio=theirs2))
        _run([*base, "delete", "-f", cid], log=log)
    finally:
        for fd in (*theirs, *ours, *theirs2, *ours2):
            os.close(fd)
    shutil.rmtree(images, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(bundle, "rootfs", "tmp", name))
    return t_ck, t_rs, rep_ck, rep_rs


def _set_state_file(bundle: str, path: str) -> None:
    config = os.path.join(bundle, "config.json")
    with open(config) as f:
        data = json.load(f)
    data["process"]["args"][3] = path      # ctrhelper memhold MIB FILE
    with open(config, "w") as f:
        json.dump(data, f)


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 5
    sizes = [int(x) for x in argv[1:]] or [16, 512]
    runc = shutil.which("runc")
    if runc is None:
        print("checkpoint: runc is not installed; nothing to compare with")
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ck-", dir="/var/tmp") as work:
        tools = {"migrate": [migrate_bin()], "runc": [runc]}
        for mib in sizes:
            bundle = make_bundle(work, f"bundle-{mib}", ["ctrhelper", "memhold", str(mib), "/tmp/state"],
                                 writable=True)
            samples = {t: ([], [], []) for t in tools}
            for i in range(rounds):
                # Who goes first alternates: neither inherits the other's
                # page cache and writeback every round.
                for tool, argv0 in (list(tools.items()) if i % 2 == 0
                                    else list(tools.items())[::-1]):
                    ck, rs, rep_ck, rep_rs = one_round(tool, argv0,
                                                       os.path.join(work, f"root-{tool}"),
                                                       bundle, work, i)
                    samples[tool][0].append(ck)
                    samples[tool][1].append(rs)
                    samples[tool][2].append((rep_ck, rep_rs))
            for tool in tools:
                ck = statistics.median(samples[tool][0])
                rs = statistics.median(samples[tool][1])
                rows.append((mib, tool, ck, rs, _reclaim_note(samples[tool][1], samples[tool][2])))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"checkpoint / restore, medians of {rounds} interleaved rounds "
                        f"(same bundle, same CRIU)")
    for col in ("touched MiB", "runtime", "checkpoint s", "restore s", "ckpt ratio", "restore ratio",
                "reclaimed rounds", "restore s, others"):
        table.add_column(col, justify="right")
    ref = {(m, "runc"): (c, r) for m, t, c, r, _ in rows if t == "runc"}
    for mib, tool, ck, rs, note in rows:
        rc, rr = ref[(mib, "runc")]
        table.add_row(str(mib), tool, f"{ck:.3f}", f"{rs:.3f}", f"{ck / rc:.2f}", f"{rs / rr:.2f}",
                      *note)
    Console(width=140).print(table)
    if _reported_mib() is not None:
        print("reclaimed rounds: rounds whose checkpoint or restore saw the guest report free "
              "pages to the host (they fault in slowly again), and the MiB reported; "
              "restore s, others: the restore median of the other rounds.")
    return 0


def _reclaim_note(restores: list[float], reported: list[tuple]) -> tuple[str, str]:
    """For the table: how many rounds the host's page reclaim touched and
    how much; the restore median without them ("" where not counted)."""
    if any(ck is None or rs is None for ck, rs in reported):
        return "", ""
    hit = [ck + rs >= 1 for ck, rs in reported]     # a few KiB change nothing
    clean = [t for t, h in zip(restores, hit) if not h]
    mib = sum(ck + rs for ck, rs in reported)
    return (f"{sum(hit)}/{len(hit)}: {mib:.0f} MiB",
            f"{statistics.median(clean):.3f}" if clean else "-")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
