"""Typed models of an OCI runtime-spec config.json (Linux parts).

Every model is a frozen, slotted, keyword-only dataclass. Field names are
the snake_case of the JSON keys (``noNewPrivileges`` -> ``no_new_privileges``,
``containerID`` -> ``container_id``); lists become tuples; an optional
section that is absent is ``None``; an empty optional string ("" in Go's
``omitempty`` sense) is ``None`` too. Build them with `parse_config` and
turn them back into JSON with `spec_to_dict`.

``linux.resources`` lives in `migrate.oci.resources`. ``linux.seccomp``,
``linux.personality``, ``linux.intelRdt`` and ``linux.memoryPolicy`` are
kept as the JSON objects they were (checked only to be objects) until
something in the runtime needs them typed.
"""

from __future__ import annotations

from migrate._record import field, record

TYPE_CHECKING = False   # Resources is only annotated here: exec never loads it
if TYPE_CHECKING:
    from migrate.oci.resources import Resources

__all__ = [
    "Root",
    "ConsoleSize",
    "User",
    "Capabilities",
    "Rlimit",
    "Scheduler",
    "IOPriority",
    "CpuAffinity",
    "Process",
    "IdMapping",
    "Mount",
    "Hook",
    "Hooks",
    "Namespace",
    "TimeOffset",
    "Device",
    "NetDevice",
    "Linux",
    "Spec",
]

# migrate._record: dataclass semantics without ~10 ms of generated code at import.
_model = record


@_model
class Root:
    """The container's root filesystem; ``path`` is absolute once parsed."""

    path: str
    readonly: bool = False


@_model
class ConsoleSize:
    height: int
    width: int


@_model
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


@_model
class Capabilities:
    """Capability sets, each a tuple of ``CAP_*`` names (checked known)."""

    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


@_model
class Rlimit:
    type: str
    hard: int
    soft: int


@_model
class Scheduler:
    """sched_setattr(2) parameters; zero means "not set" as in the spec."""

    policy: str
    nice: int = 0
    priority: int = 0
    flags: tuple[str, ...] = ()
    runtime: int = 0
    deadline: int = 0
    period: int = 0


@_model
class IOPriority:
    class_: str
    priority: int


@_model
class CpuAffinity:
    initial: str | None = None
    final: str | None = None


@_model
class Process:
    args: tuple[str, ...]
    cwd: str = "/"
    env: tuple[str, ...] = ()
    terminal: bool = False
    console_size: ConsoleSize | None = None
    user: User = User()
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    scheduler: Scheduler | None = None
    selinux_label: str | None = None
    io_priority: IOPriority | None = None
    exec_cpu_affinity: CpuAffinity | None = None


@_model
class IdMapping:
    container_id: int
    host_id: int
    size: int


@_model
class Mount:
    destination: str
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] = ()
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()


@_model
class Hook:
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@_model
class Hooks:
    """Lifecycle hooks, each list in the order the spec says to run them."""

    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()

    def __bool__(self) -> bool:
        return any((self.prestart, self.create_runtime, self.create_container,
                    self.start_container, self.poststart, self.poststop))


@_model
class Namespace:
    """A namespace to create (``path`` None) or to join (``path`` set)."""

    type: str
    path: str | None = None


@_model
class TimeOffset:
    secs: int = 0
    nanosecs: int = 0


@_model
class Device:
    type: str
    path: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@_model
class NetDevice:
    """A host network device moved into the container (renamed if ``name``)."""

    name: str | None = None


@_model
class Linux:
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()
    time_offsets: dict[str, TimeOffset] = field(default_factory=dict)
    devices: tuple[Device, ...] = ()
    net_devices: dict[str, NetDevice] = field(default_factory=dict)
    cgroups_path: str | None = None
    resources: Resources | None = None
    rootfs_propagation: str | None = None
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: dict[str, str] = field(default_factory=dict)
    seccomp: dict | None = None
    mount_label: str | None = None
    personality: dict | None = None
    intel_rdt: dict | None = None
    memory_policy: dict | None = None

    def namespace(self, type: str) -> Namespace | None:
        """The entry for namespace ``type`` ("pid", "network", ...), if any."""
        for ns in self.namespaces:
            if ns.type == type:
                return ns
        return None

    def has_namespace(self, type: str) -> bool:
        """Whether the container gets its own ``type`` namespace (new or joined)."""
        return self.namespace(type) is not None

    def creates_namespace(self, type: str) -> bool:
        """Whether a new ``type`` namespace is created (listed, with no path)."""
        ns = self.namespace(type)
        return ns is not None and ns.path is None


@_model
class Spec:
    oci_version: str
    root: Root
    process: Process | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] = ()
    hooks: Hooks = Hooks()
    annotations: dict[str, str] = field(default_factory=dict)
    linux: Linux = field(default_factory=Linux)

    def namespace(self, type: str) -> Namespace | None:
        """Shortcut for ``spec.linux.namespace(type)``."""
        return self.linux.namespace(type)
