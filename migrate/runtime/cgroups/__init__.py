"""cgroup managers: one Protocol, back ends picked once from mountinfo.

    open_manager(...)  -> a manager for a new container (v1, hybrid or v2)
    load_manager(state) -> the same manager again, from CgroupManager.to_state()

Layouts (detected from ``mountinfo``, never assumed):

- ``v2``: a cgroup2 mount at ``cgroup_root`` (pure unified) -> ``V2Manager``.
- ``v1``: cgroup v1 mounts under ``cgroup_root`` -> ``V1Manager``.
- ``hybrid``: v1 mounts plus a cgroup2 mount below ``cgroup_root``
  (``/sys/fs/cgroup/unified``) -> ``V1Manager`` that joins the unified
  hierarchy too (key ``""`` in ``paths()``) and writes ``unified`` resources
  there.
- ``none``: nothing usable, rootless only -> a manager that does nothing
  and says ``is_usable() is False``.

Only the cgroupfs driver exists; ``systemd=True`` raises
``UnsupportedError``. Pure-v2 device rules are not enforced (no eBPF):
``v2.py`` logs a warning for rules beyond runc's defaults.

Hot path: this module imports only ``os``; the back ends load on use.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .base import CgroupFiles
    from .protocol import CgroupManager

__all__ = ["CgroupManager", "CgroupFiles", "open_manager", "load_manager", "current_paths",
           "sub_manager"]


def __getattr__(name: str):
    # CgroupManager/CgroupFiles are re-exported lazily to keep imports light.
    if name == "CgroupManager":
        from .protocol import CgroupManager
        return CgroupManager
    if name == "CgroupFiles":
        from .base import CgroupFiles
        return CgroupFiles
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_manager(*, container_id: str, cgroups_path: str | None, systemd: bool = False,
                 rootless: bool = False, cgroup_root: str = "/sys/fs/cgroup",
                 mountinfo_path: str = "/proc/self/mountinfo",
                 self_cgroup_path: str = "/proc/self/cgroup",
                 files: "CgroupFiles | None" = None) -> "CgroupManager":
    """The cgroup manager for a container; creates nothing yet (see ``create``).

    ``cgroups_path`` follows runc's cgroupfs driver: empty -> ``/migrate/<id>``;
    absolute -> from each hierarchy's root; relative -> below this process's
    own cgroup (read from ``self_cgroup_path``). ``files`` replaces the real
    cgroupfs access (tests).

    Raises ``UnsupportedError`` for ``systemd=True`` or when no cgroup
    hierarchy is mounted under ``cgroup_root`` (rootless: a ``none`` manager
    instead), ``UsageError`` for a path that escapes its hierarchy or a bad
    ID, ``KernelError`` when mountinfo or the own-cgroup file can't be read.
    """
    from migrate.errors import KernelError, UnsupportedError

    from .base import log, normalize_cgroups_path, cgroup_mounts, parse_proc_cgroup
    from .v1 import V1Manager
    from .v2 import V2Manager

    if systemd:
        raise UnsupportedError("the systemd cgroup driver is not supported; drop --systemd-cgroup "
                               "(the cgroupfs driver is used by default)")
    inner = normalize_cgroups_path(cgroups_path, container_id)
    if rootless and not cgroups_path:
        # Rootless, only a subtree delegated to us (below our own cgroup)
        # can be writable, so the default goes there, as runc's does.
        inner = inner.lstrip("/")
    kw = {"rootless": rootless, "files": files}
    try:
        with open(mountinfo_path, encoding="utf-8", errors="surrogateescape") as f:
            mounts = cgroup_mounts(f.read())
        with open(self_cgroup_path, encoding="utf-8", errors="surrogateescape") as f:
            own = parse_proc_cgroup(f.read())
    except OSError as err:
        error = KernelError.from_oserror("read", err)
        if not rootless:
            raise error from err
        log.debug("rootless: no cgroups: %s", error)
        return V1Manager(paths={}, mounts={}, usable=False, **kw)

    root = os.path.normpath(cgroup_root)
    under = [m for m in mounts if m.mount_point == root or m.mount_point.startswith(root.rstrip("/") + "/")]
    v1 = [m for m in under if m.fstype == "cgroup"]
    v2 = [m for m in under if m.fstype == "cgroup2"]
    pure = next((m for m in v2 if m.mount_point == root), None)
    if pure is not None:
        return V2Manager.open(pure, own, inner, **kw)
    if v1:
        return V1Manager.open(v1, v2[0] if v2 else None, own, inner, **kw)
    if v2:
        return V2Manager.open(v2[0], own, inner, **kw)
    if rootless:
        log.debug("rootless: no cgroup hierarchy is mounted under %s", root)
        return V1Manager(paths={}, mounts={}, usable=False, **kw)
    raise UnsupportedError(f"no cgroup hierarchy is mounted under {root}")


def current_paths(*, cgroup_root: str = "/sys/fs/cgroup",
                  mountinfo_path: str = "/proc/self/mountinfo",
                  self_cgroup_path: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's own cgroup directories: controller -> directory (``""`` is v2).

    What a container shows at its cgroup mount when, rootless, it could not
    get cgroups of its own and stays in ours. Hierarchies whose directory
    we cannot see are left out; unreadable files give ``{}``.
    """
    from .base import cgroup_dir, cgroup_mounts, parse_proc_cgroup

    try:
        with open(mountinfo_path, encoding="utf-8", errors="surrogateescape") as f:
            mounts = cgroup_mounts(f.read())
        with open(self_cgroup_path, encoding="utf-8", errors="surrogateescape") as f:
            own = parse_proc_cgroup(f.read())
    except OSError:
        return {}
    root = os.path.normpath(cgroup_root)
    out: dict[str, str] = {}
    for m in mounts:
        if not (m.mount_point == root or m.mount_point.startswith(root.rstrip("/") + "/")):
            continue
        keys = list(m.controllers) if m.fstype == "cgroup" else [""]
        key = next((k for k in keys if k in own), None)
        if key is None:
            continue
        d = os.path.normpath(cgroup_dir(m, own[key], "."))
        if os.path.isdir(d):
            for k in keys:
                out.setdefault(k, d)
    return out


