"""Preparing a container's root filesystem, inside its new mount namespace.

Order (each step needs the one before):
  1. make "/" a slave (or the spec's rootfsPropagation) so nothing we mount
     leaks back to the host;
  2. bind the rootfs onto itself: pivot_root needs a mount point;
  3. the spec's mounts, in order, each target resolved inside the rootfs;
  4. default devices and /dev symlinks unless /dev is bound from the host;
  5. the pre-pivot hooks (createRuntime/createContainer), via the parent;
  6. pivot_root (or MS_MOVE + chroot with --no-pivot).
After the console is set up, ``finalize_rootfs`` masks paths and makes
paths (and maybe "/") read-only.
"""

from __future__ import annotations

import errno
import os
import stat
from migrate._record import record

from migrate.errors import MountError, UsageError
from migrate.runtime.mounts import (ATIME_MASK, LOCKABLE, MountOptions, flag_names,
                                    parse_options)
from migrate.runtime.paths import ensure_mountpoint, mkdir_all_in_root, secure_join
from migrate.runtime.syscalls import MNT, MS, Syscalls

__all__ = ["RootfsPlan", "prepare_rootfs", "finalize_rootfs", "DEFAULT_DEVICES", "mount_one"]

# (path, type, major, minor, mode): what every container gets (runtime-spec
# "Default Devices").
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3, 0o666),
    ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666),
    ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666),
    ("/dev/tty", "c", 5, 0, 0o666),
)
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)


@record
class RootfsPlan:
    rootfs: str
    mounts: tuple                      # oci Mount objects
    devices: tuple                     # oci Device objects
    propagation: str | None
    readonly: bool
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    in_userns: bool                    # mknod is not allowed: bind devices instead
    no_pivot: bool
    cgroup_paths: dict                 # controller -> host dir of the container's cgroup
    mount_label: str | None = None


# statvfs(3) reports mount flags as ST_*, which equal MS_* except ST_RELATIME
# (0x1000, MS_BIND's value; MS_RELATIME is 1 << 21). "strictatime" has no bit:
# it is the absence of noatime and relatime (calculate_f_flags(), fs/statfs.c).
_ST_TO_MS = ((os.ST_RDONLY, MS.RDONLY), (os.ST_NOSUID, MS.NOSUID), (os.ST_NODEV, MS.NODEV),
             (os.ST_NOEXEC, MS.NOEXEC), (os.ST_NOATIME, MS.NOATIME),
             (os.ST_NODIRATIME, MS.NODIRATIME), (os.ST_RELATIME, MS.RELATIME))


def _locked_flags(path: str) -> int:
    """The MS_* flags of the mount at ``path`` that a user namespace may lock."""
    st = os.statvfs(path).f_flag
    flags = 0
    for st_bit, ms_bit in _ST_TO_MS:
        if st & st_bit:
            flags |= ms_bit
    if not flags & (MS.NOATIME | MS.RELATIME):
        flags |= MS.STRICTATIME
    return flags & LOCKABLE


def _err(op, source, target, opts_flags, err: OSError, detail=""):
    return MountError(op, source, target, flag_names(opts_flags), err.errno or errno.EIO, detail)


def _remount_bind(sys: Syscalls, source: str, target: str, opts: MountOptions) -> None:
    """Remount a bind mount with exactly the requested flags.

    In a user namespace the kernel refuses to clear flags it locked on the
    source mount (EPERM). Then keep the locked flags and retry, unless that
    would silently set a flag the user explicitly cleared or change the atime
    mode the user asked for.
    """
    wanted = opts.flags & ~(MS.BIND | MS.REC)
    base = MS.BIND | MS.REMOUNT | (MS.REC if opts.recursive else 0)
    try:
        sys.mount(None, target, None, base | wanted, None)
        return
    except OSError as err:
        if err.errno != errno.EPERM:
            raise _err("remount", source, target, wanted, err) from None
        first = err
    locked = _locked_flags(target)
    conflict = locked & opts.cleared & ~ATIME_MASK
    if conflict:
        raise _err("remount", source, target, wanted, first,
                   f"the source is locked {flag_names(conflict)} and "
                   f"{'rw' if conflict & MS.RDONLY else 'the cleared flag'} was asked for")
    asked_atime = wanted & ATIME_MASK
    if asked_atime and (locked & ATIME_MASK) != asked_atime:
        raise _err("remount", source, target, wanted, first,
                   f"the source's atime mode is locked to "
                   f"{flag_names(locked & ATIME_MASK) or 'strictatime'}")
    if opts.cleared & ATIME_MASK & locked:
        raise _err("remount", source, target, wanted, first,
                   f"the source is locked {flag_names(opts.cleared & ATIME_MASK & locked)}")
    try:
        sys.mount(None, target, None, base | wanted | locked, None)
    except OSError as err:
        raise _err("remount", source, target, wanted | locked, err) from None


