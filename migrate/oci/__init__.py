"""The OCI runtime-spec config: typed models, parsing, checks, `spec`.

Everything below this package sees `Spec` and friends, never raw JSON.

Names are loaded on first use (PEP 562 ``__getattr__``): defining the ~30
frozen dataclasses costs about 10 ms (each generates and compiles six
methods), which commands that never read a config (``state``, ``kill``,
``list``) should not pay. ``from migrate.oci import Spec`` works as usual.
"""


# public name -> submodule that defines it
_EXPORTS = {
    # functions
    "load_config": "parse",
    "parse_config": "parse",
    "parse_process": "parse",
    "parse_resources": "parse",
    "resources_to_dict": "serialize",
    "spec_to_dict": "serialize",
    "process_to_dict": "serialize",
    "default_spec": "defaults",
    "DEFAULT_OCI_VERSION": "defaults",
    "validate_spec": "validate",
    "validate_process": "validate",
    "ConfigError": "validate",
    # models
    "Spec": "model",
    "Root": "model",
    "Process": "model",
    "ConsoleSize": "model",
    "User": "model",
    "Capabilities": "model",
    "Rlimit": "model",
    "Scheduler": "model",
    "IOPriority": "model",
    "CpuAffinity": "model",
    "Mount": "model",
    "IdMapping": "model",
    "Hook": "model",
    "Hooks": "model",
    "Linux": "model",
    "Namespace": "model",
    "TimeOffset": "model",
    "Device": "model",
    "NetDevice": "model",
    "Resources": "resources",
    "DeviceRule": "resources",
    "Memory": "resources",
    "Cpu": "resources",
    "Pids": "resources",
    "BlockIO": "resources",
    "WeightDevice": "resources",
    "ThrottleDevice": "resources",
    "HugepageLimit": "resources",
    "Network": "resources",
    "InterfacePriority": "resources",
    "Rdma": "resources",
    # constants
    "CAPABILITIES": "constants",
    "CAP_NUMBERS": "constants",
    "CAP_LAST_CAP": "constants",
    "RLIMITS": "constants",
    "RLIM_INFINITY": "constants",
    "NAMESPACE_TYPES": "constants",
    "NAMESPACE_CLONE_FLAGS": "constants",
    "NAMESPACE_PROC_NAMES": "constants",
    "ROOTFS_PROPAGATIONS": "constants",
    "SCHED_POLICIES": "constants",
    "SCHED_FLAGS": "constants",
    "IOPRIO_CLASSES": "constants",
}

__all__ = list(_EXPORTS)


from migrate._light import lazy_exports as _lazy_exports  # noqa: E402

__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, globals(), __all__)
del _lazy_exports
