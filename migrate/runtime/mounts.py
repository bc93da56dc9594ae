"""Mount options of the runtime-spec, parsed into what mount(2) and
mount_setattr(2) need, and the pure rules for remounting a bind mount.
The executor is ``rootfs.py``.

Every flag keeps whether it was explicitly set or explicitly cleared: a bind
mount's remount must know that ``rw`` was asked for (and fail if the kernel
keeps the source read-only) rather than silently inherit ``ro``.

The rules for a bind mount with flags (runtime-spec "Linux mount options",
mount(2) "Remounting an existing mount"):

- the remount passes exactly the requested flags: a missing ``ro``,
  ``nosuid``, ``nodev``, ``noexec`` or ``nosymfollow`` means cleared, as
  mount(2) does;
- the atime group (``noatime``/``relatime``/``strictatime`` plus
  ``nodiratime``) is one setting: when no atime word is given the kernel
  keeps the mount's atime on a remount; when any is given the whole group is
  set, the mode being the one asked, or for words that only clear a mode
  (``atime``, ``nostrictatime``, ``norelatime``) the kernel default
  (``relatime``; ``strictatime`` for ``norelatime``, the only mode that is
  not relatime without being noatime), and ``nodiratime`` only if asked;
- in a user namespace the kernel locks ro, nosuid, nodev, noexec and the
  atime group on mounts inherited from a more privileged namespace
  (mount_namespaces(7); ``can_change_locked_flags()`` in fs/namespace.c).
  A remount that would clear a locked flag fails with EPERM; the retry keeps
  the locked flags unless that contradicts a flag the user asked for
  explicitly (``conflicts``);
- superblock flags (sync, dirsync, mand, lazytime, iversion) belong to the
  file system: a bind mount cannot change them, so asking for one the source
  does not have is a conflict too.
"""

from __future__ import annotations

from migrate._record import record

from migrate.errors import UsageError
from migrate.runtime.syscalls import MS

__all__ = ["sb_flags_of", "MountOptions", "parse_options", "ATIME_MASK", "ATIME_GROUP", "LOCKABLE",
           "MOUNT_ATTR", "MNT_FLAGS", "SB_FLAGS", "SB_CHECKED", "flag_names", "PROPAGATION", "check_flags",
           "new_mount_flags", "plan_remount", "violates_locks", "keep_locked", "conflicts", "statvfs_flags",
           "idmap_ranges",
           "rec_conflicts", "Conflict", "explain"]

# Flags set / cleared by an option word (mount(8) vocabulary).
_SET = {
    "ro": MS.RDONLY, "nosuid": MS.NOSUID, "nodev": MS.NODEV, "noexec": MS.NOEXEC,
    "sync": MS.SYNCHRONOUS, "dirsync": MS.DIRSYNC, "mand": MS.MANDLOCK,
    "noatime": MS.NOATIME, "nodiratime": MS.NODIRATIME, "relatime": MS.RELATIME,
    "strictatime": MS.STRICTATIME, "lazytime": MS.LAZYTIME, "nosymfollow": MS.NOSYMFOLLOW,
    "iversion": MS.I_VERSION, "silent": MS.SILENT,
}
_CLEAR = {
    "rw": MS.RDONLY, "suid": MS.NOSUID, "dev": MS.NODEV, "exec": MS.NOEXEC,
    "async": MS.SYNCHRONOUS, "nomand": MS.MANDLOCK, "atime": MS.NOATIME,
    "diratime": MS.NODIRATIME, "norelatime": MS.RELATIME, "nostrictatime": MS.STRICTATIME,
    "nolazytime": MS.LAZYTIME, "symfollow": MS.NOSYMFOLLOW, "noiversion": MS.I_VERSION,
    "loud": MS.SILENT,
}
# The word that names a flag's absence, for messages ("rw", "suid", ...).
# "nodirsync" is not a mount(8) word but names the state clearly.
_ABSENT = {flag: word for word, flag in _CLEAR.items()} | {MS.DIRSYNC: "nodirsync"}
PROPAGATION = {
    "private": MS.PRIVATE, "rprivate": MS.PRIVATE | MS.REC,
    "shared": MS.SHARED, "rshared": MS.SHARED | MS.REC,
    "slave": MS.SLAVE, "rslave": MS.SLAVE | MS.REC,
    "unbindable": MS.UNBINDABLE, "runbindable": MS.UNBINDABLE | MS.REC,
}

