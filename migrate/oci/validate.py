"""Small checks of a parsed `Spec`, one concern each.

`parse` checks JSON shape (types, ranges, required keys); the checks here
are about meaning: names the kernel knows, paths that must be absolute,
settings that need a namespace the config does not give the container.
runc's ``libcontainer/configs/validate`` is the model. Nothing here touches
the file system: whether the rootfs exists, whether a namespace path is
the host's, whether the kernel has time namespaces is for the runtime to
find out when it acts.

Every error is a `ConfigError` whose text is ``<source>: <where>: <what>``,
for example ``config.json: process.cwd: must be an absolute path, got
"tmp"``: lower case, no final period, naming the offending item.
"""

from __future__ import annotations

from migrate.oci.constants import (
    CAP_NUMBERS,
    DEVICE_RULE_TYPES,
    DEVICE_TYPES,
    HOOK_NAMES,
    IOPRIO_CLASSES,
    NAMESPACE_TYPES,
    RLIMITS,
    ROOTFS_PROPAGATIONS,
    SCHED_FLAGS,
    SCHED_POLICIES,
    TIME_OFFSET_CLOCKS,
)
# ConfigError and Invalid live with the reader that raises them too.
from migrate.oci.reader import ConfigError, Invalid

__all__ = ["ConfigError", "validate_spec", "validate_process"]


def validate_spec(spec, *, source: str = "config.json") -> None:
    """Check a `Spec` built by hand or changed after parsing.

    Raises:
        ConfigError: the first problem found.
    """
    try:
        check_spec(spec)
    except Invalid as err:
        raise err.to_error(source) from None


def validate_process(process, *, source: str = "process.json") -> None:
    """Check a `Process` on its own (``exec --process``).

    Raises:
        ConfigError: the first problem found.
    """
    try:
        check_process(process, "")
    except Invalid as err:
        raise err.to_error(source) from None


# -- the checks ---------------------------------------------------------------
# Each takes the model and raises Invalid; check_spec runs them in order.


def check_spec(spec) -> None:
    if not spec.oci_version:
        raise Invalid("ociVersion", "is required")
    _check_absolute(spec.root.path, "root.path")
    if spec.process is not None:
        check_process(spec.process, "process")
    _check_mounts(spec)
    _check_hooks(spec.hooks)
    _check_annotations(spec.annotations)
    _check_namespaces(spec.linux)
    _check_uts(spec)
    _check_user_namespace(spec.linux)
    _check_time_namespace(spec.linux)
    _check_sysctl(spec)
    _check_restricted_paths(spec.linux)
    _check_rootfs_propagation(spec.linux)
    _check_devices(spec.linux)
    _check_net_devices(spec.linux)
    if spec.linux.resources is not None:
        _check_resources(spec.linux.resources)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_absolute(path: str, where: str) -> None:
    if not path.startswith("/"):
        raise Invalid(where, f'must be an absolute path, got "{path}"')


def check_process(process, where: str) -> None:
    if not process.args:
        raise Invalid(_join(where, "args"), "must be a non-empty list of strings")
    if not process.cwd:
        raise Invalid(_join(where, "cwd"), "is required")
    _check_absolute(process.cwd, _join(where, "cwd"))
    for i, entry in enumerate(process.env):
        # "A=" is fine (empty value); "=x" names no variable.
        if "=" not in entry or entry.startswith("="):
            raise Invalid(f"{_join(where, 'env')}[{i}]", f'"{entry}" is not of the form NAME=value')
    if process.capabilities is not None:
        _check_capabilities(process.capabilities, _join(where, "capabilities"))
    _check_rlimits(process.rlimits, _join(where, "rlimits"))
    if process.oom_score_adj is not None and not -1000 <= process.oom_score_adj <= 1000:
        raise Invalid(_join(where, "oomScoreAdj"),
                      f"must be from -1000 to 1000, got {process.oom_score_adj}")
    if process.scheduler is not None:
        _check_scheduler(process.scheduler, _join(where, "scheduler"))
    if process.io_priority is not None:
        _check_io_priority(process.io_priority, _join(where, "ioPriority"))


def _check_capabilities(caps, where: str) -> None:
    for name in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        for i, cap in enumerate(getattr(caps, name)):
            if cap not in CAP_NUMBERS:
                raise Invalid(f"{where}.{name}[{i}]", f'unknown capability "{cap}"')


def _check_rlimits(rlimits, where: str) -> None:
    seen: set[str] = set()
    for i, rl in enumerate(rlimits):
        at = f"{where}[{i}]"
        if rl.type not in RLIMITS:
            raise Invalid(at, f'unknown rlimit type "{rl.type}"')
        if rl.type in seen:
            raise Invalid(at, f'duplicate rlimit type "{rl.type}"')
        seen.add(rl.type)
        # From 2**63 up every value means RLIM_INFINITY (runtime/process.py).
        if min(rl.soft, 2**63) > min(rl.hard, 2**63):
            raise Invalid(at, f"{rl.type} soft limit {rl.soft} exceeds hard limit {rl.hard}")


