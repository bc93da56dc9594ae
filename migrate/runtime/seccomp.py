"""``linux.seccomp`` -> the flat plan that ``nsexec/seccomp.c`` turns into a
libseccomp filter (pure: no kernel, no libseccomp).

The rules follow runc's ``libcontainer/specconv`` and ``seccomp_linux.go``:

- a profile with neither ``defaultAction`` nor ``syscalls`` means no filter;
- each name of a ``syscalls`` entry becomes one rule; a name this arch or
  libseccomp does not know is skipped when the filter is built (the same
  profile serves several kernels and architectures);
- a rule whose action (and errno) is the default action is dropped:
  libseccomp refuses it, and it changes nothing;
- conditions on distinct arguments are ANDed in one rule; when one argument
  has several conditions each becomes a rule of its own (libseccomp cannot
  AND two conditions on the same argument);
- ``SCMP_ACT_ERRNO``/``SCMP_ACT_TRACE`` without ``errnoRet`` return EPERM.

Unknown actions, operators, architectures and flags are errors, never
skipped: a profile we cannot apply must fail ``create``, not run the
container unfiltered.

Two behaviours come from runc's own loader (``patchbpf``), not libseccomp:

- unless the default action lets calls through (allow, log, trace), a
  syscall numbered above the highest one the profile names (per
  architecture) gets ENOSYS instead of the default action: programs treat
  ENOSYS as "this kernel is too old, fall back", EPERM as a hard failure;
- ``SCMP_ACT_NOTIFY`` rules load the filter with
  SECCOMP_FILTER_FLAG_NEW_LISTENER; the init hands the listener fd to the
  runtime, which sends it with the container's state to the seccomp agent
  at ``listenerPath`` (runtime-spec "Seccomp notify"). The notify action
  cannot be the default, nor apply to ``write``: the hand-over needs it
  (runc refuses both too).
"""

from __future__ import annotations

import enum

from migrate._record import record
from migrate.oci.validate import ConfigError

__all__ = ["Action", "Op", "Flag", "ACTIONS", "OPERATORS", "ARCHES", "FLAGS",
           "SeccompArg", "SeccompRule", "SeccompPlan", "plan_seccomp"]

MAX_ARGS = 6           # syscall arguments a condition can name (0..5)
_U16 = 2**16 - 1       # SCMP_ACT_ERRNO/TRACE carry 16 bits of data
_U64 = 2**64 - 1


class Action(enum.IntEnum):
    """Mirrors ``enum seccomp_action`` in nsexec.h."""

    KILL_THREAD = 1
    KILL_PROCESS = 2
    TRAP = 3
    ERRNO = 4
    TRACE = 5
    ALLOW = 6
    LOG = 7
    NOTIFY = 8


class Op(enum.IntEnum):
    """libseccomp's ``enum scmp_compare`` (seccomp.h)."""

    NE = 1
    LT = 2
    LE = 3
    EQ = 4
    GE = 5
    GT = 6
    MASKED_EQ = 7


class Flag(enum.IntFlag):
    """seccomp(2)'s ``SECCOMP_FILTER_FLAG_*`` (include/uapi/linux/seccomp.h)."""

    TSYNC = 0x1
    LOG = 0x2
    SPEC_ALLOW = 0x4
    NEW_LISTENER = 0x8
    TSYNC_ESRCH = 0x10
    WAIT_KILLABLE_RECV = 0x20


ACTIONS: dict[str, Action] = {
    "SCMP_ACT_KILL": Action.KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": Action.KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": Action.KILL_PROCESS,
    "SCMP_ACT_TRAP": Action.TRAP,
    "SCMP_ACT_ERRNO": Action.ERRNO,
    "SCMP_ACT_TRACE": Action.TRACE,
    "SCMP_ACT_ALLOW": Action.ALLOW,
    "SCMP_ACT_LOG": Action.LOG,
    "SCMP_ACT_NOTIFY": Action.NOTIFY,
}

OPERATORS: dict[str, Op] = {f"SCMP_CMP_{op.name}": op for op in Op}

