"""Can CRIU checkpoint and restore this rootless container? Decided before
anything is frozen.

CRIU runs as a non-root user in its "unprivileged" mode (``--unprivileged``,
``criu_opts.unprivileged``, CRIU >= 3.15) when its binary carries file
capabilities. CRIU's documentation asks for CAP_CHECKPOINT_RESTORE (Linux
5.9). Measured here (CRIU 4.2.1, Linux 6.18, a container made by
``migrate spec --rootless``: user, mount, PID, IPC and cgroup namespaces)
that is not enough for a container with namespaces of its own:

- dump: ``check_user_ns()`` (criu/namespaces.c) calls setgroups(0, NULL)
  before it enters the container's user namespace: CAP_SETGID, else
  "Unable to drop supplementary groups: Operation not permitted";
- dump: CRIU enters the container's network namespace (to dump it) and
  mount namespace (to archive tmpfs contents such as /dev) with setns(2)
  straight from the initial user namespace, which the kernel allows only
  with CAP_SYS_ADMIN (net, mnt) and CAP_SYS_CHROOT (mnt) there, whoever
  owns the target namespace: "Can't setns 8/net", "Can't setns 13/mnt";
- restore: a UTS namespace cannot be restored by anyone but uid 0. CRIU
  writes /proc/sys/kernel/hostname from its helper in the initial user
  namespace, and the kernel lets only global uid 0 write that file
  (proc_sys test_perm; no capability helps): "Can't open sysctl
  kernel/hostname: Permission denied";
- restore: a /sys that is a recursive bind of the host's (what runc's and
  our rootless spec use when the container shares the host's network
  namespace) cannot come back: CRIU binds it without MS_REC, and the kernel
  refuses a non-recursive bind of a mount with locked submounts in a user
  namespace (EINVAL). A container with its own network namespace mounts a
  real sysfs instead, which restores fine.

With ``cap_checkpoint_restore,cap_setgid,cap_sys_admin,cap_sys_chroot+eip``
on the binary, a rootless counter container with its own network namespace,
a sysfs mount and no UTS namespace was dumped and restored by its non-root
owner, through ``criu swrk`` with ``unprivileged=True``. CAP_SYS_ADMIN
makes that binary root-equivalent for everyone who may execute it, so the
fix we print says to restrict who may run it.

Root inside a user namespace (a nested engine) is no better off: reading
/proc/PID/map_files needs CAP_CHECKPOINT_RESTORE in the *initial* user
namespace (fs/proc/base.c), which nobody in a user namespace has; CRIU then
opens mapped files by the path /proc/PID/maps gives, which for a container
with its own root resolves to the wrong file ("Failed to resolve mapping";
measured under ``unshare --user --map-root-user --map-auto --mount --net``).
When its network namespace belongs to the initial user namespace CRIU fails
even earlier ("Can't restore ns back" after locking the network).

``check_unprivileged_checkpoint`` turns these into one error, with the fix.
``blocker`` is the pure decision, for tests.
"""

from __future__ import annotations

import os
import struct

from migrate._record import record
from migrate.errors import UnsupportedError

__all__ = ["check_unprivileged_checkpoint", "criu_unprivileged_options", "CriuCaps",
           "probe", "blocker", "file_capabilities", "parse_vfs_cap", "CAPS"]

# capability(7) numbers.
CAPS = {"cap_setgid": 6, "cap_sys_chroot": 18, "cap_sys_admin": 21,
        "cap_checkpoint_restore": 40}
_WHY = {
    "cap_checkpoint_restore": "read /proc/PID/map_files and choose PIDs on restore",
    "cap_setgid": "drop supplementary groups before it checks the container's user namespace",
    "cap_sys_admin": "setns(2) into the container's mount and network namespaces",
    "cap_sys_chroot": "setns(2) into the container's mount namespace",
}
_NEEDED = ("cap_checkpoint_restore", "cap_setgid", "cap_sys_admin", "cap_sys_chroot")

# struct vfs_cap_data (include/uapi/linux/capability.h).
_VFS_CAP_REVISION_MASK = 0xFF000000
_VFS_CAP_FLAGS_EFFECTIVE = 0x000001
_VFS_CAP_REVISIONS = (0x02000000, 0x03000000)