# The kernel treats these as one mode: setting one replaces the others.
ATIME_MASK = MS.NOATIME | MS.RELATIME | MS.STRICTATIME
# The kernel's MNT_ATIME_MASK: the mode plus nodiratime, set and locked as one.
ATIME_GROUP = ATIME_MASK | MS.NODIRATIME
# Per-mount flags: what a bind remount (do_reconfigure_mnt) changes.
MNT_FLAGS = MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.NOSYMFOLLOW | ATIME_GROUP
# Superblock flags: shared by every mount of the file system.
SB_FLAGS = MS.SYNCHRONOUS | MS.DIRSYNC | MS.MANDLOCK | MS.LAZYTIME | MS.I_VERSION
# The superblock flags a bind mount checks against its source: statvfs or
# mountinfo show them. (SB_I_VERSION is on for most disk file systems since
# Linux 6.x without being shown anywhere, so "iversion" is not checked.)
SB_CHECKED = MS.SYNCHRONOUS | MS.DIRSYNC | MS.MANDLOCK | MS.LAZYTIME
# Flags the kernel locks on mounts inherited by a less privileged user
# namespace (mount_namespaces(7), "restrictions on mount namespaces"): the
# first four can be added but not cleared; the atime group cannot change.
_LOCK_BITS = MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC
LOCKABLE = _LOCK_BITS | ATIME_GROUP


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


# Recursive options: word -> (set, clear). mount_setattr(2) takes an atime
# mode only with the whole MOUNT_ATTR__ATIME in attr_clr (EINVAL otherwise),
# so a word that only clears a mode selects the kernel default, as the
# non-recursive words do (see the module docstring).
_REC = {
    "rro": (MOUNT_ATTR.RDONLY, 0), "rrw": (0, MOUNT_ATTR.RDONLY),
    "rnosuid": (MOUNT_ATTR.NOSUID, 0), "rsuid": (0, MOUNT_ATTR.NOSUID),
    "rnodev": (MOUNT_ATTR.NODEV, 0), "rdev": (0, MOUNT_ATTR.NODEV),
    "rnoexec": (MOUNT_ATTR.NOEXEC, 0), "rexec": (0, MOUNT_ATTR.NOEXEC),
    "rnodiratime": (MOUNT_ATTR.NODIRATIME, 0), "rdiratime": (0, MOUNT_ATTR.NODIRATIME),
    "rrelatime": (MOUNT_ATTR.RELATIME, MOUNT_ATTR._ATIME),
    "rnorelatime": (MOUNT_ATTR.STRICTATIME, MOUNT_ATTR._ATIME),
    "rnoatime": (MOUNT_ATTR.NOATIME, MOUNT_ATTR._ATIME),
    "ratime": (MOUNT_ATTR.RELATIME, MOUNT_ATTR._ATIME),
    "rstrictatime": (MOUNT_ATTR.STRICTATIME, MOUNT_ATTR._ATIME),
    "rnostrictatime": (MOUNT_ATTR.RELATIME, MOUNT_ATTR._ATIME),
    "rnosymfollow": (MOUNT_ATTR.NOSYMFOLLOW, 0), "rsymfollow": (0, MOUNT_ATTR.NOSYMFOLLOW),
}
_ATTR_MODE = {MOUNT_ATTR.RELATIME: MS.RELATIME, MOUNT_ATTR.NOATIME: MS.NOATIME,
              MOUNT_ATTR.STRICTATIME: MS.STRICTATIME}
