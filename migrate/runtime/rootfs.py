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
from migrate._record import field, record

from migrate.errors import MountError, UsageError
from migrate.runtime.mountinfo import descendants, parse_mountinfo, read_mountinfo
from migrate.runtime.mounts import (LOCKABLE, SB_CHECKED, MountOptions, conflicts,
                                    explain, flag_names, keep_locked,
                                    new_mount_flags, parse_options,
                                    plan_remount, rec_conflicts, statvfs_flags,
                                    violates_locks)
from migrate.runtime.paths import ensure_mountpoint, mkdir_all_in_root, secure_join
from migrate.runtime.syscalls import MNT, MS, Syscalls

__all__ = ["RootfsPlan", "prepare_rootfs", "finalize_rootfs", "reopen_dev_null", "DEFAULT_DEVICES",
           "mount_one", "bind_sources", "open_in_mount_namespace", "close_bind_sources"]

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
    idmapped: tuple[tuple[int, int], ...] = ()   # (index in mounts, detached tree fd)
    # index in mounts -> O_PATH fd of the bind source, opened by the runtime
    # (``open_in_mount_namespace``) and received by the init.
    source_fds: dict = field(default_factory=dict)


_REMOUNT = MS.BIND | MS.REMOUNT
_LOCKED = "the source is locked {got} in this user namespace and {asked} was asked for"
_KEPT = "the source file system is {got} and {asked} was asked for"


def _flags_at(path: str) -> int:
    """The MS_* flags of the mount at ``path`` (statvfs), one atime mode bit."""
    return statvfs_flags(os.statvfs(path).f_flag)


def _locked_flags(path: str) -> int:
    """The MS_* flags of the mount at ``path`` that a user namespace may lock."""
    return _flags_at(path) & LOCKABLE


def _mount_id(path: str) -> int:
    # fdinfo's mnt_id names the mount exactly, where a path may be stacked
    # or spelled differently in mountinfo.
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    raise OSError(errno.ENOENT, f"no mnt_id for {path}", path)


def _submounts(path: str) -> list[str]:
    """Mount points below the mount at ``path`` (what an rbind brought),
    parents first; a path stacked twice is listed once (a remount reaches
    only the top of a stack)."""
    seen: list[str] = []
    for e in descendants(read_mountinfo(), _mount_id(path)):
        if e.mount_point not in seen:
            seen.append(e.mount_point)
    return seen


def _sb_flags(path: str) -> int:
    mnt_id = _mount_id(path)
    return next((e.sb_flags for e in read_mountinfo() if e.mount_id == mnt_id), 0)


def _err(op, source, target, opts_flags, err: OSError, detail=""):
    return MountError(op, source, target, flag_names(opts_flags), err.errno or errno.EIO, detail)


def _conflict_error(op, source, where, found, template, err_no) -> MountError:
    return MountError(op, source, where, ",".join(c.asked for c in found), err_no,
                      explain(found, template))


def _remount_one(sys: Syscalls, path: str, where: str, source, opts: MountOptions,
                 emulate_locks: bool) -> None:
    """Remount the bind mount at ``path`` with exactly the flags ``opts`` asks
    (``plan_remount``); ``where`` names it in errors (the container path).

    In a user namespace the kernel refuses to clear flags it locked on the
    source mount (EPERM). Then keep the locked flags (read with statvfs) and
    retry, unless that would set a flag the user explicitly cleared or give
    another atime mode than the one asked. ``emulate_locks`` applies the same
    rule where the kernel does not lock: an idmapped tree made by the runtime
    for a container with a user namespace gets what a plain bind would get.
    Afterwards the flags are read back: what the source file system imposes
    (a read-only superblock, sync) fails the mount too, never silently.
    """
    want = plan_remount(opts)
    locked = _locked_flags(path)
    flags = want
    if emulate_locks and violates_locks(want, locked):
        first = OSError(errno.EPERM, "locked")
    else:
        first = None
        try:
            sys.mount(None, path, None, _REMOUNT | want, None)
        except OSError as err:
            # EPERM for another reason than a lock: nothing to fall back to.
            if err.errno != errno.EPERM or not violates_locks(want, locked):
                raise _err("remount", source, where, want, err) from None
            first = err
    if first is not None:
        flags = keep_locked(want, locked)
        found = conflicts(opts, flags)
        if found:
            raise _conflict_error("remount", source, where, found, _LOCKED, errno.EPERM)
        try:
            sys.mount(None, path, None, _REMOUNT | flags, None)
        except OSError as err:
            raise _err("remount", source, where, flags, err, f"after keeping the locked "
                       f"{flag_names(locked)}") from None
    observed = _flags_at(path)
    need_sb = bool((opts.flags | opts.cleared) & SB_CHECKED)
    if need_sb:
        observed |= _sb_flags(path)
    found = conflicts(opts, observed, check_sb=need_sb)
    if found:
        ro = any(c.flag == MS.RDONLY for c in found)
        raise _conflict_error("remount", source, where, found, _KEPT,
                              errno.EROFS if ro else errno.EINVAL)


