"""What this runtime supports, in the shape of `runc features` (runtime-spec
features.md)."""

from __future__ import annotations

__all__ = ["runtime_features"]

_MOUNT_OPTIONS = sorted([
    "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "lazytime",
    "mand", "noatime", "nodev", "nodiratime", "noexec", "nolazytime", "nomand", "norelatime",
    "nostrictatime", "nosuid", "nosymfollow", "private", "rbind", "relatime", "remount", "ro",
    "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave", "strictatime",
    "suid", "symfollow", "sync", "unbindable", "rro", "rrw", "rnosuid", "rsuid", "rnodev",
    "rdev", "rnoexec", "rexec", "rnodiratime", "rdiratime", "rrelatime", "rnorelatime",
    "rnoatime", "ratime", "rstrictatime", "rnostrictatime", "rnosymfollow", "rsymfollow",
    "idmap", "ridmap", "silent", "loud", "iversion", "noiversion",
])


def runtime_features() -> dict:
    from migrate.oci import CAPABILITIES, NAMESPACE_TYPES
    from migrate.runtime.seccomp import ACTIONS, ARCHES, FLAGS, OPERATORS

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": _MOUNT_OPTIONS,
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(ACTIONS),
                "operators": sorted(OPERATORS),
                "archs": sorted(ARCHES),
                "knownFlags": list(FLAGS),
                "supportedFlags": list(FLAGS),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            # Idmapped bind mounts (idmapped.py); whether a file system
            # supports them is known only when one is made.
            "mountExtensions": {"idmap": {"enabled": True}},
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "true",
            "io.github.migrate.checkpoint.enabled": "true",
            "io.github.migrate.live-migration.enabled": "true",
        },
    }
