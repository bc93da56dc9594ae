"""Typed models of ``linux.resources`` (cgroup limits) in config.json.

Field names are the snake_case of the JSON keys. ``None`` means "not set:
leave the kernel's value alone", which is different from 0 for most of
these. Values are checked for type and range here; whether a host's cgroup
version can apply them is for the cgroup back ends to say.
"""

from __future__ import annotations

from migrate._record import field, record

__all__ = [
    "DeviceRule",
    "Memory",
    "Cpu",
    "Pids",
    "WeightDevice",
    "ThrottleDevice",
    "BlockIO",
    "HugepageLimit",
    "InterfacePriority",
    "Network",
    "Rdma",
    "Resources",
]

_model = record


@_model
class DeviceRule:
    """One device-cgroup rule; ``None`` type/major/minor mean "all"."""

    allow: bool
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    access: str | None = None


@_model
class Memory:
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool | None = None
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


@_model
class Cpu:
    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


@_model
class Pids:
    limit: int


@_model
class WeightDevice:
    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


@_model
class ThrottleDevice:
    major: int
    minor: int
    rate: int


@_model
class BlockIO:
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: tuple[WeightDevice, ...] = ()
    throttle_read_bps_device: tuple[ThrottleDevice, ...] = ()
    throttle_write_bps_device: tuple[ThrottleDevice, ...] = ()
    throttle_read_iops_device: tuple[ThrottleDevice, ...] = ()
    throttle_write_iops_device: tuple[ThrottleDevice, ...] = ()


@_model
class HugepageLimit:
    page_size: str
    limit: int


@_model
class InterfacePriority:
    name: str
    priority: int


@_model
class Network:
    class_id: int | None = None
    priorities: tuple[InterfacePriority, ...] = ()


@_model
class Rdma:
    hca_handles: int | None = None
    hca_objects: int | None = None


@_model
class Resources:
    devices: tuple[DeviceRule, ...] = ()
    memory: Memory | None = None
    cpu: Cpu | None = None
    pids: Pids | None = None
    block_io: BlockIO | None = None
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    network: Network | None = None
    rdma: dict[str, Rdma] = field(default_factory=dict)
    unified: dict[str, str] = field(default_factory=dict)