def _remount_bind(sys: Syscalls, source: str, target: str, opts: MountOptions,
                  dest: str | None = None, emulate_locks: bool = False) -> None:
    """Remount a bind mount with exactly the requested flags. For rbind only
    the top mount changes, as runc does: "rbind,ro" is read-only but not
    recursively; the recursive words (rro, rnosuid ...) reach the whole
    tree (``_apply_extras``). Raises MountError naming ``dest``."""
    _remount_one(sys, target, dest or target, source, opts, emulate_locks)


def _remount_tree(sys: Syscalls, source: str, target: str, opts: MountOptions,
                  dest: str) -> None:
    """``_remount_bind`` for every mount of an rbind tree (the host's /sys
    standing in for sysfs must be read-only all the way down)."""
    _remount_one(sys, target, dest, source, opts, False)
    base = os.path.realpath(target)          # mountinfo spells paths without symlinks
    for path in _submounts(target):
        _remount_one(sys, path, os.path.join(dest, os.path.relpath(path, base)), source,
                     opts, False)


def _tree_flags(target: str, recursive: bool) -> list[int]:
    paths = [target] + (_submounts(target) if recursive else [])
    return [_flags_at(p) for p in paths]


def _apply_extras(sys: Syscalls, source, target: str, opts: MountOptions,
                  dest: str | None = None) -> None:
    """Propagation (its own mount(2) calls: it cannot be combined with other
    flags), then the recursive attributes through mount_setattr(2)."""
    dest = dest or target
    for prop in opts.propagation:
        try:
            sys.mount(None, target, None, prop, None)
        except OSError as err:
            raise _err("mount propagation", None, dest, 0, err) from None
    if not (opts.rec_set or opts.rec_clr):
        return
    words = ",".join(opts.rec_words)
    try:
        sys.mount_setattr(target, attr_set=opts.rec_set, attr_clr=opts.rec_clr,
                          recursive=True)
    except OSError as err:
        detail = ""
        if err.errno == errno.ENOSYS:
            detail = "recursive mount attributes need Linux 5.12"
        elif err.errno == errno.EPERM:
            detail = explain(rec_conflicts(opts, _tree_flags(target, True)), _LOCKED)
        raise MountError("mount_setattr", source, dest, words, err.errno or errno.EIO,
                         detail) from None
    found = rec_conflicts(opts, _tree_flags(target, True))
    if found:
        ro = any(c.flag == MS.RDONLY for c in found)
        raise _conflict_error("mount_setattr", source, dest, found, _KEPT,
                              errno.EROFS if ro else errno.EINVAL)


def bind_sources(plan: RootfsPlan, bundle: str) -> tuple[tuple[int, str], ...]:
    """(index in mounts, absolute source) of every plain bind mount: what
    ``open_in_mount_namespace`` opens for an init in a new user namespace.
    Relative sources are from ``bundle``."""
    out = []
    for i, m in enumerate(plan.mounts):
        opts = parse_options(m.options, m.type)
        if m.type in ("cgroup", "cgroup2") or not opts.bind or opts.idmap:
            continue
        src = m.source or ""
        out.append((i, src if os.path.isabs(src) else os.path.join(bundle, src)))
    return tuple(out)


