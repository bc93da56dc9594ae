"""config.json -> typed models.

Reading follows Go's ``encoding/json`` as runc uses it: unknown keys are
ignored, ``null`` is the same as absent, a number must be an integer in
the range of the Go field's type (``uint32`` ids, ``int64`` limits), and
an empty optional string means "not set". `migrate.oci.serialize` is the
way back.

Errors name the JSON path: ``config.json: linux.namespaces[2].path: must be
a string``.
"""

from __future__ import annotations

from migrate._light import loads as _json_loads
import os

from migrate.errors import KernelError, NotFoundError, UsageError
from migrate.oci.constants import HOOK_NAMES
from migrate.oci.model import (
    Device,
    Hook,
    Hooks,
    IdMapping,
    Linux,
    Mount,
    Namespace,
    NetDevice,
    Process,
    Root,
    Spec,
    TimeOffset,
)
from migrate.oci.resources import (
    BlockIO,
    Cpu,
    DeviceRule,
    HugepageLimit,
    InterfacePriority,
    Memory,
    Network,
    Pids,
    Rdma,
    Resources,
    ThrottleDevice,
    WeightDevice,
)
from migrate.oci.reader import I32 as _I32
from migrate.oci.reader import I64 as _I64
from migrate.oci.reader import U16 as _U16
from migrate.oci.reader import U32 as _U32
from migrate.oci.reader import U64 as _U64
from migrate.oci.reader import Invalid
from migrate.oci.reader import Obj as _Obj
from migrate.oci.reader import check_int as _int
from migrate.oci.reader import read_process as _process
from migrate.oci.validate import check_process, check_spec

__all__ = ["load_config", "parse_config", "parse_process", "parse_resources"]


# -- public entry points ------------------------------------------------------


def load_config(bundle: str) -> Spec:
    """Read, parse and check ``<bundle>/config.json``.

    Raises:
        NotFoundError: there is no config.json in the bundle.
        UsageError: it is not valid JSON (a `ConfigError` when it is JSON
            but not a valid config).
        KernelError: it exists but cannot be read.
    """
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFoundError(f'bundle "{bundle}": config.json not found') from None
    except OSError as err:
        raise KernelError.from_oserror("read", err, path) from err
    try:
        data = _json_loads(raw)
    except (ValueError, RecursionError) as err:
        raise UsageError(f"config.json: invalid json: {_json_reason(err)}") from None
    return parse_config(data, bundle=bundle)


def parse_config(data: dict, *, bundle: str = ".", source: str = "config.json") -> Spec:
    """Turn a decoded config.json into a checked `Spec`.

    ``root.path`` is resolved against ``bundle`` into an absolute path;
    ``source`` names the document in error messages.

    Raises:
        ConfigError: (a UsageError) wrong types, missing keys, bad values.
    """
    try:
        spec = _spec(_Obj(data, ""), bundle)
        check_spec(spec)
    except Invalid as err:
        raise err.to_error(source) from None
    return spec


def parse_process(data: dict, *, source: str = "process.json") -> Process:
    """Turn a decoded process.json (``exec --process``) into a checked `Process`.

    Raises:
        ConfigError: (a UsageError) wrong types, missing keys, bad values.
    """
    try:
        process = _process(_Obj(data, ""))
        check_process(process, "")
    except Invalid as err:
        raise err.to_error(source) from None
    return process


# Every key of linux.resources (runtime-spec), for Go's case-insensitive
# matching of JSON keys to struct fields: `runc update -r` documents
# "cpu"/"memory" but accepts "CPU", and runc's tests use that spelling.
_RESOURCE_KEYS = {k.lower(): k for k in (
    "devices", "allow", "type", "major", "minor", "access", "memory", "limit", "reservation",
    "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy",
    "checkBeforeUpdate", "cpu", "shares", "quota", "burst", "period", "realtimeRuntime",
    "realtimePeriod", "cpus", "mems", "idle", "pids", "blockIO", "weight", "leafWeight",
    "weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice",
    "throttleWriteIOPSDevice", "rate", "hugepageLimits", "pageSize", "network", "classID",
    "priorities", "name", "priority", "rdma", "hcaHandles", "hcaObjects", "unified")}
# Maps whose keys are data (device names, file names), never canonicalised.
_RESOURCE_DATA_MAPS = {"rdma", "unified"}


