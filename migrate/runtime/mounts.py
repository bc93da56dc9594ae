"""Mount options of the runtime-spec, parsed into what mount(2) and
mount_setattr(2) need. Pure: the executor is ``rootfs.py``.

Every flag keeps whether it was explicitly set or explicitly cleared: a bind
mount's remount must know that ``rw`` was asked for (and fail if the kernel
keeps the source read-only) rather than silently inherit ``ro``.
"""

from __future__ import annotations

from migrate._record import record

from migrate.errors import UsageError
from migrate.runtime.syscalls import MS

__all__ = ["MountOptions", "parse_options", "ATIME_MASK", "LOCKABLE", "MOUNT_ATTR",
           "flag_names", "PROPAGATION"]

# Flags set / cleared by an option word (mount(8) vocabulary).
_SET = {
    "ro": MS.RDONLY, "nosuid": MS.NOSUID, "nodev": MS.NODEV, "noexec": MS.NOEXEC,
    "sync": MS.SYNCHRONOUS, "dirsync": MS.DIRSYNC, "mand": MS.MANDLOCK,
    "noatime": MS.NOATIME, "nodiratime": MS.NODIRATIME, "relatime": MS.RELATIME,
    "strictatime": MS.STRICTATIME, "lazytime": MS.LAZYTIME, "nosymfollow": MS.NOSYMFOLLOW,
}
_CLEAR = {
    "rw": MS.RDONLY, "suid": MS.NOSUID, "dev": MS.NODEV, "exec": MS.NOEXEC,
    "async": MS.SYNCHRONOUS, "nomand": MS.MANDLOCK, "atime": MS.NOATIME,
    "diratime": MS.NODIRATIME, "norelatime": MS.RELATIME, "nostrictatime": MS.STRICTATIME,
    "nolazytime": MS.LAZYTIME, "symfollow": MS.NOSYMFOLLOW,
}
PROPAGATION = {
    "private": MS.PRIVATE, "rprivate": MS.PRIVATE | MS.REC,
    "shared": MS.SHARED, "rshared": MS.SHARED | MS.REC,
    "slave": MS.SLAVE, "rslave": MS.SLAVE | MS.REC,
    "unbindable": MS.UNBINDABLE, "runbindable": MS.UNBINDABLE | MS.REC,
}

# The kernel treats these as one mode: setting one replaces the others.
ATIME_MASK = MS.NOATIME | MS.RELATIME | MS.STRICTATIME
# Flags the kernel locks on mounts inherited by a less privileged user
# namespace (mount_namespaces(7), "restrictions on mount namespaces").
LOCKABLE = MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC | ATIME_MASK | MS.NODIRATIME


class MOUNT_ATTR:
    """mount_setattr(2) attributes (include/uapi/linux/mount.h)."""

    RDONLY = 0x1
    NOSUID = 0x2
    NODEV = 0x4
    NOEXEC = 0x8
    _ATIME = 0x70
    RELATIME = 0x0
    NOATIME = 0x10
    STRICTATIME = 0x20
    NODIRATIME = 0x80
    IDMAP = 0x100000
    NOSYMFOLLOW = 0x200000


# Recursive options: word -> (set, clear).
_REC = {
    "rro": (MOUNT_ATTR.RDONLY, 0), "rrw": (0, MOUNT_ATTR.RDONLY),
    "rnosuid": (MOUNT_ATTR.NOSUID, 0), "rsuid": (0, MOUNT_ATTR.NOSUID),
    "rnodev": (MOUNT_ATTR.NODEV, 0), "rdev": (0, MOUNT_ATTR.NODEV),
    "rnoexec": (MOUNT_ATTR.NOEXEC, 0), "rexec": (0, MOUNT_ATTR.NOEXEC),
    "rnodiratime": (MOUNT_ATTR.NODIRATIME, 0), "rdiratime": (0, MOUNT_ATTR.NODIRATIME),
    "rrelatime": (MOUNT_ATTR.RELATIME, MOUNT_ATTR._ATIME),
    "rnorelatime": (0, 0),  # runc: no-op, there is no "not relatime" attribute
    "rnoatime": (MOUNT_ATTR.NOATIME, MOUNT_ATTR._ATIME),
    "ratime": (0, MOUNT_ATTR.NOATIME),
    "rstrictatime": (MOUNT_ATTR.STRICTATIME, MOUNT_ATTR._ATIME),
    "rnostrictatime": (0, MOUNT_ATTR.STRICTATIME),
    "rnosymfollow": (MOUNT_ATTR.NOSYMFOLLOW, 0), "rsymfollow": (0, MOUNT_ATTR.NOSYMFOLLOW),
}


@record
class MountOptions:
    flags: int = 0             # MS_* to set (including MS_BIND|MS_REC for rbind)
    cleared: int = 0           # MS_* explicitly cleared (rw, suid, dev, exec, atime ...)
    bind: bool = False
    recursive: bool = False    # rbind
    remount: bool = False
    propagation: tuple[int, ...] = ()
    rec_set: int = 0           # mount_setattr(AT_RECURSIVE) attr_set
    rec_clr: int = 0
    idmap: bool = False
    ridmap: bool = False
    data: str = ""

    @property
    def explicit(self) -> bool:
        """True when any flag beyond bind was asked for, set or cleared."""
        return bool((self.flags & ~(MS.BIND | MS.REC)) or self.cleared)


def parse_options(options, mount_type: str | None = None) -> MountOptions:
    """Raises UsageError for options that contradict each other."""
    flags = cleared = rec_set = rec_clr = 0
    propagation: list[int] = []
    data: list[str] = []
    bind = recursive = remount = idmap = ridmap = False
    for opt in options:
        if opt in _SET:
            flag = _SET[opt]
            if flag & ATIME_MASK:
                flags &= ~ATIME_MASK
                cleared &= ~ATIME_MASK
            flags |= flag
            cleared &= ~flag
        elif opt in _CLEAR:
            flag = _CLEAR[opt]
            flags &= ~flag
            cleared |= flag
        elif opt in ("bind", "rbind"):
            bind = True
            recursive = recursive or opt == "rbind"
        elif opt == "remount":
            remount = True
        elif opt in PROPAGATION:
            propagation.append(PROPAGATION[opt])
        elif opt in _REC:
            s, c = _REC[opt]
            rec_set = (rec_set & ~c) | s
            rec_clr = (rec_clr & ~s) | c
        elif opt in ("idmap", "ridmap"):
            idmap = True
            ridmap = ridmap or opt == "ridmap"
        elif opt in ("defaults", ""):
            continue
        else:
            data.append(opt)
    if mount_type == "bind":
        bind = True
    if bind:
        flags |= MS.BIND | (MS.REC if recursive else 0)
    return MountOptions(flags=flags, cleared=cleared, bind=bind, recursive=recursive,
                        remount=remount, propagation=tuple(propagation), rec_set=rec_set,
                        rec_clr=rec_clr, idmap=idmap, ridmap=ridmap, data=",".join(data))


def flag_names(flags: int) -> str:
    words = {v: k for k, v in _SET.items()}
    names = [words[bit] for bit in sorted(words) if flags & bit]
    return ",".join(names)


def check_flags(flags: int, context: str) -> None:
    if (flags & ATIME_MASK) & ((flags & ATIME_MASK) - 1):
        raise UsageError(f"{context}: more than one atime mode")