def _check_scheduler(s, where: str) -> None:
    # sched_setattr(2) semantics, as runc checks them.
    if s.policy not in SCHED_POLICIES:
        raise Invalid(f"{where}.policy", f'unknown scheduler policy "{s.policy}"')
    for i, flag in enumerate(s.flags):
        if flag not in SCHED_FLAGS:
            raise Invalid(f"{where}.flags[{i}]", f'unknown scheduler flag "{flag}"')
    if s.policy in ("SCHED_OTHER", "SCHED_BATCH") and not -20 <= s.nice <= 19:
        raise Invalid(f"{where}.nice", f"must be from -20 to 19, got {s.nice}")
    if s.priority and s.policy not in ("SCHED_FIFO", "SCHED_RR"):
        raise Invalid(f"{where}.priority", "is only valid with SCHED_FIFO or SCHED_RR")
    if (s.runtime or s.deadline or s.period) and s.policy != "SCHED_DEADLINE":
        raise Invalid(where, "runtime, deadline and period are only valid with SCHED_DEADLINE")


def _check_io_priority(p, where: str) -> None:
    if p.class_ not in IOPRIO_CLASSES:
        raise Invalid(f"{where}.class", f'unknown i/o priority class "{p.class_}"')
    if not 0 <= p.priority <= 7:
        raise Invalid(f"{where}.priority", f"must be from 0 to 7, got {p.priority}")


def _is_bind(options) -> bool:
    return "bind" in options or "rbind" in options


def _check_mounts(spec) -> None:
    for i, m in enumerate(spec.mounts):
        at = f"mounts[{i}]"
        # The spec still lets old configs use a relative destination ("as
        # relative to /"); runc warns. We refuse: it is almost always a typo.
        _check_absolute(m.destination, f"{at}.destination")
        if bool(m.uid_mappings) != bool(m.gid_mappings):
            raise Invalid(at, "uidMappings and gidMappings must be given together")
        if m.uid_mappings and not _is_bind(m.options):
            raise Invalid(at, f'id-mapped mount of "{m.destination}" must be a bind mount')
        wants_idmap = "idmap" in m.options or "ridmap" in m.options
        if wants_idmap and not m.uid_mappings and not spec.linux.has_namespace("user"):
            raise Invalid(at, f'"{m.destination}" asks for idmap but gives no mappings '
                              "and the container has no user namespace")


def _check_hooks(hooks) -> None:
    for key, attr in HOOK_NAMES.items():
        for i, hook in enumerate(getattr(hooks, attr)):
            at = f"hooks.{key}[{i}]"
            _check_absolute(hook.path, f"{at}.path")
            if hook.timeout is not None and hook.timeout <= 0:
                raise Invalid(f"{at}.timeout", f"must be greater than zero, got {hook.timeout}")


def _check_annotations(annotations) -> None:
    if "" in annotations:
        raise Invalid("annotations", "keys must not be empty")


def _check_namespaces(linux) -> None:
    seen: set[str] = set()
    for i, ns in enumerate(linux.namespaces):
        at = f"linux.namespaces[{i}]"
        if ns.type not in NAMESPACE_TYPES:
            raise Invalid(f"{at}.type", f'unknown namespace type "{ns.type}"')
        if ns.type in seen:
            raise Invalid(at, f'duplicate namespace type "{ns.type}"')
        seen.add(ns.type)
        if ns.path is not None:
            _check_absolute(ns.path, f"{at}.path")


def _check_uts(spec) -> None:
    for key, value in (("hostname", spec.hostname), ("domainname", spec.domainname)):
        if value is not None and not spec.linux.has_namespace("uts"):
            raise Invalid(key, f'cannot set "{value}" without a uts namespace')


def _check_user_namespace(linux) -> None:
    userns = linux.namespace("user")
    if userns is None:
        if linux.uid_mappings or linux.gid_mappings:
            raise Invalid("linux", "uidMappings and gidMappings need a user namespace "
                                   "in linux.namespaces")
        return
    if userns.path is None:
        # A new user namespace with no map has every id unmapped (overflow
        # id 65534): setuid/setgid to 0 fail, so require both maps.
        for key, maps in (("uidMappings", linux.uid_mappings),
                          ("gidMappings", linux.gid_mappings)):
            if not maps:
                raise Invalid(f"linux.{key}", "is required when a new user namespace is created")
    for key, maps in (("uidMappings", linux.uid_mappings), ("gidMappings", linux.gid_mappings)):
        for i, m in enumerate(maps):
            if m.size == 0:
                raise Invalid(f"linux.{key}[{i}].size", "must be greater than zero")


def _check_time_namespace(linux) -> None:
    for clock in linux.time_offsets:
        if clock not in TIME_OFFSET_CLOCKS:
            raise Invalid(f"linux.timeOffsets.{clock}",
                          'unknown clock, must be "boottime" or "monotonic"')
    if not linux.time_offsets:
        return
    timens = linux.namespace("time")
    if timens is None:
        raise Invalid("linux.timeOffsets", "needs a time namespace in linux.namespaces")
    if timens.path is not None:
        # Offsets can only be written before the first process enters a new
        # time namespace (time_namespaces(7)); a joined one is already set.
        raise Invalid("linux.timeOffsets", "cannot be set when joining a time namespace by path")


