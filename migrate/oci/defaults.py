"""The example config.json that ``migrate spec`` writes.

It is runc's (``libcontainer/specconv/example.go``, as printed by ``runc
spec`` 1.1.5) with these differences, each on purpose:

- ``ociVersion`` is "1.2.0" (runc 1.1.5 prints "1.0.2-dev");
- ``hostname`` is "migrate";
- no ambient capabilities. runc 1.1.5 lists the three default capabilities
  as ambient but not inheritable; the kernel refuses PR_CAP_AMBIENT_RAISE
  for a capability that is not both permitted and inheritable
  (capabilities(7)), and runc's capability library hid the error. runc
  dropped them in commit 0de19533 ("runc spec, libct/int: do not add
  ambient capabilities", 1.2);
- ``cgroup_namespace`` (default True) adds a cgroup namespace; ``migrate
  spec`` passes True only on a pure cgroup v2 host, as runc does.
"""

from __future__ import annotations

import os

__all__ = ["default_spec", "DEFAULT_OCI_VERSION"]

DEFAULT_OCI_VERSION = "1.2.0"

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(*, rootless: bool = False, uid: int | None = None, gid: int | None = None,
                 cgroup_namespace: bool = True) -> dict:
    """A fresh config.json object like ``runc spec`` (``--rootless``).

    ``uid`` and ``gid`` are the host ids that container root maps to when
    ``rootless`` (default: this process's effective ids); they are ignored
    otherwise. A new dict every call: change it freely.
    """
    spec: dict = {
        "ociVersion": DEFAULT_OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": list(_CAPS),
                "effective": list(_CAPS),
                "permitted": list(_CAPS),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "migrate",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }
    if cgroup_namespace:
        spec["linux"]["namespaces"].append({"type": "cgroup"})
    if rootless:
        _to_rootless(spec, os.geteuid() if uid is None else uid,
                     os.getegid() if gid is None else gid)
    return spec


def _to_rootless(spec: dict, uid: int, gid: int) -> None:
    """What ``runc spec --rootless`` changes (runc's specconv.ToRootless)."""
    old = spec["linux"]
    # Container root is the caller, and nobody else is mapped: more needs
    # newuidmap, and that is the user's choice to make. (Keys in runc's
    # order, so the two outputs diff cleanly.)
    linux = spec["linux"] = {
        "uidMappings": [{"containerID": 0, "hostID": uid, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": gid, "size": 1}],
        # Unprivileged users cannot set cgroup limits without delegation.
        **{k: v for k, v in old.items() if k != "resources"},
    }
    # An unprivileged user cannot create a network namespace it could
    # connect to anything; keep the host's. The user namespace goes last.
    linux["namespaces"] = [ns for ns in linux["namespaces"]
                           if ns["type"] not in ("network", "user")]
    linux["namespaces"].append({"type": "user"})
    mounts = []
    for mount in spec["mounts"]:
        if os.path.normpath(mount["destination"]) == "/sys":
            # sysfs can only be mounted by the owner of the network
            # namespace, which is the host's here: bind the host's instead.
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        # gid=5 (tty) and any uid= cannot be mapped with a one-id map.
        if "options" in mount:
            mount["options"] = [o for o in mount["options"]
                                if not o.startswith(("gid=", "uid="))]
        mounts.append(mount)
    spec["mounts"] = mounts
