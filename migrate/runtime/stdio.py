"""Which files a container's init was handed as stdio, for state.json.

A checkpoint must tell CRIU which of the init's files belong to the runtime
(a pipe or a host file that is no path inside the container) and map them
onto the restoring side's stdio. Reading /proc/PID/fd/0-2 at checkpoint
time is not enough: the init may have moved them by then, for good (``exec
3>&1 >/tmp/x``) or for a moment (busybox sh saves fd 1 on fd 10+ around
each NOFORK applet, ``cat > /tmp/x``). So create records what it handed
over while the init is still ours, and restore records what it handed
CRIU; checkpoint declares those (runc keeps the same list in its state as
``external_descriptors``, paths only).

One entry per fd 0-2: ``{"fd", "path", "mnt_id", "inode", "mode"}``;
``mnt_id`` is None where fdinfo has none (or the fd was closed: path "").
"""

from __future__ import annotations

import os

__all__ = ["fd_identity", "init_stdio", "fdinfo_mnt_id"]


def fdinfo_mnt_id(fdinfo: str) -> int | None:
    """The ``mnt_id:`` of a /proc/PID/fdinfo/N text (a mount ID as every
    mount namespace's mountinfo numbers it), or None."""
    for line in fdinfo.splitlines():
        if line.startswith("mnt_id:"):
            return int(line.split()[1])
    return None


def fd_identity(fd_dir: str, fd: int, *, role: int | None = None) -> dict:
    """What fd ``fd`` of the process whose /proc directory is ``fd_dir``
    ("/proc/PID" or "/proc/self") is: its path, mount, inode and mode,
    recorded as fd ``role`` (default ``fd``). A closed fd gives path ""."""
    entry = {"fd": fd if role is None else role, "path": "", "mnt_id": None, "inode": 0,
             "mode": 0}
    try:
        entry["path"] = os.readlink(f"{fd_dir}/fd/{fd}")
        st = os.stat(f"{fd_dir}/fd/{fd}")
        with open(f"{fd_dir}/fdinfo/{fd}") as f:
            entry["mnt_id"] = fdinfo_mnt_id(f.read())
    except OSError:
        return entry
    entry["inode"], entry["mode"] = st.st_ino, st.st_mode
    return entry


def init_stdio(pid: int, proc_root: str = "/proc") -> list[dict]:
    """The identity of fds 0-2 of ``pid`` (an init that is still ours)."""
    return [fd_identity(f"{proc_root}/{pid}", fd) for fd in range(3)]
