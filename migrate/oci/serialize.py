"""Typed models -> config.json, the inverse of `migrate.oci.parse`.

Writing follows Go's ``omitempty`` as runtime-spec's structs declare it:
false, "", empty lists and maps are left out, pointer fields (``None`` here)
are left out only when unset, so ``oomScoreAdj: 0`` stays. Keys come in
the order of the Go structs, so the output diffs cleanly against runc's.
`spec_to_dict` of a parsed canonical config gives the same JSON back (with
``root.path`` absolute), and `parse_config` of the result gives an equal
`Spec`.
"""

from __future__ import annotations

from migrate.oci.constants import HOOK_NAMES
from migrate.oci.model import Hooks, Linux, Mount, Process, Spec
from migrate.oci.resources import BlockIO, Resources

__all__ = ["spec_to_dict", "process_to_dict", "resources_to_dict"]


def spec_to_dict(spec: Spec) -> dict:
    """The config.json object for ``spec``; `parse_config` reads it back equal."""
    d: dict = {"ociVersion": spec.oci_version}
    if spec.process is not None:
        d["process"] = process_to_dict(spec.process)
    d["root"] = _put({"path": spec.root.path}, readonly=spec.root.readonly)
    _put(d, hostname=spec.hostname, domainname=spec.domainname)
    if spec.mounts:
        d["mounts"] = [_mount_out(m) for m in spec.mounts]
    if spec.hooks:
        d["hooks"] = _hooks_out(spec.hooks)
    _put(d, annotations=dict(spec.annotations))
    linux = _linux_out(spec.linux)
    if linux:
        d["linux"] = linux
    return d


def process_to_dict(process: Process) -> dict:
    """The JSON object for ``process``; `parse_process` reads it back equal."""
    p = process
    d: dict = _put({}, terminal=p.terminal)
    if p.console_size is not None:
        d["consoleSize"] = {"height": p.console_size.height, "width": p.console_size.width}
    user = _put_set({"uid": p.user.uid, "gid": p.user.gid}, umask=p.user.umask)
    d["user"] = _put(user, additionalGids=list(p.user.additional_gids))
    d["args"] = list(p.args)
    _put(d, env=list(p.env))
    d["cwd"] = p.cwd
    if p.capabilities is not None:
        c = p.capabilities
        d["capabilities"] = _put(
            {}, bounding=list(c.bounding), effective=list(c.effective),
            inheritable=list(c.inheritable), permitted=list(c.permitted), ambient=list(c.ambient))
    _put(d, rlimits=[{"type": r.type, "hard": r.hard, "soft": r.soft} for r in p.rlimits],
         noNewPrivileges=p.no_new_privileges, apparmorProfile=p.apparmor_profile)
    _put_set(d, oomScoreAdj=p.oom_score_adj)
    if p.scheduler is not None:
        s = p.scheduler
        d["scheduler"] = _put({"policy": s.policy}, nice=s.nice, priority=s.priority,
                              flags=list(s.flags), runtime=s.runtime, deadline=s.deadline,
                              period=s.period)
    _put(d, selinuxLabel=p.selinux_label)
    if p.io_priority is not None:
        d["ioPriority"] = {"class": p.io_priority.class_, "priority": p.io_priority.priority}
    if p.exec_cpu_affinity is not None:
        a = p.exec_cpu_affinity
        d["execCPUAffinity"] = _put({}, initial=a.initial, final=a.final)
    return d


def _put(d: dict, **items) -> dict:
    """Set the items that Go's ``omitempty`` would write (truthy ones)."""
    for key, value in items.items():
        if value:
            d[key] = value
    return d


def _put_set(d: dict, **items) -> dict:
    """Set the items that are not None (Go pointer fields: 0 and false stay)."""
    for key, value in items.items():
        if value is not None:
            d[key] = value
    return d


def _id_mappings_out(maps) -> list[dict]:
    return [{"containerID": m.container_id, "hostID": m.host_id, "size": m.size} for m in maps]


def _mount_out(m: Mount) -> dict:
    d = {"destination": m.destination}
    return _put(d, type=m.type, source=m.source, options=list(m.options),
                uidMappings=_id_mappings_out(m.uid_mappings),
                gidMappings=_id_mappings_out(m.gid_mappings))