# OCI name -> libseccomp's (seccomp_arch_resolve_name). The last four need
# libseccomp 2.6; on 2.5 the filter build fails naming them.
ARCHES: dict[str, str] = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k",
    "SCMP_ARCH_SH": "sh",
    "SCMP_ARCH_SHEB": "sheb",
}

FLAGS: dict[str, Flag] = {
    "SECCOMP_FILTER_FLAG_TSYNC": Flag.TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": Flag.LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": Flag.SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": Flag.WAIT_KILLABLE_RECV,
}

# Default actions that let a call through: no ENOSYS stub (runc's
# isAllowAction: a tracer is expected to handle new syscalls itself).
_PERMISSIVE = (Action.ALLOW, Action.LOG, Action.TRACE)
_ENOSYS = 38


@record
class SeccompArg:
    index: int
    value: int
    value_two: int = 0
    op: Op


@record
class SeccompRule:
    name: str
    action: Action
    ret: int | None = None          # errno (ERRNO) or trace data (TRACE); None: EPERM
    args: tuple[SeccompArg, ...] = ()


@record
class SeccompPlan:
    default_action: Action
    default_ret: int | None = None
    arches: tuple[str, ...] = ()    # libseccomp names; the native arch is always in
    flags: Flag = Flag(0)
    rules: tuple[SeccompRule, ...] = ()
    enosys: bool = False            # prepend the ENOSYS stub (module docstring)
    listener_path: str = ""         # the seccomp agent's socket (notify rules)
    listener_metadata: str = ""

    @property
    def notifies(self) -> bool:
        """True when loading returns a listener fd for the seccomp agent."""
        return bool(self.flags & Flag.NEW_LISTENER)

    def describe(self, index: int) -> str:
        """What item ``index`` of the C profile is (arches first, then rules),
        for the message when libseccomp refuses it."""
        if index < len(self.arches):
            return f"architecture {self.arches[index]}"
        if 0 <= index - len(self.arches) < len(self.rules):
            rule = self.rules[index - len(self.arches)]
            return f"rule {rule.name} ({_action_name(rule.action)})"
        return "filter"


class _Errors:
    """Errors that name the document and the JSON path under linux.seccomp."""

    __slots__ = ("source",)

    def __init__(self, source: str):
        self.source = source

    def __call__(self, path: str, reason: str) -> ConfigError:
        return ConfigError(self.source, f"linux.seccomp.{path}", reason)


def _action_name(action: Action) -> str:
    return "SCMP_ACT_KILL" if action is Action.KILL_THREAD else f"SCMP_ACT_{action.name}"


def _effective(action: Action, ret: int | None) -> tuple[Action, int | None]:
    """What the kernel will do: errno/trace data only counts for those two."""
    if action in (Action.ERRNO, Action.TRACE):
        return action, 1 if ret is None else ret    # 1: EPERM
    return action, None