# MOUNT_ATTR_* -> MS_* for the bits that have both.
_ATTR_TO_MS = ((MOUNT_ATTR.RDONLY, MS.RDONLY), (MOUNT_ATTR.NOSUID, MS.NOSUID),
               (MOUNT_ATTR.NODEV, MS.NODEV), (MOUNT_ATTR.NOEXEC, MS.NOEXEC),
               (MOUNT_ATTR.NODIRATIME, MS.NODIRATIME), (MOUNT_ATTR.NOSYMFOLLOW, MS.NOSYMFOLLOW))


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
    rec_words: tuple[str, ...] = ()   # the recursive words, for messages
    idmap: bool = False
    ridmap: bool = False
    copy_up: bool = False      # tmpcopyup (runc's extension): see runtime/copyup.py
    data: str = ""

    @property
    def explicit(self) -> bool:
        """True when any flag beyond bind was asked for, set or cleared."""
        return bool((self.flags & ~(MS.BIND | MS.REC | MS.SILENT)) or
                    (self.cleared & ~MS.SILENT))


def parse_options(options, mount_type: str | None = None) -> MountOptions:
    """Raises UsageError for options we cannot honour."""
    flags = cleared = rec_set = rec_clr = 0
    propagation: list[int] = []
    data: list[str] = []
    rec_words: list[str] = []
    bind = recursive = remount = idmap = ridmap = copy_up = False
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
            rec_words.append(opt)
        elif opt in ("idmap", "ridmap"):
            idmap = True
            ridmap = ridmap or opt == "ridmap"
        elif opt in ("defaults", ""):
            # mount(8)'s "defaults" spells out rw,suid,dev,exec,async; like
            # runc it changes nothing here, so it never clears a flag the
            # kernel locked.
            continue
        elif opt == "tmpcopyup":
            # Only tmpfs mounts use it; runc ignores it elsewhere too.
            copy_up = True
        else:
            data.append(opt)
    if mount_type == "bind":
        bind = True
    if bind:
        flags |= MS.BIND | (MS.REC if recursive else 0)
    if remount and not bind:
        flags |= MS.REMOUNT
    return MountOptions(flags=flags, cleared=cleared, bind=bind, recursive=recursive,
                        remount=remount, propagation=tuple(propagation), rec_set=rec_set,
                        rec_clr=rec_clr, rec_words=tuple(rec_words), idmap=idmap,
                        ridmap=ridmap, copy_up=copy_up, data=",".join(data))


def flag_names(flags: int) -> str:
    words = {v: k for k, v in _SET.items()}
    names = [words[bit] for bit in sorted(words) if flags & bit]
    return ",".join(names)


def check_flags(flags: int, context: str) -> None:
    if (flags & ATIME_MASK) & ((flags & ATIME_MASK) - 1):
        raise UsageError(f"{context}: more than one atime mode")


# -- the remount of a bind mount ----------------------------------------------

def _atime_words(opts: MountOptions) -> int:
    return (opts.flags | opts.cleared) & ATIME_GROUP


def new_mount_flags(opts: MountOptions) -> int:
    """The flags for mount(2) of a new (not bind) mount: the asked ones, with
    ``norelatime`` alone meaning strictatime (the kernel would pick relatime)."""
    flags = opts.flags
    if opts.cleared & MS.RELATIME and not flags & ATIME_MASK:
        flags |= MS.STRICTATIME
    return flags


def plan_remount(opts: MountOptions) -> int:
    """The MS_* mount flags (without MS_BIND|MS_REMOUNT) that remount a bind
    mount to exactly what ``opts`` asks. See the module docstring."""
    flags = opts.flags & MNT_FLAGS
    if _atime_words(opts):
        if not flags & ATIME_MASK:
            flags |= MS.STRICTATIME if opts.cleared & MS.RELATIME else MS.RELATIME
    return flags