@record
class CriuCaps:
    """What decides whether a non-root CRIU can work, as probed."""

    euid: int
    in_userns: bool
    criu: str | None                # resolved path; None: not found
    file_caps: frozenset[str]       # permitted and effective file capabilities
    bounding: frozenset[str]        # our bounding set (masks file capabilities)
    no_new_privs: bool              # file capabilities are ignored then
    nosuid: bool                    # criu lives on a nosuid mount: likewise
    cap_last_cap: int


def file_capabilities(path: str) -> frozenset[str]:
    """The capabilities ``path`` gains on exec (permitted, with the effective
    bit set), by our names; empty when it has none we know."""
    try:
        raw = os.getxattr(path, "security.capability")
    except OSError:
        return frozenset()
    return parse_vfs_cap(raw)


def parse_vfs_cap(raw: bytes) -> frozenset[str]:
    """The ``security.capability`` xattr (struct vfs_cap_data, revision 2 or
    3): our names for the permitted capabilities, if the effective bit is set."""
    if len(raw) < 20:
        return frozenset()
    magic, p0, _i0, p1, _i1 = struct.unpack_from("<5I", raw)
    if (magic & _VFS_CAP_REVISION_MASK) not in _VFS_CAP_REVISIONS:
        return frozenset()
    if not magic & _VFS_CAP_FLAGS_EFFECTIVE:    # permitted only: CRIU would not raise them
        return frozenset()
    permitted = p0 | (p1 << 32)
    return frozenset(name for name, bit in CAPS.items() if permitted >> bit & 1)


