"""The syscall seam: every kernel call the runtime makes goes through ``Syscalls``.

``LinuxSyscalls`` is the only code that calls libc or the nsexec extension;
``migrate.testing.fakes.FakeSyscalls`` records calls for unit tests. Both
raise ``OSError`` whose message names the call and the path.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:
    # typing costs ~2 ms to import on every `create`; at run time the
    # Protocol is documentation, type checkers see the real one.
    Protocol = object

from migrate.runtime import nsexec

__all__ = ["Syscalls", "LinuxSyscalls", "MS", "MNT", "PR"]


class MS:
    """mount(2) flags (include/uapi/linux/mount.h)."""

    RDONLY = 0x1
    NOSUID = 0x2
    NODEV = 0x4
    NOEXEC = 0x8
    SYNCHRONOUS = 0x10
    REMOUNT = 0x20
    MANDLOCK = 0x40
    DIRSYNC = 0x80
    NOSYMFOLLOW = 0x100
    NOATIME = 0x400
    NODIRATIME = 0x800
    BIND = 0x1000
    MOVE = 0x2000
    REC = 0x4000
    SILENT = 0x8000
    UNBINDABLE = 1 << 17
    PRIVATE = 1 << 18
    SLAVE = 1 << 19
    SHARED = 1 << 20
    RELATIME = 1 << 21
    I_VERSION = 1 << 23
    STRICTATIME = 1 << 24
    LAZYTIME = 1 << 25


class MNT:
    DETACH = 0x2


class PR:
    SET_PDEATHSIG = 1
    SET_DUMPABLE = 4
    SET_KEEPCAPS = 8
    CAPBSET_READ = 23
    CAPBSET_DROP = 24
    SET_CHILD_SUBREAPER = 36
    SET_NO_NEW_PRIVS = 38
    CAP_AMBIENT = 47
    CAP_AMBIENT_RAISE = 2
    CAP_AMBIENT_CLEAR_ALL = 4


class Syscalls(Protocol):
    def mount(self, source: str | None, target: str, fstype: str | None,
              flags: int, data: str | None) -> None: ...
    def umount(self, target: str, flags: int = 0) -> None: ...
    def pivot_root(self, new_root: str, put_old: str) -> None: ...
    def setns(self, fd: int, nstype: int) -> None: ...
    def unshare(self, flags: int) -> None: ...
    def sethostname(self, name: str) -> None: ...
    def setdomainname(self, name: str) -> None: ...
    def mknod(self, path: str, mode: int, device: int) -> None: ...
    def chown(self, path: str, uid: int, gid: int) -> None: ...
    def kill(self, pid: int, sig: int) -> None: ...
    def write_file(self, path: str, data: str) -> None: ...
    # Starts paying the first cgroup attach's RCU grace period in the
    # background; returns an object whose wait() ends it (cgroups/warmup.py).
    def warm_cgroup_attach(self, cgroup_root: str, proc_root: str): ...
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int: ...
    def capset(self, effective: int, permitted: int, inheritable: int) -> None: ...
    def join_session_keyring(self, name: str | None) -> None: ...
    def mount_setattr(self, path: str | int, *, attr_set: int, attr_clr: int,
                      propagation: int = 0, recursive: bool = False,
                      userns_fd: int = 0) -> None: ...
    def open_tree(self, path: str, *, recursive: bool = False) -> int: ...
    def move_mount(self, from_fd: int, to_path: str) -> None: ...
    def mark_fds_cloexec(self, first: int) -> None: ...
    def personality(self, persona: int) -> None: ...
    def seccomp_prepare(self, plan) -> object: ...
    def seccomp_load(self, filter: object) -> int | None: ...
    def landlock_scope(self, scoped: int) -> None: ...


_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4


def _flag_text(flags: int) -> str:
    names = [n for n, v in vars(MS).items() if n.isupper() and flags & v]
    return "|".join(names) or "0"


class LinuxSyscalls:
    """The real kernel."""

    __slots__ = ()

    @staticmethod
    def _c():
        return nsexec.lib()

    def mount(self, source, target, fstype, flags, data):
        ret = self._c().sys_mount(
            (source or "none").encode(), target.encode(),
            fstype.encode() if fstype else nsexec_null(),
            flags, data.encode() if data else nsexec_null())
        nsexec.check(ret, f"mount {source or ''} {target} ({_flag_text(flags)}"
                     f"{', ' + data if data else ''})", target)

    def umount(self, target, flags=0):
        nsexec.check(self._c().sys_umount2(target.encode(), flags), "umount2", target)

    def pivot_root(self, new_root, put_old):
        nsexec.check(self._c().sys_pivot_root(new_root.encode(), put_old.encode()),
                     "pivot_root", new_root)

    def setns(self, fd, nstype):
        nsexec.check(self._c().sys_setns(fd, nstype), "setns")

    def unshare(self, flags):
        nsexec.check(self._c().sys_unshare(flags), "unshare")

    def sethostname(self, name):
        nsexec.check(self._c().sys_sethostname(name.encode()), "sethostname")

    def setdomainname(self, name):
        nsexec.check(self._c().sys_setdomainname(name.encode()), "setdomainname")

    def mknod(self, path, mode, device):
        os.mknod(path, mode, device)

    def chown(self, path, uid, gid):
        os.chown(path, uid, gid, follow_symlinks=False)

    def kill(self, pid, sig):
        os.kill(pid, sig)

    def write_file(self, path, data):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        except OSError as err:
            raise OSError(err.errno, f"write {path}: {os.strerror(err.errno)}", path) from None
        finally:
            os.close(fd)

    def warm_cgroup_attach(self, cgroup_root, proc_root):
        from migrate.runtime.cgroups.warmup import AttachWarmup, adopt_launcher_warmup

        # The `migrate` launcher may have started one already, ~10 ms earlier.
        return adopt_launcher_warmup() or AttachWarmup(cgroup_root, proc_root)

    def prctl(self, option, arg2=0, arg3=0, arg4=0, arg5=0):
        return nsexec.check(self._c().sys_prctl(option, arg2, arg3, arg4, arg5),
                            f"prctl({option})")

    def capset(self, effective, permitted, inheritable):
        lo, hi = 0xFFFFFFFF, 32
        nsexec.check(self._c().sys_capset(
            effective & lo, effective >> hi, permitted & lo, permitted >> hi,
            inheritable & lo, inheritable >> hi), "capset")

    def join_session_keyring(self, name):
        nsexec.check(self._c().sys_keyctl_join_session(
            name.encode() if name else nsexec_null()), "keyctl(JOIN_SESSION_KEYRING)")

    def mount_setattr(self, path, *, attr_set, attr_clr, propagation=0,
                      recursive=False, userns_fd=0):
        # ``path`` may be the fd of a detached tree (open_tree): AT_EMPTY_PATH.
        flags = _AT_SYMLINK_NOFOLLOW | (_AT_RECURSIVE if recursive else 0)
        if isinstance(path, int):
            dfd, name, flags = path, b"", flags | _AT_EMPTY_PATH
        else:
            dfd, name = _AT_FDCWD, path.encode()
        nsexec.check(self._c().sys_mount_setattr(
            dfd, name, flags, attr_set, attr_clr, propagation, userns_fd),
            "mount_setattr", path if isinstance(path, str) else None)

    def open_tree(self, path, *, recursive=False):
        # OPEN_TREE_CLONE: a detached copy (a bind mount not attached yet);
        # AT_RECURSIVE copies the submounts too (rbind).
        flags = _OPEN_TREE_CLONE | os.O_CLOEXEC | (_AT_RECURSIVE if recursive else 0)
        return nsexec.check(self._c().sys_open_tree(_AT_FDCWD, path.encode(), flags),
                            "open_tree", path)

    def move_mount(self, from_fd, to_path):
        nsexec.check(self._c().sys_move_mount(from_fd, b"", _AT_FDCWD, to_path.encode(),
                                              _MOVE_MOUNT_F_EMPTY_PATH),
                     "move_mount", to_path)

    def mark_fds_cloexec(self, first):
        nsexec.check(self._c().sys_close_range_cloexec(first), "close_range(CLOEXEC)")

    def personality(self, persona):
        nsexec.check(self._c().sys_personality(persona), "personality")

    def seccomp_prepare(self, plan):
        """Build the libseccomp filter for a ``runtime.seccomp.SeccompPlan``;
        returns the handle ``seccomp_load`` takes. Raises OSError whose
        filename names the rule or architecture libseccomp refused."""
        return nsexec.seccomp_build(plan)

    def seccomp_load(self, filter):
        """Load a filter from ``seccomp_prepare``; returns the listener fd
        when the filter has SCMP_ACT_NOTIFY rules, else None."""
        return nsexec.check(self._c().seccomp_filter_load(filter), "seccomp: load filter") or None

    def landlock_scope(self, scoped):
        nsexec.check(self._c().sys_landlock_scope(scoped), "landlock_restrict_self")


def nsexec_null():
    from migrate.runtime.nsexec import _nsexec

    return _nsexec.ffi.NULL
