"""update: change a running container's resource limits (runc update's flags)."""

from __future__ import annotations

import json
import re
import sys

import click

__all__ = ["update_cmd", "parse_bytes", "resources_from_flags", "resources_from_json"]

# docker/go-units RAMInBytes: binary multiples, suffix case-insensitive,
# an optional "b"/"ib" after it ("50M", "50mb", "1.5GiB").
_BYTES_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kmgtp])?i?b?$", re.IGNORECASE)
_MULT = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(value: str, flag: str) -> int:
    """A memory size as runc takes it; "-1" means unlimited. Raises UsageError."""
    from migrate.errors import UsageError

    if value == "-1":
        return -1
    m = _BYTES_RE.match(value)
    if not m:
        raise UsageError(f"invalid value for {flag}: invalid size: '{value}'")
    try:
        number = float(m.group(1))
    except ValueError:
        raise UsageError(f"invalid value for {flag}: invalid size: '{value}'") from None
    return int(number * _MULT[(m.group(2) or "").lower() or None])


def _uint(value: str, flag: str) -> int:
    from migrate.errors import UsageError

    if not value.isdigit():
        raise UsageError(f"invalid value for {flag}: {value!r} is not a non-negative integer")
    return int(value)


def _int(value: str, flag: str) -> int:
    from migrate.errors import UsageError

    try:
        return int(value, 10)
    except ValueError:
        raise UsageError(f"invalid value for {flag}: {value!r} is not an integer") from None


def _nonzero(value):
    """runc's update treats 0 and "" as "leave alone"."""
    return value if value not in (0, "", None) else None


def resources_from_flags(flags: dict):
    """The patch the flags ask for (``Resources``; None fields: unchanged)."""
    from migrate.oci.resources import BlockIO, Cpu, Memory, Pids, Resources

    mem = {name: parse_bytes(flags[key], "--" + key) if flags.get(key) else None
           for key, name in (("memory", "limit"), ("memory-reservation", "reservation"),
                             ("memory-swap", "swap"), ("kernel-memory", "kernel"),
                             ("kernel-memory-tcp", "kernel_tcp"))}
    cpu = {
        "period": _uint(flags["cpu-period"], "--cpu-period") if flags.get("cpu-period") else None,
        "realtime_period": (_uint(flags["cpu-rt-period"], "--cpu-rt-period")
                            if flags.get("cpu-rt-period") else None),
        "shares": _uint(flags["cpu-share"], "--cpu-share") if flags.get("cpu-share") else None,
        "quota": _int(flags["cpu-quota"], "--cpu-quota") if flags.get("cpu-quota") else None,
        "realtime_runtime": (_int(flags["cpu-rt-runtime"], "--cpu-rt-runtime")
                             if flags.get("cpu-rt-runtime") else None),
        "cpus": flags.get("cpuset-cpus") or None,
        "mems": flags.get("cpuset-mems") or None,
    }
    return _resources(Resources, Memory, Cpu, Pids, BlockIO, mem, cpu,
                      flags.get("pids-limit"), flags.get("blkio-weight"))


def _resources(Resources, Memory, Cpu, Pids, BlockIO, mem, cpu, pids, weight):
    mem = {k: _nonzero(v) for k, v in mem.items()}
    cpu = {k: _nonzero(v) for k, v in cpu.items()}
    return Resources(
        memory=Memory(**mem) if any(v is not None for v in mem.values()) else None,
        cpu=Cpu(**cpu) if any(v is not None for v in cpu.values()) else None,
        pids=Pids(limit=pids) if _nonzero(pids) is not None else None,
        block_io=BlockIO(weight=weight) if _nonzero(weight) is not None else None)