def _status_fields(proc_root: str) -> dict[str, str]:
    out = {}
    try:
        with open(f"{proc_root}/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def probe(criu_path: str = "criu", *, proc_root: str = "/proc") -> CriuCaps:
    """Look at us and the CRIU binary (no CRIU run, nothing frozen)."""
    from migrate.runtime.rootless import in_user_namespace

    import shutil   # ~5 ms (bz2, lzma); root in the initial namespace never gets here

    path = shutil.which(criu_path) if "/" not in criu_path else (
        criu_path if os.path.exists(criu_path) else None)
    status = _status_fields(proc_root)
    try:
        bounding = int(status.get("CapBnd", "0"), 16)
    except ValueError:
        bounding = 0
    try:
        with open(f"{proc_root}/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 0
    nosuid = False
    if path is not None:
        try:
            nosuid = bool(os.statvfs(path).f_flag & os.ST_NOSUID)
        except OSError:
            pass
    return CriuCaps(
        euid=os.geteuid(), in_userns=in_user_namespace(),
        criu=os.path.realpath(path) if path else None,
        file_caps=file_capabilities(path) if path else frozenset(),
        bounding=frozenset(n for n, bit in CAPS.items() if bounding >> bit & 1),
        no_new_privs=status.get("NoNewPrivs", "0") == "1", nosuid=nosuid, cap_last_cap=last)


def blocker(caps: CriuCaps, config: dict | None = None) -> str | None:
    """Why CRIU cannot checkpoint (and restore) this container as us, with
    the fix; None when nothing we can see stops it. Pure.

    ``config`` is the container's OCI config (state.json's ``config``, or
    the bundle's for restore); without it a rootless container is assumed:
    user and mount namespaces of its own.
    """
    if caps.euid == 0 and not caps.in_userns:
        return None
    if caps.euid == 0:
        return ("CRIU cannot checkpoint from inside a user namespace: reading /proc/PID/map_files "
                "needs CAP_CHECKPOINT_RESTORE in the initial user namespace, which no process "
                "in a user namespace has (and CRIU's fallback, opening mapped files by path, finds "
                "the wrong files for a container with its own root); checkpoint it from the host, "
                "as root or as the user who owns this user namespace")
    if caps.cap_last_cap < CAPS["cap_checkpoint_restore"]:
        return ("CRIU needs CAP_CHECKPOINT_RESTORE to run without root, which this kernel "
                "lacks (Linux 5.9 or later)")
    if caps.criu is None:
        return ("criu not found on PATH (nor at the --criu path given): install CRIU 4.2 or "
                "later (scripts/install-deps.sh puts it in /usr/local/sbin) or pass --criu PATH")
    namespaces = _namespaces(config)
    if "uts" in namespaces:
        return ("the container has its own UTS namespace, which only root can restore: CRIU "
                "writes /proc/sys/kernel/hostname from the initial user namespace, where the "
                "kernel allows that only to uid 0; create the container without a \"uts\" "
                "namespace (and without \"hostname\") to checkpoint it rootless")
    if _binds_host_sys(config, namespaces):
        return ("the container's /sys is a recursive bind of the host's (it shares the host's "
                "network namespace), which CRIU cannot restore in a user namespace (it binds "
                "without MS_REC and the kernel refuses that for a mount with locked submounts); "
                "give the container a network namespace and a sysfs mount at /sys")
    needed = [c for c in _NEEDED if c != "cap_sys_admin" or namespaces & {"mount", "network"}]
    if "cap_sys_chroot" in needed and "mount" not in namespaces:
        needed.remove("cap_sys_chroot")
    if "cap_setgid" in needed and "user" not in namespaces:
        needed.remove("cap_setgid")
    setcap = f"setcap {','.join(needed)}+eip {caps.criu}"
    restrict = (f" (cap_sys_admin makes {caps.criu} root-equivalent for everyone who may run "
                f"it: limit that, e.g. chgrp criu {caps.criu} && chmod 0750 {caps.criu})"
                if "cap_sys_admin" in needed else "")
    if caps.no_new_privs:
        return ("no_new_privs is set for this process (a container, or systemd's "
                "NoNewPrivileges=), so the file capabilities CRIU needs to run without root "
                "are ignored: run migrate where no_new_privs is not set")
    if caps.nosuid:
        return (f"{caps.criu} is on a nosuid mount, so its file capabilities are ignored: "
                f"install CRIU on another file system and run `{setcap}` there")
    have = set(caps.file_caps)
    if "cap_sys_admin" in have:      # the kernel and CRIU accept it for both
        have.add("cap_checkpoint_restore")
    missing = [c for c in needed if c not in have]
    if missing:
        why = "; ".join(f"{c} to {_WHY[c]}" for c in missing)
        return (f"CRIU run by uid {caps.euid} lacks {', '.join(missing)} ({why}): fix: "
                f"`{setcap}`{restrict}")
    masked = [c for c in needed if c not in caps.bounding]
    if masked:
        return (f"{', '.join(masked)} not in this process's capability bounding set, so "
                f"{caps.criu} cannot gain them: run migrate from a session whose bounding set "
                f"keeps them")
    return None


def _namespaces(config: dict | None) -> set[str]:
    if config is None:
        return {"user", "mount", "pid", "ipc", "cgroup"}
    spaces = (config.get("linux") or {}).get("namespaces") or ()
    return {ns.get("type") for ns in spaces if not ns.get("path")}


def _binds_host_sys(config: dict | None, namespaces: set[str]) -> bool:
    if config is None or "network" in namespaces:
        return False
    for m in config.get("mounts") or ():
        options = m.get("options") or ()
        if os.path.normpath(m.get("destination", "")) == "/sys" and (
                m.get("type") in ("bind", "none", None) or "bind" in options or "rbind" in options):
            return True
    return False


def check_unprivileged_checkpoint(criu_path: str = "criu", *, config: dict | None = None,
                                  proc_root: str = "/proc") -> None:
    """Refuse, before anything is frozen, a checkpoint or restore CRIU cannot
    do as this user. Returns at once for root in the initial user namespace.

    Raises UnsupportedError with the reason and the fix.
    """
    from migrate.runtime.rootless import in_user_namespace

    if os.geteuid() == 0 and not in_user_namespace():
        return    # what blocker() answers for root, without probing the binary
    why = blocker(probe(criu_path, proc_root=proc_root), config)
    if why is not None:
        raise UnsupportedError(f"cannot checkpoint or restore without root: {why}")


def criu_unprivileged_options(*, euid: int | None = None) -> dict:
    """The CriuOptions fields a non-root CRIU needs (``CriuOptions(**this, ...)``):
    ``unprivileged=True`` (criu_opts field 67: accept the limits of running
    without root); nothing for root. CRIU keeps its kerndat cache in
    $XDG_RUNTIME_DIR then, and only warns when that is unset."""
    euid = os.geteuid() if euid is None else euid
    return {"unprivileged": True} if euid != 0 else {}
