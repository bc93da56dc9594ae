"""A cgroup yard made before the freeze, for CRIU's ``cgroup_yard`` option.

Both a dump and a restore that manage cgroups first mount every cgroup
hierarchy somewhere of their own (criu/cgroup.c: ``open_cgroupfs`` on dump,
``prepare_cgroup_sfd`` on restore). Mounting cgroup2 took 0-16 ms here
(measured: 14 ms for the first mount in a fresh mount namespace, often
7-16 ms while other cgroup mounts come and go), all of it while the
container is frozen. A migration knows long before the freeze that it
will dump and restore, so it mounts the same yard ahead of time and hands
CRIU the path; CRIU then opens ``<yard>/<hierarchy>`` and mounts nothing.

The layout is CRIU's own: a private tmpfs holding one directory per
hierarchy this process belongs to, named as CRIU names it (the
controllers as /proc/self/cgroup lists them, ``name=`` dropped,
``unified`` for cgroup2), with a fresh mount of that hierarchy in it (the
same mount CRIU would make: same root, same cgroup namespace). A restore
whose images name a hierarchy the yard lacks makes that one itself, inside
the yard.

The yard's directory starts with ``mountinfo.CRIU_CGYARD_PREFIX``, so a
restore's failure cleanup (``umount_criu_cgyards``) also takes down one
left in its work directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from migrate.errors import MigrateError
from migrate.runtime.mountinfo import CRIU_CGYARD_PREFIX

__all__ = ["YARD_NAME", "hierarchies", "make_yard", "remove_yard", "cgroup_yard"]

YARD_NAME = CRIU_CGYARD_PREFIX + "migrate"


def hierarchies(self_cgroup: str) -> list[tuple[str, str, str | None]]:
    """(directory, fstype, mount data) of each hierarchy in the text of
    /proc/self/cgroup, named as CRIU names them in a yard. Pure."""
    out, seen = [], set()
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers = parts[1]
        if controllers == "":
            entry = ("unified", "cgroup2", None)
        elif controllers.startswith("name="):
            entry = (controllers[len("name="):], "cgroup", f"none,{controllers}")
        else:
            entry = (controllers, "cgroup", controllers)
        if entry[0] and "/" not in entry[0] and entry[0] not in seen:
            seen.add(entry[0])
            out.append(entry)
    return out


def make_yard(ctx, parent: str, *, name: str = YARD_NAME) -> str | None:
    """Mount a yard at ``parent/name``; returns its path, or ``None`` when
    it cannot be made here (no right to mount, say): CRIU then makes its
    own, as before. Nothing is left mounted on failure."""
    from migrate.runtime.syscalls import MS

    try:
        with open(f"{ctx.proc_root}/self/cgroup") as f:
            wanted = hierarchies(f.read())
    except OSError:
        return None
    if not wanted:
        return None
    path = os.path.join(parent, name)
    try:
        os.makedirs(path, mode=0o700, exist_ok=False)
    except OSError:
        return None
    try:
        ctx.syscalls.mount("none", path, "tmpfs", 0, None)
    except (MigrateError, OSError):
        with contextlib.suppress(OSError):
            os.rmdir(path)
        return None
    try:
        ctx.syscalls.mount(None, path, None, MS.PRIVATE, None)
        for directory, fstype, data in wanted:
            point = os.path.join(path, directory)
            os.mkdir(point, 0o700)
            ctx.syscalls.mount("none", point, fstype, 0, data)
    except (MigrateError, OSError):
        remove_yard(ctx, path)
        return None
    return path


def remove_yard(ctx, path: str) -> None:
    """Detach the yard (the hierarchies go with its tmpfs) and remove its
    directory. Never recursive: the directory is removed only once nothing
    is mounted there, so no cgroup below can be touched."""
    from migrate.runtime.syscalls import MNT

    with contextlib.suppress(MigrateError, OSError):
        ctx.syscalls.umount(path, MNT.DETACH)
    with contextlib.suppress(OSError):
        os.rmdir(path)


@contextlib.contextmanager
def cgroup_yard(ctx, parent: str, *, name: str = YARD_NAME) -> Iterator[str | None]:
    """``make_yard`` for the block, removed after it."""
    path = make_yard(ctx, parent, name=name)
    try:
        yield path
    finally:
        if path is not None:
            remove_yard(ctx, path)

