"""Typed getters over decoded JSON, and the OCI process object read with them.

`parse` builds every model with these; they live apart so that `exec` can
rebuild a running container's process (checked when the container was
created) without loading the rest of the parser, its checks and the
resources model: ~1.5 ms of every `exec` (issue 16).

Errors are `Invalid` (where, reason); public functions turn them into
`ConfigError` with ``to_error(source)``.
"""

from __future__ import annotations

from migrate.errors import UsageError
from migrate.oci.model import (
    Capabilities,
    ConsoleSize,
    CpuAffinity,
    IOPriority,
    Process,
    Rlimit,
    Scheduler,
    User,
)

__all__ = ["ConfigError", "Invalid", "Obj", "check_int", "read_process", "U16", "U32", "U64",
           "I32", "I64"]

# Ranges of the Go field types in runtime-spec's specs-go/config.go.
U16 = (0, 2**16 - 1)
U32 = (0, 2**32 - 1)
U64 = (0, 2**64 - 1)
I32 = (-(2**31), 2**31 - 1)
I64 = (-(2**63), 2**63 - 1)


class ConfigError(UsageError):
    """config.json (or an exec process.json) is malformed or invalid.

    ``source`` names the document, ``where`` the JSON path inside it
    (``process.args``, ``mounts[2].destination``), ``reason`` what is wrong.
    """

    def __init__(self, source: str, where: str, reason: str):
        self.source = source
        self.where = where
        self.reason = reason
        parts = [p for p in (source, where) if p]
        super().__init__(": ".join([*parts, reason]))


class Invalid(Exception):
    """Raised inside the package; public functions turn it into ConfigError.

    Kept apart from ConfigError so that parsers and checks need not know
    which document (config.json, process.json) they are reading.
    """

    def __init__(self, where: str, reason: str):
        super().__init__(where, reason)
        self.where = where
        self.reason = reason

    def to_error(self, source: str) -> ConfigError:
        return ConfigError(source, self.where, self.reason)


class Obj:
    """Typed getters over one JSON object, each naming its key on error."""

    __slots__ = ("d", "where")

    def __init__(self, value, where: str):
        if not isinstance(value, dict):
            raise Invalid(where, "must be an object") if where else Invalid("", "must be a json object")
        self.d = value
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, required: bool):
        value = self.d.get(key)
        if value is None and required:
            raise Invalid(self.at(key), "is required")
        return value

    def str(self, key: str, *, required: bool = False) -> str | None:
        """A string; "" counts as absent unless ``required`` (then it is kept)."""
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise Invalid(self.at(key), "must be a string")
        return value if required else (value or None)

    def bool(self, key: str) -> bool:
        return bool(self.opt_bool(key))

    def opt_bool(self, key: str) -> bool | None:
        value = self.d.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise Invalid(self.at(key), "must be true or false")
        return value

    def int(self, key: str, bounds: tuple[int, int], *, required: bool = False) -> int | None:
        return check_int(self._get(key, required), bounds, self.at(key))

    def strs(self, key: str) -> tuple[str, ...]:
        items = self._list(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise Invalid(f"{self.at(key)}[{i}]", "must be a string")
        return tuple(items)

    def ints(self, key: str, bounds: tuple[int, int]) -> tuple[int, ...]:
        at = self.at(key)
        return tuple(check_int(v, bounds, f"{at}[{i}]") for i, v in enumerate(self._list(key)))

    def obj(self, key: str) -> Obj | None:
        value = self.d.get(key)
        return None if value is None else Obj(value, self.at(key))

    def objs(self, key: str) -> list[Obj]:
        at = self.at(key)
        return [Obj(v, f"{at}[{i}]") for i, v in enumerate(self._list(key))]

    def raw(self, key: str) -> dict | None:
        """An object kept as JSON (seccomp, personality, ...): only its type is checked."""
        value = self.d.get(key)
        if value is not None and not isinstance(value, dict):
            raise Invalid(self.at(key), "must be an object")
        return value

    def str_map(self, key: str) -> dict[str, str]:
        value = self._map(key)
        for k, v in value.items():
            if not isinstance(v, str):
                raise Invalid(f'{self.at(key)}["{k}"]', "must be a string")
        return dict(value)

    def obj_map(self, key: str) -> dict[str, Obj]:
        at = self.at(key)
        return {k: Obj(v, f'{at}["{k}"]') for k, v in self._map(key).items()}

    def _list(self, key: str) -> list:
        value = self.d.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise Invalid(self.at(key), "must be a list")
        return value

    def _map(self, key: str) -> dict:
        value = self.d.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise Invalid(self.at(key), "must be an object")
        return value


def check_int(value, bounds: tuple[int, int], where: str) -> int | None:
    if value is None:
        return None
    # bool is an int in Python but not in JSON; 1.0 would not unmarshal
    # into a Go integer either.
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(where, "must be an integer")
    lo, hi = bounds
    if not lo <= value <= hi:
        raise Invalid(where, f"must be from {lo} to {hi}, got {value}")
    return value


def read_process(o: Obj) -> Process:
    # Go decodes a missing "user" (or uid, gid) as zero, and runc runs it as root.
    user = o.obj("user") or Obj({}, o.at("user"))
    console = o.obj("consoleSize")
    caps = o.obj("capabilities")
    sched = o.obj("scheduler")
    iop = o.obj("ioPriority")
    aff = o.obj("execCPUAffinity")
    args = o.strs("args")
    if not args:
        raise Invalid(o.at("args"), "must be a non-empty list of strings")
    return Process(
        terminal=o.bool("terminal"),
        console_size=None if console is None else ConsoleSize(
            height=console.int("height", U64, required=True),
            width=console.int("width", U64, required=True),
        ),
        user=User(
            uid=user.int("uid", U32) or 0,
            gid=user.int("gid", U32) or 0,
            umask=user.int("umask", U32),
            additional_gids=user.ints("additionalGids", U32),
        ),
        args=args,
        env=o.strs("env"),
        cwd=o.str("cwd", required=True),
        capabilities=None if caps is None else Capabilities(
            bounding=caps.strs("bounding"),
            effective=caps.strs("effective"),
            inheritable=caps.strs("inheritable"),
            permitted=caps.strs("permitted"),
            ambient=caps.strs("ambient"),
        ),
        rlimits=tuple(
            Rlimit(type=r.str("type", required=True),
                   hard=r.int("hard", U64, required=True),
                   soft=r.int("soft", U64, required=True))
            for r in o.objs("rlimits")
        ),
        no_new_privileges=o.bool("noNewPrivileges"),
        apparmor_profile=o.str("apparmorProfile"),
        oom_score_adj=o.int("oomScoreAdj", I64),
        scheduler=None if sched is None else Scheduler(
            policy=sched.str("policy", required=True),
            nice=sched.int("nice", I32) or 0,
            priority=sched.int("priority", I32) or 0,
            flags=sched.strs("flags"),
            runtime=sched.int("runtime", U64) or 0,
            deadline=sched.int("deadline", U64) or 0,
            period=sched.int("period", U64) or 0,
        ),
        selinux_label=o.str("selinuxLabel"),
        io_priority=None if iop is None else IOPriority(
            class_=iop.str("class", required=True),
            priority=iop.int("priority", I64) or 0,
        ),
        exec_cpu_affinity=None if aff is None else CpuAffinity(
            initial=aff.str("initial"), final=aff.str("final"),
        ),
    )