def resources_from_json(text: str, source: str):
    """The patch in an ``update -r`` document: runc's JSON (a ``linux.resources``
    object, keys in any case), zeros meaning "unchanged"."""
    from migrate import oci
    from migrate.errors import UsageError
    from migrate.oci.resources import BlockIO, Cpu, Memory, Pids, Resources

    try:
        data = json.loads(text)
    except ValueError as err:
        raise UsageError(f"{source}: invalid JSON: {err}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{source}: must be a JSON object")
    full = oci.parse_resources(data, source=source) if data else Resources()
    mem, cpu = full.memory, full.cpu
    memd = {n: getattr(mem, n, None) for n in ("limit", "reservation", "swap", "kernel",
                                               "kernel_tcp")}
    cpud = {n: getattr(cpu, n, None) for n in ("shares", "quota", "period", "realtime_runtime",
                                               "realtime_period", "cpus", "mems")}
    patch = _resources(Resources, Memory, Cpu, Pids, BlockIO, memd, cpud,
                       full.pids.limit if full.pids else None,
                       full.block_io.weight if full.block_io else None)
    from migrate._record import replace

    # runc 1.1 also takes "unified" (cgroup v2 files) from the document.
    return replace(patch, unified=dict(full.unified))


_VALUE_FLAGS = ("cpu-period", "cpu-quota", "cpu-share", "cpu-rt-period", "cpu-rt-runtime",
                "cpuset-cpus", "cpuset-mems", "kernel-memory", "kernel-memory-tcp", "memory",
                "memory-reservation", "memory-swap", "l3-cache-schema", "mem-bw-schema")
_HELP = {
    "cpu-period": "CPU CFS period (microseconds)",
    "cpu-quota": "CPU CFS quota per period (microseconds); -1 for none",
    "cpu-share": "CPU shares (weight against other containers)",
    "cpu-rt-period": "real-time period (microseconds)",
    "cpu-rt-runtime": "real-time runtime per period (microseconds)",
    "cpuset-cpus": "CPUs to run on (e.g. 0-2,4)",
    "cpuset-mems": "memory nodes to use",
    "kernel-memory": "(obsolete; accepted and ignored)",
    "kernel-memory-tcp": "(obsolete; accepted and ignored)",
    "memory": "memory limit (bytes, or 50M etc.; -1 for none)",
    "memory-reservation": "memory soft limit",
    "memory-swap": "memory plus swap limit; -1 for unlimited swap",
    "l3-cache-schema": "Intel RDT L3 cache schema (not supported)",
    "mem-bw-schema": "Intel RDT memory bandwidth schema (not supported)",
}


def _options(func):
    for name in reversed(_VALUE_FLAGS):
        func = click.option(f"--{name}", name.replace("-", "_"), default=None,
                            hidden=name.startswith("kernel-"), help=_HELP[name])(func)
    return func


@click.command("update", help="Change the resource limits of a container.")
@click.option("--resources", "-r", default=None,
              help="JSON file of resources to update, or - for stdin (other flags are ignored)")
@click.option("--blkio-weight", type=int, default=0, help="block I/O weight (10-1000)")
@click.option("--pids-limit", type=int, default=0, help="maximum number of pids; -1 for none")
@_options
@click.argument("container_id")
@click.pass_obj
def update_cmd(ctx, container_id: str, resources: str | None, **flags) -> int:
    from migrate.errors import UnsupportedError
    from migrate.runtime.lifecycle.update import UpdateOptions, update

    if flags.get("l3_cache_schema") or flags.get("mem_bw_schema"):
        raise UnsupportedError("Intel RDT is not supported: --l3-cache-schema and "
                               "--mem-bw-schema cannot be set")
    if resources:
        if resources == "-":
            text, source = sys.stdin.read(), "resources from stdin"
        else:
            try:
                with open(resources, encoding="utf-8") as f:
                    text = f.read()
            except OSError as err:
                from migrate.errors import NotFoundError

                raise NotFoundError(f"cannot read resources file {resources}: "
                                    f"{err.strerror}") from None
            source = resources
        patch = resources_from_json(text, source)
    else:
        patch = resources_from_flags({k.replace("_", "-"): v for k, v in flags.items()})
    if patch.memory is not None and (patch.memory.kernel or patch.memory.kernel_tcp):
        click.echo("migrate: warning: kernel memory settings are ignored (as by the kernel "
                   "and runc)", err=True)
        from migrate._record import replace

        patch = replace(patch, memory=replace(patch.memory, kernel=None, kernel_tcp=None))
    update(ctx, UpdateOptions(id=container_id, resources=patch))
    return 0