def open_in_mount_namespace(sys: Syscalls, pid: int, sources, proc_root: str = "/proc"
                            ) -> dict[int, int]:
    """O_PATH fds of ``sources`` (``bind_sources``), opened with the
    runtime's rights inside the mount namespace of ``pid`` (the new
    container's, still a copy of ours): index in mounts -> fd.

    Why: in a new user namespace the init's root is an unprivileged host
    user that may not even look a source up (below a 0700 directory); an fd
    opened by the runtime still mounts, through /proc/self/fd (runc sends
    such fds to its init too). It must be opened in the container's own
    mount namespace: the kernel binds only from a mount of the caller's
    namespace, and so the bind keeps the flags the kernel locked on it. A
    forked helper joins that namespace (setns(2) on a mount namespace
    needs a single-threaded caller), opens, and passes the fds back. A
    source it cannot open is left out: ``mount_one`` reports it.
    """
    import socket

    if not sources:
        return {}
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    helper = os.fork()
    if helper == 0:
        ours.close()
        code = 1
        try:
            ns = os.open(f"{proc_root}/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            sys.setns(ns, 0x00020000)          # CLONE_NEWNS
            got, fds = [], []
            for i, path in sources:
                try:
                    fds.append(os.open(path, os.O_PATH | os.O_CLOEXEC))
                    got.append(i)
                except OSError:
                    continue
            socket.send_fds(theirs, [",".join(map(str, got)).encode() or b"-"], fds)
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    try:
        data, fds, _, _ = socket.recv_fds(ours, 4096, len(sources))
    finally:
        ours.close()
        os.waitpid(helper, 0)
    indexes = [int(x) for x in data.decode().split(",") if x not in ("", "-")]
    if len(indexes) != len(fds):
        for fd in fds:
            os.close(fd)
        return {}
    return dict(zip(indexes, fds))


def close_bind_sources(plan: RootfsPlan) -> None:
    for fd in plan.source_fds.values():
        os.close(fd)
    plan.source_fds.clear()


def mount_one(sys: Syscalls, m, plan: RootfsPlan, tree_fd: int | None = None,
              source_fd: int | None = None) -> None:
    """Mount one OCI mount under the rootfs. ``tree_fd`` is the detached
    idmapped tree the runtime made for it (``idmapped.py``); ``source_fd``
    an O_PATH fd of its bind source (``open_in_mount_namespace``). Raises
    MountError, UsageError."""
    opts = parse_options(m.options, m.type)
    dest = m.destination
    if opts.idmap and not opts.bind:
        raise UsageError(f"mount {dest}: idmap and ridmap need a bind mount")
    if m.type == "cgroup" or m.type == "cgroup2":
        return _mount_cgroup(sys, m, plan, opts)
    source = m.source or m.type or "none"
    if opts.bind:
        src = source if os.path.isabs(source) else os.path.join(os.getcwd(), source)
        # Through the runtime's fd when there is one: the path may be out of reach.
        via = f"/proc/self/fd/{source_fd}" if source_fd is not None else src
        try:
            is_file = not stat.S_ISDIR(os.stat(via).st_mode)
        except OSError as err:
            raise _err("bind mount", src, dest, opts.flags, err,
                       "the source does not exist") from None
        target = ensure_mountpoint(plan.rootfs, dest, is_file=is_file)
        if opts.idmap:
            if tree_fd is None:
                raise UsageError(f"mount {dest}: the idmapped mount was not prepared")
            try:
                sys.move_mount(tree_fd, target)
            except OSError as err:
                raise _err("move_mount", src, dest, 0, err) from None
        else:
            try:
                sys.mount(via, target, None, MS.BIND | (MS.REC if opts.recursive else 0), None)
            except OSError as err:
                raise _err("bind mount", src, dest, opts.flags, err) from None
        if opts.explicit:
            _remount_bind(sys, src, target, opts, dest,
                          emulate_locks=opts.idmap and plan.in_userns)
        _apply_extras(sys, src, target, opts, dest)
        return
    if m.type in ("proc", "sysfs"):
        _refuse_symlinked_proc(plan.rootfs, dest, m.type)
    copy_up = opts.copy_up and m.type == "tmpfs"
    # The image's directory lends the tmpfs its mode and owner, unless asked otherwise.
    keep_top = copy_up and os.path.isdir(secure_join(plan.rootfs, dest)) and not any(
        o.startswith(("mode=", "uid=", "gid=")) for o in opts.data.split(","))
    target = ensure_mountpoint(plan.rootfs, dest, is_file=False)
    data = opts.data or None
    if plan.mount_label and m.type in ("tmpfs", "devpts", "mqueue"):
        data = ",".join(filter(None, [data, f'context="{plan.mount_label}"']))
    if copy_up:
        return _mount_tmpfs_copy_up(sys, source, target, dest, opts, data, keep_top)
    flags = new_mount_flags(opts)
    if _is_delayed_ro(m, opts):
        # Read-only later (finalize_rootfs): devices, symlinks and the
        # console go into /dev first, as in runc's mountPropagate.
        flags &= ~MS.RDONLY
    try:
        sys.mount(source, target, m.type, flags, data)
    except OSError as err:
        if m.type == "sysfs" and err.errno == errno.EPERM and plan.in_userns:
            # sysfs cannot be mounted without owning the network namespace:
            # fall back to binding the host's (read-only, like runc does).
            sys.mount("/sys", target, None, MS.BIND | MS.REC, None)
            _remount_tree(sys, "/sys", target, parse_options(
                ("rbind", "nosuid", "noexec", "nodev", "ro")), dest)
        elif m.type == "mqueue" and err.errno == errno.EPERM and plan.in_userns:
            sys.mount("/dev/mqueue", target, None, MS.BIND | MS.REC, None)
        else:
            raise _err("mount", f"{source} ({m.type})", dest, opts.flags, err) from None
    _apply_extras(sys, source, target, opts, dest)


def _is_delayed_ro(m, opts: MountOptions) -> bool:
    """A read-only tmpfs or /dev (not a bind mount): mounted writable, made
    read-only by ``finalize_rootfs`` once it holds what the runtime puts
    there (runc: finalizeRootfs)."""
    return (bool(opts.flags & MS.RDONLY) and not opts.bind and not opts.copy_up
            and (m.type == "tmpfs" or m.destination.rstrip("/") == "/dev"))


def _refuse_symlinked_proc(rootfs: str, dest: str, fstype: str) -> None:
    """proc and sysfs only on an ordinary directory (or nothing) in the
    image: a symlink there would let a malicious image move them over
    another path of its choosing, where masked paths no longer reach
    (runc's check and its words). Raises MountError."""
    path = os.path.join(rootfs, os.path.normpath("/" + dest).lstrip("/"))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise _err("mount", fstype, dest, 0, err) from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError("mount", fstype, dest, "", errno.ENOTDIR,
                         f'filesystem "{fstype}" must be mounted on ordinary directory')


def _mount_tmpfs_copy_up(sys: Syscalls, source: str, target: str, dest: str,
                         opts: MountOptions, data: str | None, keep_top: bool) -> None:
    """A tmpfs filled with what was at its mount point (runtime/copyup.py):
    mounted writable, filled, then made read-only if that was asked."""
    from migrate.runtime.copyup import copy_tree

    flags = new_mount_flags(opts)
    below = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            sys.mount(source, target, "tmpfs", flags & ~MS.RDONLY, data)
        except OSError as err:
            raise _err("mount", f"{source} (tmpfs)", dest, opts.flags, err) from None
        top = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            copy_tree(below, top, top_attributes=keep_top)
        except OSError as err:
            raise _err("tmpcopyup", f"{source} (tmpfs)", dest, opts.flags, err) from None
        finally:
            os.close(top)
    finally:
        os.close(below)
    if flags & MS.RDONLY:
        try:
            sys.mount(None, target, None, MS.REMOUNT | flags, data)
        except OSError as err:
            raise _err("remount", None, dest, opts.flags, err) from None
    _apply_extras(sys, source, target, opts, dest)


def _cgroup_hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str]]:
    """(mount point, fstype) of every cgroup hierarchy we can see."""
    return [(e.mount_point, e.fstype) for e in read_mountinfo(mountinfo)
            if e.fstype in ("cgroup", "cgroup2")]


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
    if not pure_v2 and any(t == "cgroup" for _mp, t in hierarchies):
        # A hybrid host: show the v1 hierarchies only, as runc does. The
        # container's mounts are part of its checkpoint, and runc restores
        # only the v1 binds it knows of (runc checkpoints restore here, ours
        # under runc).
        hierarchies = [(mp, t) for mp, t in hierarchies if t == "cgroup"]
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
    trees = dict(plan.idmapped)
    for i, m in enumerate(plan.mounts):
        mount_one(sys, m, plan, trees.get(i), plan.source_fds.get(i))
    close_bind_sources(plan)
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