def violates_locks(flags: int, locked: int) -> bool:
    """Would remounting with ``flags`` clear a flag the kernel locks, or
    change the atime group, of a mount whose lockable flags are ``locked``?"""
    if locked & _LOCK_BITS & ~flags:
        return True
    # No atime flag at all: the kernel keeps the mount's atime group.
    return bool(flags & ATIME_GROUP) and (flags & ATIME_GROUP) != (locked & ATIME_GROUP)


def keep_locked(flags: int, locked: int) -> int:
    """``flags`` changed as little as possible to keep ``locked``."""
    flags |= locked & _LOCK_BITS
    if flags & ATIME_GROUP:
        flags = (flags & ~ATIME_GROUP) | (locked & ATIME_GROUP)
    return flags


@record
class Conflict:
    asked: str        # the option word asked for ("rw", "strictatime", "sync")
    got: str          # what the mount has instead ("ro", "noatime", "async")
    flag: int         # the MS_* bit in question


def _mode_word(flags: int) -> str:
    return flag_names(flags & ATIME_MASK) or "strictatime"


def conflicts(opts: MountOptions, result: int, *, check_sb: bool = False) -> tuple[Conflict, ...]:
    """The flags asked for explicitly that a mount with ``result`` (MS_*, one
    atime mode bit, as ``statvfs_flags`` gives) does not honour.

    Unmentioned flags never conflict: they are what a locked or read-only
    source adds. Superblock flags are checked with ``check_sb`` (bind mounts).
    """
    out = []
    mask = (MNT_FLAGS & ~ATIME_GROUP) | (SB_CHECKED if check_sb else 0)
    for word, flag in _SET.items():
        if flag & mask and opts.flags & flag and not result & flag:
            out.append(Conflict(asked=word, got=_ABSENT[flag], flag=flag))
    for word, flag in _CLEAR.items():
        if flag & mask and opts.cleared & flag and result & flag:
            out.append(Conflict(asked=word, got=flag_names(flag), flag=flag))
    mode = opts.flags & ATIME_MASK
    got_mode = result & ATIME_MASK or MS.STRICTATIME
    if mode and mode != got_mode:
        out.append(Conflict(asked=flag_names(mode), got=_mode_word(got_mode), flag=mode))
    for word in ("atime", "norelatime", "nostrictatime"):
        flag = _CLEAR[word]
        if opts.cleared & flag and got_mode == flag:
            out.append(Conflict(asked=word, got=_mode_word(got_mode), flag=flag))
    if opts.flags & MS.NODIRATIME and not result & MS.NODIRATIME:
        out.append(Conflict(asked="nodiratime", got="diratime", flag=MS.NODIRATIME))
    if opts.cleared & MS.NODIRATIME and result & MS.NODIRATIME:
        out.append(Conflict(asked="diratime", got="nodiratime", flag=MS.NODIRATIME))
    return tuple(out)


def explain(found, template: str) -> str:
    """One clause per conflict; ``template`` names ``{got}`` and ``{asked}``."""
    return "; ".join(template.format(got=c.got, asked=c.asked) for c in found)


# statvfs(3) reports mount flags as ST_*, which equal MS_* except ST_RELATIME
# (0x1000, MS_BIND's value; MS_RELATIME is 1 << 21) and ST_NOSYMFOLLOW
# (0x2000). "strictatime" has no bit: it is the absence of noatime and
# relatime (calculate_f_flags(), fs/statfs.c). ST_RDONLY, ST_SYNCHRONOUS and
# ST_MANDLOCK include the superblock's flags.
_ST_TO_MS = ((0x1, MS.RDONLY), (0x2, MS.NOSUID), (0x4, MS.NODEV), (0x8, MS.NOEXEC),
             (0x10, MS.SYNCHRONOUS), (0x40, MS.MANDLOCK), (0x400, MS.NOATIME),
             (0x800, MS.NODIRATIME), (0x1000, MS.RELATIME), (0x2000, MS.NOSYMFOLLOW))


