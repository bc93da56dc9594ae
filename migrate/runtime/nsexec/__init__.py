"""Python face of the C namespace bootstrap (``_nsexec``, built by cffi at install).

Only ``migrate.runtime.syscalls.LinuxSyscalls`` and the launcher call into it.
"""

from __future__ import annotations

import os

__all__ = ["NsFlag", "NS_FLAGS", "bootstrap", "lib", "check", "seccomp_build",
           "seccomp_program"]


class NsFlag(int):
    """CLONE_NEW* flags (include/uapi/linux/sched.h).

    An int whose ``|`` and ``&`` stay NsFlag and whose repr names the
    flags, rather than an ``enum.IntFlag``: importing ``enum`` alone costs
    ~5 ms of every `create`, `run` and `exec` (migrate/_light.py).
    """

    __slots__ = ()
    TIME: NsFlag
    MNT: NsFlag
    CGROUP: NsFlag
    UTS: NsFlag
    IPC: NsFlag
    USER: NsFlag
    PID: NsFlag
    NET: NsFlag

    def __or__(self, other):
        return NsFlag(int(self) | int(other))

    __ror__ = __or__

    def __and__(self, other):
        return NsFlag(int(self) & int(other))

    __rand__ = __and__

    def __repr__(self) -> str:
        names = [n for n, v in _NS_BITS if self & v]
        return "NsFlag." + "|".join(names) if names else f"NsFlag({int(self)})"

    __str__ = __repr__


_NS_BITS = (("TIME", 0x00000080), ("MNT", 0x00020000), ("CGROUP", 0x02000000),
            ("UTS", 0x04000000), ("IPC", 0x08000000), ("USER", 0x10000000),
            ("PID", 0x20000000), ("NET", 0x40000000))
for _name, _bit in _NS_BITS:
    setattr(NsFlag, _name, NsFlag(_bit))
del _name, _bit


# OCI namespace type -> flag and its /proc/PID/ns/ entry name.
NS_FLAGS: dict[str, tuple[NsFlag, str]] = {
    "pid": (NsFlag.PID, "pid"),
    "network": (NsFlag.NET, "net"),
    "mount": (NsFlag.MNT, "mnt"),
    "ipc": (NsFlag.IPC, "ipc"),
    "uts": (NsFlag.UTS, "uts"),
    "user": (NsFlag.USER, "user"),
    "cgroup": (NsFlag.CGROUP, "cgroup"),
    "time": (NsFlag.TIME, "time"),
}


def _load():
    from migrate.runtime.nsexec import _nsexec  # the compiled extension

    return _nsexec


def lib():
    """The compiled module's ``lib`` (C functions)."""
    return _load().lib


def check(ret: int, op: str, path: str | None = None) -> int:
    """Turn the C convention (-errno) into an OSError naming the step."""
    if ret < 0:
        raise OSError(-ret, f"{op}: {os.strerror(-ret)}", path)
    return ret


def bootstrap(*, sync_fd: int, log_fd: int, create: NsFlag,
              join: list[tuple[int, NsFlag]], dumpable_for_idmap: bool,
              timens_offsets: str | None) -> None:
    """Run the namespace stages in this (forked) process.

    Returns in the process that continues as the container's init; the
    intermediate process of a PID-namespace fork exits inside C.
    Raises OSError naming the failed step.
    """
    mod = _load()
    ffi, c = mod.ffi, mod.lib
    if len(join) > c.NSEXEC_MAX_JOIN:
        raise ValueError("too many namespaces to join")
    cfg = ffi.new("struct nsexec_config *")
    cfg.sync_fd = sync_fd
    cfg.log_fd = log_fd
    cfg.clone_flags = int(create)
    for i, (fd, flag) in enumerate(join):
        cfg.join_fds[i] = fd
        cfg.join_types[i] = int(flag)
    cfg.njoin = len(join)
    cfg.dumpable_for_idmap = int(dumpable_for_idmap)
    offsets = ffi.new("char[]", timens_offsets.encode()) if timens_offsets else ffi.NULL
    cfg.timens_offsets = offsets
    ret = c.nsexec_bootstrap(cfg)
    if ret < 0:
        step = ffi.string(cfg.failed_step).decode() or "nsexec"
        raise OSError(-ret, f"{step}: {os.strerror(-ret)}")


def seccomp_build(plan):
    """The C profile for a ``runtime.seccomp.SeccompPlan``, built into a
    libseccomp filter (an opaque pointer for ``seccomp_filter_load``).

    Raises OSError whose filename names the architecture or rule libseccomp
    refused.
    """
    mod = _load()
    ffi, c = mod.ffi, mod.lib
    keep = []                      # char[] buffers must outlive the build

    def cstr(text: str):
        buf = ffi.new("char[]", text.encode())
        keep.append(buf)
        return buf

    prof = ffi.new("struct seccomp_profile *")
    prof.default_action = int(plan.default_action)
    prof.default_ret = -1 if plan.default_ret is None else plan.default_ret
    prof.flags = int(plan.flags)
    prof.enosys_stub = int(plan.enosys)
    arches = ffi.new("const char *[]", [cstr(a) for a in plan.arches] or 1)
    prof.arches, prof.narches = arches, len(plan.arches)
    rules = ffi.new("struct seccomp_rule[]", len(plan.rules) or 1)
    for i, rule in enumerate(plan.rules):
        r = rules[i]
        r.name = cstr(rule.name)
        r.action = int(rule.action)
        r.ret = -1 if rule.ret is None else rule.ret
        r.nargs = len(rule.args)
        for j, arg in enumerate(rule.args):
            r.args[j].index = arg.index
            r.args[j].value = arg.value
            r.args[j].value_two = arg.value_two
            r.args[j].op = int(arg.op)
    prof.rules, prof.nrules = rules, len(plan.rules)
    out = ffi.new("void **")
    ret = c.seccomp_filter_build(prof, out)
    if ret < 0:
        what = plan.describe(prof.failed) if prof.failed >= 0 else "filter"
        raise OSError(-ret, f"seccomp: {os.strerror(-ret)}", what)
    return out[0]


def seccomp_program(filter) -> list[tuple[int, int, int, int]]:
    """The BPF a built filter would load, as (code, jt, jf, k): for tests."""
    mod = _load()
    ffi, c = mod.ffi, mod.lib
    total = c.seccomp_filter_dump(filter, ffi.NULL, 0)
    out = ffi.new("struct sock_filter[]", max(total, 1))
    c.seccomp_filter_dump(filter, out, total)
    return [(i.code, i.jt, i.jf, i.k) for i in out[0:total]]