def _hooks_out(hooks: Hooks) -> dict:
    d: dict = {}
    for key, attr in HOOK_NAMES.items():
        items = []
        for h in getattr(hooks, attr):
            item = _put({"path": h.path}, args=list(h.args), env=list(h.env))
            items.append(_put_set(item, timeout=h.timeout))
        _put(d, **{key: items})
    return d


def _linux_out(linux: Linux) -> dict:
    d: dict = {}
    _put(d,
         uidMappings=_id_mappings_out(linux.uid_mappings),
         gidMappings=_id_mappings_out(linux.gid_mappings),
         sysctl=dict(linux.sysctl))
    if linux.resources is not None:
        d["resources"] = _resources_out(linux.resources)
    _put(d, cgroupsPath=linux.cgroups_path,
         namespaces=[_put({"type": n.type}, path=n.path) for n in linux.namespaces],
         devices=[_put_set({"path": v.path, "type": v.type, "major": v.major, "minor": v.minor},
                           fileMode=v.file_mode, uid=v.uid, gid=v.gid)
                  for v in linux.devices],
         netDevices={k: _put({}, name=v.name) for k, v in linux.net_devices.items()})
    _put_set(d, seccomp=linux.seccomp)
    _put(d, rootfsPropagation=linux.rootfs_propagation,
         maskedPaths=list(linux.masked_paths),
         readonlyPaths=list(linux.readonly_paths),
         mountLabel=linux.mount_label)
    _put_set(d, intelRdt=linux.intel_rdt, memoryPolicy=linux.memory_policy,
             personality=linux.personality)
    _put(d, timeOffsets={k: _put({}, secs=t.secs, nanosecs=t.nanosecs)
                         for k, t in linux.time_offsets.items()})
    return d


def resources_to_dict(resources: Resources) -> dict:
    """``linux.resources`` as config.json spells it."""
    return _resources_out(resources)


def _resources_out(r: Resources) -> dict:
    d: dict = {}
    _put(d, devices=[_put_set({"allow": x.allow}, type=x.type, major=x.major, minor=x.minor,
                              access=x.access)
                     for x in r.devices])
    if r.memory is not None:
        m = r.memory
        d["memory"] = _put_set({}, limit=m.limit, reservation=m.reservation, swap=m.swap,
                               kernel=m.kernel, kernelTCP=m.kernel_tcp, swappiness=m.swappiness,
                               disableOOMKiller=m.disable_oom_killer,
                               useHierarchy=m.use_hierarchy,
                               checkBeforeUpdate=m.check_before_update)
    if r.cpu is not None:
        c = r.cpu
        d["cpu"] = _put_set({}, shares=c.shares, quota=c.quota, burst=c.burst, period=c.period,
                            realtimeRuntime=c.realtime_runtime, realtimePeriod=c.realtime_period,
                            cpus=c.cpus, mems=c.mems, idle=c.idle)
    if r.pids is not None:
        d["pids"] = {"limit": r.pids.limit}
    if r.block_io is not None:
        d["blockIO"] = _block_io_out(r.block_io)
    _put(d, hugepageLimits=[{"pageSize": h.page_size, "limit": h.limit}
                            for h in r.hugepage_limits])
    if r.network is not None:
        n = r.network
        d["network"] = _put(_put_set({}, classID=n.class_id),
                            priorities=[{"name": p.name, "priority": p.priority}
                                        for p in n.priorities])
    _put(d, rdma={k: _put_set({}, hcaHandles=v.hca_handles, hcaObjects=v.hca_objects)
                  for k, v in r.rdma.items()},
         unified=dict(r.unified))
    return d


def _block_io_out(b: BlockIO) -> dict:
    def throttle(items):
        return [{"major": t.major, "minor": t.minor, "rate": t.rate} for t in items]

    d = _put_set({}, weight=b.weight, leafWeight=b.leaf_weight)
    return _put(
        d,
        weightDevice=[_put_set({"major": w.major, "minor": w.minor},
                               weight=w.weight, leafWeight=w.leaf_weight)
                      for w in b.weight_device],
        throttleReadBpsDevice=throttle(b.throttle_read_bps_device),
        throttleWriteBpsDevice=throttle(b.throttle_write_bps_device),
        throttleReadIOPSDevice=throttle(b.throttle_read_iops_device),
        throttleWriteIOPSDevice=throttle(b.throttle_write_iops_device),
    )