def reopen_dev_null(plan: RootfsPlan) -> None:
    """After pivot_root: point fds 0-2 that are the host's /dev/null at the
    container's own /dev/null, as runc does (reOpenDevNull). The host's node
    lies on a mount the container cannot see, which CRIU cannot dump ("Can't
    lookup mount"); the container's is restored by path. Not when /dev is
    the host's (bound from config.json): then it is already the same node."""
    if _dev_bound_from_host(plan):
        return
    fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        rdev = os.fstat(fd).st_rdev
        for n in range(3):
            try:
                st = os.fstat(n)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev:
                os.dup2(fd, n, inheritable=True)
    finally:
        os.close(fd)


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


# Where _move_root reads the mounts it must hide (a parameter for tests).
MOUNTINFO = "/proc/self/mountinfo"


def host_pseudo_fs(mountinfo: str, rootfs: str) -> list[str]:
    """Mount points of whole procfs/sysfs mounts outside ``rootfs`` (mountinfo text).

    The kernel lets a user namespace mount a new procfs or sysfs only while
    a full, uncovered one is visible in its mount namespace (fs/namespace.c
    mount_too_revealing). After pivot_root the host's are gone; after
    MS_MOVE + chroot they are still there, reachable from outside the
    chroot, so they must go first (runc 1.1 msMoveRoot, CVE-2023-27561 era).
    """
    prefix = rootfs.rstrip("/") + "/"
    return [e.mount_point for e in parse_mountinfo(mountinfo)
            if e.root == "/" and e.fstype in ("proc", "sysfs")
            and e.mount_point != rootfs and not e.mount_point.startswith(prefix)]