def plan_seccomp(raw: dict | None, *, source: str = "config.json") -> SeccompPlan | None:
    """Turn ``Spec.linux.seccomp`` (the JSON object) into a plan; None: no filter.

    Raises ConfigError (a UsageError) for what the spec does not allow or
    we do not know.
    """
    if not raw or (not raw.get("defaultAction") and not raw.get("syscalls")):
        return None
    bad = _Errors(source)
    default = _action(raw.get("defaultAction"), "defaultAction", bad)
    if default is Action.NOTIFY:
        raise bad("defaultAction", "SCMP_ACT_NOTIFY cannot be used as default action")
    default_ret = _uint(raw.get("defaultErrnoRet"), "defaultErrnoRet", _U16, bad)
    listener = raw.get("listenerPath") or ""
    metadata = raw.get("listenerMetadata") or ""
    if not isinstance(listener, str):
        raise bad("listenerPath", "must be a string")
    if not isinstance(metadata, str):
        raise bad("listenerMetadata", "must be a string")
    arches = []
    for i, name in enumerate(_list(raw.get("architectures"), "architectures", bad)):
        if name not in ARCHES:
            raise bad(f"architectures[{i}]", f"unknown architecture {name!r}")
        arches.append(ARCHES[name])
    flags = Flag(0)
    for i, name in enumerate(_list(raw.get("flags"), "flags", bad)):
        if name not in FLAGS:
            raise bad(f"flags[{i}]", f"unknown flag {name!r}")
        flags |= FLAGS[name]
    rules = []
    for i, entry in enumerate(_list(raw.get("syscalls"), "syscalls", bad)):
        rules += _rules(entry, f"syscalls[{i}]", _effective(default, default_ret), bad)
    if any(r.action is Action.NOTIFY for r in rules):
        if not listener:
            raise bad("listenerPath", "is not set: SCMP_ACT_NOTIFY needs a seccomp agent")
        flags |= Flag.NEW_LISTENER
        if flags & Flag.TSYNC:
            # TSYNC and NEW_LISTENER both return a value: the kernel takes
            # them together only with TSYNC_ESRCH (seccomp(2)).
            flags |= Flag.TSYNC_ESRCH
    elif flags & Flag.WAIT_KILLABLE_RECV:
        raise bad("flags", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs SCMP_ACT_NOTIFY rules")
    enosys = default not in _PERMISSIVE and _effective(default, default_ret) != (
        Action.ERRNO, _ENOSYS)
    return SeccompPlan(default_action=default, default_ret=default_ret,
                       arches=tuple(dict.fromkeys(arches)), flags=flags, rules=tuple(rules),
                       enosys=enosys, listener_path=listener, listener_metadata=metadata)


def _rules(entry, path: str, default, bad) -> list[SeccompRule]:
    if not isinstance(entry, dict):
        raise bad(path, "must be an object")
    action = _action(entry.get("action"), f"{path}.action", bad)
    ret = _uint(entry.get("errnoRet"), f"{path}.errnoRet", _U16, bad)
    names = _list(entry.get("names"), f"{path}.names", bad)
    for j, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise bad(f"{path}.names[{j}]", "must be a non-empty string")
        if action is Action.NOTIFY and name == "write":
            # The init hands the listener fd over with write(2) after loading.
            raise bad(f"{path}.names[{j}]", "SCMP_ACT_NOTIFY cannot be used for the write syscall")
    conds = tuple(_arg(a, f"{path}.args[{k}]", bad)
                  for k, a in enumerate(_list(entry.get("args"), f"{path}.args", bad)))
    if _effective(action, ret) == default:
        return []
    indexes = [c.index for c in conds]
    if len(set(indexes)) == len(indexes):
        groups = [conds]
    else:
        groups = [(c,) for c in conds]
    return [SeccompRule(name=name, action=action, ret=ret, args=group)
            for name in names for group in groups]


def _arg(raw, path: str, bad) -> SeccompArg:
    if not isinstance(raw, dict):
        raise bad(path, "must be an object")
    index = _uint(raw.get("index"), f"{path}.index", MAX_ARGS - 1, bad)
    if index is None:
        raise bad(f"{path}.index", "is required")
    op = raw.get("op")
    if op not in OPERATORS:
        raise bad(f"{path}.op", f"unknown operator {op!r}" if op else "is required")
    value = _uint(raw.get("value"), f"{path}.value", _U64, bad)
    if value is None:
        raise bad(f"{path}.value", "is required")
    value_two = _uint(raw.get("valueTwo"), f"{path}.valueTwo", _U64, bad) or 0
    return SeccompArg(index=index, value=value, value_two=value_two, op=OPERATORS[op])


def _action(name, path: str, bad) -> Action:
    if not name:
        raise bad(path, "is required")
    if name not in ACTIONS:
        raise bad(path, f"unknown action {name!r}")
    return ACTIONS[name]


def _uint(value, path: str, top: int, bad) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise bad(path, f"must be an integer from 0 to {top}")
    return value


def _list(value, path: str, bad) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(path, "must be an array")
    return value