def load_manager(state: dict, *, rootless: bool = False,
                 files: "CgroupFiles | None" = None) -> "CgroupManager":
    """The manager described by ``CgroupManager.to_state()``.

    Raises ``UsageError`` when ``state`` is not such a description.
    """
    from migrate.errors import UsageError

    try:
        mode, paths, mounts = state["mode"], dict(state["paths"]), dict(state["mounts"])
        usable = bool(state.get("usable", True))
        valid = (state.get("version") == 1
                 and all(isinstance(p, str) and os.path.isabs(p) for p in (*paths.values(), *mounts.values()))
                 and set(paths) <= set(mounts))
    except (KeyError, TypeError, ValueError, AttributeError):
        valid = False
    if not valid or mode not in ("v1", "hybrid", "v2", "none"):
        raise UsageError(f"invalid cgroup state in state.json: {state!r}")
    kw = {"rootless": rootless, "usable": usable, "files": files}
    # Only the back end the state names: every exec, kill and delete loads
    # a manager, and each back end is ~35 KB of bytecode (issue 16).
    if mode == "v2":
        if "" not in paths:
            raise UsageError(f"invalid cgroup state in state.json: {state!r}")
        from .v2 import V2Manager

        return V2Manager(mount_point=mounts[""], path=paths[""], **kw)
    from .v1 import V1Manager

    return V1Manager(paths=paths, mounts=mounts, **kw)


def sub_manager(manager: "CgroupManager", sub_paths: dict[str, str], *,
                rootless: bool = False) -> "CgroupManager":
    """A manager for sub-cgroups of ``manager``'s (``exec --cgroup``).

    ``sub_paths`` maps a controller (a key of ``paths()``) to a path below
    the container's cgroup in that hierarchy; the key ``""`` alone means
    every hierarchy. Nothing is created: joining a missing sub-cgroup fails
    when the process is added, as with runc.

    Raises ``UsageError`` for a path that leaves the container's cgroup or
    an unknown controller.
    """
    from migrate.errors import UsageError

    state = manager.to_state()
    paths = dict(state["paths"])
    if "" in sub_paths and len(sub_paths) == 1:
        wanted = {key: sub_paths[""] for key in paths}
    else:
        wanted = {}
        for ctrl, add in sub_paths.items():
            if ctrl not in paths:
                raise UsageError(f"unknown controller {ctrl} in --cgroup")
            wanted[ctrl] = add
    for key, add in wanted.items():
        base = paths[key]
        new = os.path.normpath(os.path.join(base, add.lstrip("/")))
        if new != base and not new.startswith(base.rstrip("/") + "/"):
            raise UsageError(f"{add} is not a sub cgroup path")
        paths[key] = new
    return load_manager({**state, "paths": paths}, rootless=rootless)