def statvfs_flags(f_flag: int) -> int:
    """statvfs ``f_flag`` -> MS_* flags with exactly one atime mode bit."""
    flags = 0
    for st_bit, ms_bit in _ST_TO_MS:
        if f_flag & st_bit:
            flags |= ms_bit
    if not flags & (MS.NOATIME | MS.RELATIME):
        flags |= MS.STRICTATIME
    return flags


# Superblock options in /proc/self/mountinfo that statvfs does not report.
_SB_WORDS = {"dirsync": MS.DIRSYNC, "lazytime": MS.LAZYTIME, "sync": MS.SYNCHRONOUS,
             "mand": MS.MANDLOCK, "ro": MS.RDONLY}


def rec_conflicts(opts: MountOptions, tree: list[int]) -> tuple[Conflict, ...]:
    """Why mount_setattr(AT_RECURSIVE) with ``opts.rec_*`` cannot apply to a
    tree of locked mounts whose flags (``statvfs_flags``) are ``tree``."""
    def word(attr: int, default: str) -> str:
        return next((w for w in reversed(opts.rec_words) if _REC[w][1] & attr), default)

    out = []
    for attr, ms in _ATTR_TO_MS:
        if ms & _LOCK_BITS and opts.rec_clr & attr and any(f & ms for f in tree):
            out.append(Conflict(asked=word(attr, "r" + _ABSENT[ms]), got=flag_names(ms), flag=ms))
    if opts.rec_clr & MOUNT_ATTR._ATIME:
        want = _ATTR_MODE[opts.rec_set & MOUNT_ATTR._ATIME]
        bad = next((f for f in tree if (f & ATIME_MASK) != want), None)
        if bad is not None:
            out.append(Conflict(asked=word(MOUNT_ATTR._ATIME, "r" + flag_names(want)),
                                got=_mode_word(bad), flag=want))
    if (opts.rec_set | opts.rec_clr) & MOUNT_ATTR.NODIRATIME:
        nodir = bool(opts.rec_set & MOUNT_ATTR.NODIRATIME)
        if any(bool(f & MS.NODIRATIME) != nodir for f in tree):
            out.append(Conflict(asked="rnodiratime" if nodir else "rdiratime",
                                got="diratime" if nodir else "nodiratime", flag=MS.NODIRATIME))
    return tuple(out)


def sb_flags_of(super_options: str) -> int:
    """The superblock flags named in a mountinfo super-options field."""
    flags = 0
    for word in super_options.split(","):
        flags |= _SB_WORDS.get(word, 0)
    return flags


# -- idmapped mounts -----------------------------------------------------------

def idmap_ranges(m, linux, *, container_userns: bool):
    """The (uid_map, gid_map) ranges of an idmapped mount, each a tuple of
    (id in the mount's user namespace, host id, size) as in uid_map.

    The mount's own uidMappings/gidMappings win; without them the
    container's user namespace mappings are used (runtime-spec "idmap").
    Raises UsageError when neither exists or only one of the pair is given.
    """
    opts_idmap = any(o in ("idmap", "ridmap") for o in m.options)
    if (m.uid_mappings or m.gid_mappings) and not opts_idmap:
        raise UsageError(f"mount {m.destination}: uidMappings/gidMappings need the idmap "
                         f"or ridmap option")
    if bool(m.uid_mappings) != bool(m.gid_mappings):
        raise UsageError(f"mount {m.destination}: uidMappings and gidMappings go together")
    if m.uid_mappings:
        uids, gids = m.uid_mappings, m.gid_mappings
    elif container_userns and linux.uid_mappings and linux.gid_mappings:
        uids, gids = linux.uid_mappings, linux.gid_mappings
    else:
        raise UsageError(f"mount {m.destination}: idmap without uidMappings/gidMappings "
                         f"needs a new user namespace with mappings")
    return (tuple((x.container_id, x.host_id, x.size) for x in uids),
            tuple((x.container_id, x.host_id, x.size) for x in gids))