def _canonical_keys(value):
    """``value`` with object keys spelled as runtime-spec spells them."""
    if isinstance(value, list):
        return [_canonical_keys(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict = {}
    for key, item in value.items():
        name = _RESOURCE_KEYS.get(key.lower(), key) if isinstance(key, str) else key
        if name in _RESOURCE_DATA_MAPS:
            out[name] = item
        elif name in out and isinstance(out[name], dict) and isinstance(item, dict):
            # Two spellings of one key: Go decodes both into the same struct.
            out[name] = {**out[name], **_canonical_keys(item)}
        else:
            out[name] = _canonical_keys(item)
    return out


def parse_resources(data: dict, *, source: str = "resources") -> Resources:
    """Turn a decoded ``linux.resources`` object into a checked `Resources`.

    Keys match case-insensitively, as Go's encoding/json matches them (what
    runc accepts in ``update -r``).

    Raises:
        ConfigError: (a UsageError) wrong types, missing keys, bad values.
    """
    try:
        return _resources(_Obj(_canonical_keys(data), ""))
    except Invalid as err:
        raise err.to_error(source) from None


def _json_reason(err: Exception) -> str:
    import json     # loaded by the failed parse already (migrate/_light.py)

    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg[0].lower()}{err.msg[1:]} at line {err.lineno} column {err.colno}"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).lower()


# -- reading (the getters and the process: migrate/oci/reader.py) ---------------


def _spec(o: _Obj, bundle: str) -> Spec:
    version = o.str("ociVersion", required=True)
    if not version:
        raise Invalid("ociVersion", "must not be empty")
    root = o.obj("root")
    if root is None:
        raise Invalid("root", "is required")
    root_path = root.str("path", required=True)
    if not root_path:
        raise Invalid("root.path", "must not be empty")
    process = o.obj("process")
    hooks = o.obj("hooks")
    linux = o.obj("linux")
    return Spec(
        oci_version=version,
        root=Root(
            path=os.path.normpath(os.path.join(os.path.abspath(bundle), root_path)),
            readonly=root.bool("readonly"),
        ),
        process=None if process is None else _process(process),
        hostname=o.str("hostname"),
        domainname=o.str("domainname"),
        mounts=tuple(_mount(m) for m in o.objs("mounts")),
        hooks=Hooks() if hooks is None else _hooks(hooks),
        annotations=o.str_map("annotations"),
        linux=Linux() if linux is None else _linux(linux),
    )


def _id_mappings(o: _Obj, key: str) -> tuple[IdMapping, ...]:
    return tuple(
        IdMapping(container_id=m.int("containerID", _U32, required=True),
                  host_id=m.int("hostID", _U32, required=True),
                  size=m.int("size", _U32, required=True))
        for m in o.objs(key)
    )


def _mount(o: _Obj) -> Mount:
    return Mount(
        destination=o.str("destination", required=True),
        type=o.str("type"),
        source=o.str("source"),
        options=o.strs("options"),
        uid_mappings=_id_mappings(o, "uidMappings"),
        gid_mappings=_id_mappings(o, "gidMappings"),
    )


def _hooks(o: _Obj) -> Hooks:
    return Hooks(**{
        attr: tuple(
            Hook(path=h.str("path", required=True), args=h.strs("args"),
                 env=h.strs("env"), timeout=h.int("timeout", _I64))
            for h in o.objs(key)
        )
        for key, attr in HOOK_NAMES.items()
    })


def _linux(o: _Obj) -> Linux:
    resources = o.obj("resources")
    return Linux(
        namespaces=tuple(
            Namespace(type=n.str("type", required=True), path=n.str("path"))
            for n in o.objs("namespaces")
        ),
        uid_mappings=_id_mappings(o, "uidMappings"),
        gid_mappings=_id_mappings(o, "gidMappings"),
        time_offsets={
            clock: TimeOffset(secs=t.int("secs", _I64) or 0, nanosecs=t.int("nanosecs", _U32) or 0)
            for clock, t in o.obj_map("timeOffsets").items()
        },
        devices=tuple(
            Device(type=d.str("type", required=True),
                   path=d.str("path", required=True),
                   major=d.int("major", _I64) or 0,
                   minor=d.int("minor", _I64) or 0,
                   file_mode=d.int("fileMode", _U32),
                   uid=d.int("uid", _U32),
                   gid=d.int("gid", _U32))
            for d in o.objs("devices")
        ),
        net_devices={name: NetDevice(name=d.str("name"))
                     for name, d in o.obj_map("netDevices").items()},
        cgroups_path=o.str("cgroupsPath"),
        resources=None if resources is None else _resources(resources),
        rootfs_propagation=o.str("rootfsPropagation"),
        masked_paths=o.strs("maskedPaths"),
        readonly_paths=o.strs("readonlyPaths"),
        sysctl=o.str_map("sysctl"),
        seccomp=o.raw("seccomp"),
        mount_label=o.str("mountLabel"),
        personality=o.raw("personality"),
        intel_rdt=o.raw("intelRdt"),
        memory_policy=o.raw("memoryPolicy"),
    )


def _resources(o: _Obj) -> Resources:
    mem = o.obj("memory")
    cpu = o.obj("cpu")
    pids = o.obj("pids")
    blkio = o.obj("blockIO")
    net = o.obj("network")
    return Resources(
        devices=tuple(
            DeviceRule(allow=_required_bool(r, "allow"), type=r.str("type"),
                       major=r.int("major", _I64), minor=r.int("minor", _I64),
                       access=r.str("access"))
            for r in o.objs("devices")
        ),
        memory=None if mem is None else Memory(
            limit=mem.int("limit", _I64),
            reservation=mem.int("reservation", _I64),
            swap=mem.int("swap", _I64),
            kernel=mem.int("kernel", _I64),
            kernel_tcp=mem.int("kernelTCP", _I64),
            swappiness=mem.int("swappiness", _U64),
            disable_oom_killer=mem.opt_bool("disableOOMKiller"),
            use_hierarchy=mem.opt_bool("useHierarchy"),
            check_before_update=mem.opt_bool("checkBeforeUpdate"),
        ),
        cpu=None if cpu is None else Cpu(
            shares=cpu.int("shares", _U64),
            quota=cpu.int("quota", _I64),
            burst=cpu.int("burst", _U64),
            period=cpu.int("period", _U64),
            realtime_runtime=cpu.int("realtimeRuntime", _I64),
            realtime_period=cpu.int("realtimePeriod", _U64),
            cpus=cpu.str("cpus"),
            mems=cpu.str("mems"),
            idle=cpu.int("idle", _I64),
        ),
        pids=None if pids is None else Pids(limit=pids.int("limit", _I64, required=True)),
        block_io=None if blkio is None else _block_io(blkio),
        hugepage_limits=tuple(
            HugepageLimit(page_size=h.str("pageSize", required=True),
                          limit=h.int("limit", _U64, required=True))
            for h in o.objs("hugepageLimits")
        ),
        network=None if net is None else Network(
            class_id=net.int("classID", _U32),
            priorities=tuple(
                InterfacePriority(name=p.str("name", required=True),
                                  priority=p.int("priority", _U32, required=True))
                for p in net.objs("priorities")
            ),
        ),
        rdma={dev: Rdma(hca_handles=r.int("hcaHandles", _U32), hca_objects=r.int("hcaObjects", _U32))
              for dev, r in o.obj_map("rdma").items()},
        unified=o.str_map("unified"),
    )


def _required_bool(o: _Obj, key: str) -> bool:
    value = o.opt_bool(key)
    if value is None:
        raise Invalid(o.at(key), "is required")
    return value


def _throttle(o: _Obj, key: str) -> tuple[ThrottleDevice, ...]:
    return tuple(
        ThrottleDevice(major=t.int("major", _I64, required=True),
                       minor=t.int("minor", _I64, required=True),
                       rate=t.int("rate", _U64, required=True))
        for t in o.objs(key)
    )


def _block_io(o: _Obj) -> BlockIO:
    return BlockIO(
        weight=o.int("weight", _U16),
        leaf_weight=o.int("leafWeight", _U16),
        weight_device=tuple(
            WeightDevice(major=w.int("major", _I64, required=True),
                         minor=w.int("minor", _I64, required=True),
                         weight=w.int("weight", _U16),
                         leaf_weight=w.int("leafWeight", _U16))
            for w in o.objs("weightDevice")
        ),
        throttle_read_bps_device=_throttle(o, "throttleReadBpsDevice"),
        throttle_write_bps_device=_throttle(o, "throttleWriteBpsDevice"),
        throttle_read_iops_device=_throttle(o, "throttleReadIOPSDevice"),
        throttle_write_iops_device=_throttle(o, "throttleWriteIOPSDevice"),
    )