# sysctl names that live in the ipc namespace (ipc_namespaces(7)), besides
# everything under fs.mqueue.
_IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
    "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})


def _sysctl_dotted(name: str) -> str:
    """sysctl(8) accepts "/" as the separator, with "." then meaning a literal dot."""
    first = min((i for i in (name.find("."), name.find("/")) if i >= 0), default=-1)
    if first < 0 or name[first] == ".":
        return name
    return name.translate(str.maketrans("./", "/."))


def _check_sysctl(spec) -> None:
    # /proc/sys is only partly namespaced: a sysctl outside the namespaces
    # the container has would be written for the whole host.
    linux = spec.linux
    for raw in linux.sysctl:
        name = _sysctl_dotted(raw)
        at = f'linux.sysctl["{raw}"]'
        if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            needs = "ipc"
        elif name.startswith("net."):
            needs = "network"
        elif name in ("kernel.hostname", "kernel.domainname"):
            needs = "uts"
            if name == "kernel.hostname" and spec.hostname is not None:
                raise Invalid(at, "conflicts with the hostname field; set only one")
        elif name.startswith("user."):
            needs = "user"
        else:
            raise Invalid(at, "is not namespaced: it would change the host")
        if not linux.has_namespace(needs):
            article = "an" if needs == "ipc" else "a"
            raise Invalid(at, f"needs {article} {needs} namespace in linux.namespaces")


def _check_restricted_paths(linux) -> None:
    for key, paths in (("maskedPaths", linux.masked_paths),
                       ("readonlyPaths", linux.readonly_paths)):
        for i, path in enumerate(paths):
            _check_absolute(path, f"linux.{key}[{i}]")
        if paths and not linux.has_namespace("mount"):
            raise Invalid(f"linux.{key}", "needs a mount namespace in linux.namespaces")


def _check_rootfs_propagation(linux) -> None:
    value = linux.rootfs_propagation
    if value is not None and value not in ROOTFS_PROPAGATIONS:
        raise Invalid("linux.rootfsPropagation",
                      f'unknown value "{value}", must be one of {", ".join(ROOTFS_PROPAGATIONS)}')


_TYPE_BITS = {"c": 0o020000, "u": 0o020000, "b": 0o060000, "p": 0o010000}   # S_IF*


def _check_devices(linux) -> None:
    for i, dev in enumerate(linux.devices):
        at = f"linux.devices[{i}]"
        if dev.type not in DEVICE_TYPES:
            raise Invalid(f"{at}.type", f'unknown device type "{dev.type}", must be c, b, u or p')
        _check_absolute(dev.path, f"{at}.path")
        # Podman passes a host device's whole st_mode, file type included (runc
        # and crun take it): accept the type bits when they match the type.
        if dev.file_mode is not None and dev.file_mode & ~0o7777 not in (0, _TYPE_BITS[dev.type]):
            raise Invalid(f"{at}.fileMode", f"{dev.file_mode:#o} has bits outside 0o7777 "
                          f'that are not the file type of a "{dev.type}" device')


def _check_net_devices(linux) -> None:
    if linux.net_devices and not linux.has_namespace("network"):
        raise Invalid("linux.netDevices", "needs a network namespace in linux.namespaces")
    for name, dev in linux.net_devices.items():
        for value in (name, dev.name):
            # dev_valid_name() in net/core/dev.c; IFNAMSIZ is 16 with the NUL.
            if value is not None and (not value or len(value) > 15 or value in (".", "..")
                                      or any(c in value for c in "/: ")):
                raise Invalid(f'linux.netDevices["{name}"]', f'invalid interface name "{value}"')


def _check_resources(res) -> None:
    for i, rule in enumerate(res.devices):
        at = f"linux.resources.devices[{i}]"
        if rule.type is not None and rule.type not in DEVICE_RULE_TYPES:
            raise Invalid(f"{at}.type", f'unknown device rule type "{rule.type}", must be a, c or b')
        # Letters other than r, w and m are ignored, as runc 1.1 ignores them
        # (its device-rule emulator keeps only r/w/m): configs in the wild use
        # "rwa". A rule must keep at least one real permission.
        if rule.access is not None and not set(rule.access) & set("rwm"):
            raise Invalid(f"{at}.access", f'"{rule.access}" must contain r, w or m')
    mem = res.memory
    if mem is not None and mem.swappiness is not None and mem.swappiness > 100:
        raise Invalid("linux.resources.memory.swappiness",
                      f"must be from 0 to 100, got {mem.swappiness}")
    for key, value in res.unified.items():
        if not key or "/" in key or key in (".", ".."):
            raise Invalid(f'linux.resources.unified["{key}"]', "is not a cgroup file name")