def _hide_host_pseudo_fs(sys: Syscalls, rootfs: str) -> None:
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        points = host_pseudo_fs(f.read(), rootfs)
    for point in points:
        try:
            # Our unmount must not propagate to the host's mount namespace.
            sys.mount(None, point, None, MS.SLAVE | MS.REC, None)
        except FileNotFoundError:
            continue   # under a mount already removed
        except OSError as err:
            if err.errno == errno.ENOENT:
                continue
            raise _err("make slave", None, point, MS.SLAVE | MS.REC, err) from None
        try:
            sys.umount(point, MNT.DETACH)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EPERM):
                raise _err("umount", None, point, 0, err) from None
            # Not ours to unmount (a locked mount in a user namespace): cover it.
            try:
                sys.mount("tmpfs", point, "tmpfs", 0, None)
            except OSError as err2:
                raise _err("mount", "tmpfs", point, 0, err2) from None


def _move_root(sys: Syscalls, rootfs: str) -> None:
    _hide_host_pseudo_fs(sys, rootfs)
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
    for m in plan.mounts:
        opts = parse_options(m.options, m.type)
        if _is_delayed_ro(m, opts):
            data = opts.data or None
            if plan.mount_label and m.type in ("tmpfs", "devpts", "mqueue"):
                data = ",".join(filter(None, [data, f'context="{plan.mount_label}"']))
            try:
                sys.mount(None, m.destination, None,
                          MS.REMOUNT | new_mount_flags(opts), data)
            except OSError as err:
                raise _err("remount", None, m.destination, opts.flags, err) from None
    if plan.readonly:
        try:
            _remount_ro(sys, "/", recursive=False)
        except OSError as err:
            raise _err("remount", None, "/", MS.RDONLY, err) from None