def _apply_extras(sys: Syscalls, source, target: str, opts: MountOptions) -> None:
    for prop in opts.propagation:
        try:
            sys.mount(None, target, None, prop, None)
        except OSError as err:
            raise _err("mount propagation", None, target, 0, err) from None
    if opts.rec_set or opts.rec_clr:
        try:
            sys.mount_setattr(target, attr_set=opts.rec_set, attr_clr=opts.rec_clr,
                              recursive=True)
        except OSError as err:
            raise _err("mount_setattr", source, target, 0, err,
                       "recursive mount attributes need Linux 5.12") from None


def mount_one(sys: Syscalls, m, plan: RootfsPlan) -> None:
    """Mount one OCI mount under the rootfs. Raises MountError."""
    opts = parse_options(m.options, m.type)
    if opts.idmap:
        raise UsageError(f"mount {m.destination}: idmapped mounts are not supported yet")
    if m.type == "cgroup" or m.type == "cgroup2":
        return _mount_cgroup(sys, m, plan, opts)
    source = m.source or m.type or "none"
    if opts.bind:
        src = source if os.path.isabs(source) else os.path.join(os.getcwd(), source)
        try:
            is_file = not stat.S_ISDIR(os.stat(src).st_mode)
        except OSError as err:
            raise _err("bind mount", src, m.destination, opts.flags, err,
                       "the source does not exist") from None
        target = ensure_mountpoint(plan.rootfs, m.destination, is_file=is_file)
        try:
            sys.mount(src, target, None, MS.BIND | (MS.REC if opts.recursive else 0), None)
        except OSError as err:
            raise _err("bind mount", src, target, opts.flags, err) from None
        if opts.explicit:
            _remount_bind(sys, src, target, opts)
        _apply_extras(sys, src, target, opts)
        return
    target = ensure_mountpoint(plan.rootfs, m.destination, is_file=False)
    data = opts.data or None
    if plan.mount_label and m.type in ("tmpfs", "devpts", "mqueue"):
        data = ",".join(filter(None, [data, f'context="{plan.mount_label}"']))
    try:
        sys.mount(source, target, m.type, opts.flags, data)
    except OSError as err:
        if m.type == "sysfs" and err.errno == errno.EPERM and plan.in_userns:
            # sysfs cannot be mounted without owning the network namespace:
            # fall back to binding the host's (read-only, like runc does).
            sys.mount("/sys", target, None, MS.BIND | MS.REC, None)
            _remount_bind(sys, "/sys", target, parse_options(
                ("rbind", "nosuid", "noexec", "nodev", "ro")))
        elif m.type == "mqueue" and err.errno == errno.EPERM and plan.in_userns:
            sys.mount("/dev/mqueue", target, None, MS.BIND | MS.REC, None)
        else:
            raise _err("mount", f"{source} ({m.type})", target, opts.flags, err) from None
    _apply_extras(sys, source, target, opts)


def _cgroup_hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str]]:
    """(mount point, fstype) of every cgroup hierarchy we can see."""
    out = []
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split()[0]
            if fstype in ("cgroup", "cgroup2"):
                out.append((left.split()[4], fstype))
    return out


def _mount_cgroup(sys: Syscalls, m, plan: RootfsPlan, opts: MountOptions) -> None:
    """Show the container its own cgroups at ``m.destination``.

    Each hierarchy gets a bind mount of the container's cgroup directory
    (works on v1, hybrid and v2, with or without a cgroup namespace, and in
    user namespaces where cgroup v1 cannot be mounted).
    """
    flags = opts.flags & (MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC)
    dest_root = m.destination.rstrip("/") or "/"
    hierarchies = _cgroup_hierarchies()
    paths = sorted(set(plan.cgroup_paths.values()))
    pure_v2 = any(mp == "/sys/fs/cgroup" and t == "cgroup2" for mp, t in hierarchies)
    binds = []
    for mp, _t in hierarchies:
        for p in paths:
            if p == mp or p.startswith(mp.rstrip("/") + "/"):
                rel = "" if pure_v2 else os.path.basename(mp)
                binds.append((p, os.path.join(dest_root, rel) if rel else dest_root))
                break
    if not pure_v2:
        target = ensure_mountpoint(plan.rootfs, dest_root, is_file=False)
        try:
            sys.mount("tmpfs", target, "tmpfs", MS.NOSUID | MS.NODEV | MS.NOEXEC, "mode=755")
        except OSError as err:
            raise _err("mount", "tmpfs", target, 0, err) from None
    for src, dest in binds:
        target = ensure_mountpoint(plan.rootfs, dest, is_file=False)
        try:
            sys.mount(src, target, None, MS.BIND | MS.REC, None)
            sys.mount(None, target, None, MS.BIND | MS.REMOUNT | MS.REC | flags, None)
        except OSError as err:
            raise _err("bind mount", src, target, flags, err) from None
        name = os.path.basename(dest)
        if "," in name:   # co-mounted controllers: cpu -> cpu,cpuacct
            for part in name.split(","):
                link = os.path.join(os.path.dirname(target), part)
                if not os.path.lexists(link):
                    os.symlink(name, link)
    if not pure_v2 and flags & MS.RDONLY:
        target = secure_join(plan.rootfs, dest_root)
        sys.mount(None, target, None, MS.BIND | MS.REMOUNT | MS.NOSUID | MS.NODEV
                  | MS.NOEXEC | MS.RDONLY, None)


def _dev_bound_from_host(plan: RootfsPlan) -> bool:
    return any(m.destination.rstrip("/") == "/dev" and parse_options(m.options, m.type).bind
               for m in plan.mounts)


def _create_devices(sys: Syscalls, plan: RootfsPlan) -> None:
    wanted = {d[0]: d for d in DEFAULT_DEVICES}
    for dev in plan.devices:
        wanted[dev.path] = (dev.path, dev.type, dev.major, dev.minor,
                            dev.file_mode if dev.file_mode is not None else 0o666, dev.uid, dev.gid)
    for entry in wanted.values():
        path, kind, major, minor, mode = entry[:5]
        uid, gid = (entry[5], entry[6]) if len(entry) > 5 else (None, None)
        target = ensure_mountpoint(plan.rootfs, path, is_file=True) if plan.in_userns else \
            os.path.join(mkdir_all_in_root(plan.rootfs, os.path.dirname(path)), os.path.basename(path))
        if plan.in_userns:
            # mknod is not allowed in a user namespace: bind the host's node.
            try:
                sys.mount(path, target, None, MS.BIND, None)
            except OSError as err:
                raise _err("bind mount", path, target, 0, err) from None
            continue
        kind_bits = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[kind]
        if os.path.lexists(target):
            os.unlink(target)
        old = os.umask(0)
        try:
            sys.mknod(target, kind_bits | (mode & 0o7777), os.makedev(major, minor))
        finally:
            os.umask(old)
        if uid is not None or gid is not None:
            sys.chown(target, uid if uid is not None else 0, gid if gid is not None else 0)
    for src, dest in DEV_SYMLINKS:
        host = secure_join(plan.rootfs, dest)
        if not os.path.lexists(host):
            os.symlink(src, host)
    ptmx = secure_join(plan.rootfs, "/dev/ptmx")
    if os.path.lexists(ptmx) and not os.path.islink(ptmx):
        os.unlink(ptmx)
    if not os.path.lexists(ptmx):
        os.symlink("pts/ptmx", ptmx)
    if os.path.exists("/proc/kcore"):
        core = secure_join(plan.rootfs, "/dev/core")
        if not os.path.lexists(core):
            os.symlink("/proc/kcore", core)


def prepare_rootfs(sys: Syscalls, plan: RootfsPlan, before_pivot=None) -> None:
    """Steps 1-6 above. Raises MountError, UsageError, OSError."""
    from migrate.runtime.mounts import PROPAGATION

    prop = PROPAGATION.get(plan.propagation or "rslave")
    if prop is None:
        raise UsageError(f"invalid rootfsPropagation {plan.propagation!r}")
    if prop & MS.SHARED:
        prop = MS.SLAVE | MS.REC   # made shared again after pivot_root
    sys.mount(None, "/", None, prop, None)
    try:
        sys.mount(plan.rootfs, plan.rootfs, None, MS.BIND | MS.REC, None)
    except OSError as err:
        raise _err("bind mount", plan.rootfs, plan.rootfs, 0, err) from None
    for m in plan.mounts:
        mount_one(sys, m, plan)
    if not _dev_bound_from_host(plan):
        _create_devices(sys, plan)
    if before_pivot is not None:
        before_pivot()
    os.chdir(plan.rootfs)
    if plan.no_pivot:
        _move_root(sys, plan.rootfs)
    else:
        _pivot_root(sys, plan.rootfs)
    if plan.propagation and PROPAGATION[plan.propagation] & MS.SHARED:
        sys.mount(None, "/", None, PROPAGATION[plan.propagation], None)


def _pivot_root(sys: Syscalls, rootfs: str) -> None:
    # pivot_root(".", ".") stacks the old root on top of the new one; then
    # unmounting "." detaches the old root without needing a directory for
    # it inside the container (see pivot_root(2), NOTES).
    oldroot = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    newroot = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(newroot)
        try:
            sys.pivot_root(".", ".")
        except OSError as err:
            raise _err("pivot_root", None, rootfs, 0, err,
                       "use --no-pivot when the rootfs is on a ramfs") from None
        os.fchdir(oldroot)
        # The old root may be shared with the host: make it slave first so
        # the lazy unmount does not propagate out.
        sys.mount(None, ".", None, MS.SLAVE | MS.REC, None)
        sys.umount(".", MNT.DETACH)
        os.chdir("/")
    finally:
        os.close(oldroot)
        os.close(newroot)


def _move_root(sys: Syscalls, rootfs: str) -> None:
    try:
        sys.mount(rootfs, "/", None, MS.MOVE, None)
    except OSError as err:
        raise _err("move mount", rootfs, "/", 0, err) from None
    os.chroot(".")
    os.chdir("/")


def _remount_ro(sys: Syscalls, path: str, recursive: bool) -> None:
    # Keep the flags the kernel may have locked (nosuid, nodev, ...), or the
    # remount fails with EPERM in a user namespace.
    locked = _locked_flags(path)
    flags = MS.BIND | MS.REMOUNT | MS.RDONLY | locked | (MS.REC if recursive else 0)
    sys.mount(None, path, None, flags, None)


def finalize_rootfs(sys: Syscalls, plan: RootfsPlan) -> None:
    """Masked and read-only paths, then a read-only "/"; after pivot_root."""
    for path in plan.readonly_paths:
        try:
            sys.mount(path, path, None, MS.BIND | MS.REC, None)
            _remount_ro(sys, path, recursive=True)
        except FileNotFoundError:
            continue
        except OSError as err:
            if err.errno == errno.ENOENT:
                continue
            raise _err("readonly path", path, path, MS.RDONLY, err) from None
    for path in plan.masked_paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        try:
            if stat.S_ISDIR(st.st_mode):
                sys.mount("tmpfs", path, "tmpfs", MS.RDONLY, None)
            else:
                sys.mount("/dev/null", path, None, MS.BIND, None)
        except OSError as err:
            raise _err("mask", None, path, 0, err) from None
    if plan.readonly:
        try:
            _remount_ro(sys, "/", recursive=False)
        except OSError as err:
            raise _err("remount", None, "/", MS.RDONLY, err) from None
