"""Who are we? The two rootless facts, decided once per command.

- rootless EUID: a non-zero effective UID; we must create a user namespace
  and may only map what we are allowed to.
- rootless cgroups: we are not root in the initial user namespace (or the
  user said ``--rootless=true``): cgroup errors are tolerated, never fatal.

The whole decision, with the state directory (``rootdir.py``), is one pure
function, ``decide``; the table it implements:

    EUID  user ns  --rootless  rootless EUID  rootless cgroups
    0     no       auto        no             no
    0     yes      auto        no             yes
    >0    any      auto        yes            yes
    any   any      true        (as above)     yes
    any   any      false       (as above)     no

``state`` reports ``rootless: true`` only when both facts hold.

Reading our own ID maps is cached per process (keyed by pid, so a forked
child that unshares its user namespace reads them afresh).
"""

from __future__ import annotations

import os

from migrate._record import record

__all__ = ["RootlessFacts", "Decision", "detect", "decide", "in_user_namespace", "own_id_maps",
           "parse_id_map", "check_spec"]

# The initial user namespace maps every ID to itself (user_namespaces(7)).
_IDENTITY = ((0, 0, 4294967295),)


def parse_id_map(text: str) -> tuple[tuple[int, int, int], ...]:
    """``/proc/PID/uid_map`` text as (inside, outside, count) triples; bad lines are skipped."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return tuple(out)


# (pid, proc_root) -> maps: functools.lru_cache(maxsize=4) without the
# functools import (start-up cost, migrate/_light.py).
_MAPS_CACHE: dict = {}


def _read_maps(pid: "int | str", proc_root: str) -> tuple[tuple, tuple] | None:
    key = (pid, proc_root)
    if key in _MAPS_CACHE:
        return _MAPS_CACHE[key]
    try:
        with open(f"{proc_root}/{pid}/uid_map") as f:
            uid_map = parse_id_map(f.read())
        with open(f"{proc_root}/{pid}/gid_map") as f:
            gid_map = parse_id_map(f.read())
    except OSError:
        maps = None
    else:
        maps = uid_map, gid_map
    if len(_MAPS_CACHE) >= 4:
        del _MAPS_CACHE[next(iter(_MAPS_CACHE))]
    _MAPS_CACHE[key] = maps
    return maps


def own_id_maps(proc_root: str = "/proc") -> tuple[tuple, tuple]:
    """Our (uid_map, gid_map); the identity maps when /proc cannot tell. Cached."""
    maps = _read_maps("self", proc_root)
    return maps if maps is not None else (_IDENTITY, _IDENTITY)


def in_user_namespace(uid_map_text: str | None = None) -> bool:
    """A full identity map ("0 0 4294967295") means the initial namespace.

    Without an argument, reads (once per process) /proc/self/uid_map;
    unreadable counts as the initial namespace.
    """
    if uid_map_text is None:
        maps = _read_maps(os.getpid(), "/proc")
        return maps is not None and maps[0] != _IDENTITY
    return parse_id_map(uid_map_text) != _IDENTITY


@record
class RootlessFacts:
    euid: bool          # rootless EUID: we must create a user namespace
    cgroups: bool       # rootless cgroups: cgroup errors are tolerated
    in_userns: bool     # we run inside a (non-initial) user namespace


@record
class Decision:
    facts: RootlessFacts
    root: str           # the state directory
    root_is_default: bool


def detect(flag: str = "auto", *, euid: int | None = None,
           in_userns: bool | None = None) -> RootlessFacts:
    """The two facts for this process; ``flag`` is ``--rootless`` (auto, true, false)."""
    euid = os.geteuid() if euid is None else euid
    userns = in_user_namespace() if in_userns is None else in_userns
    if flag == "true":
        cgroups = True
    elif flag == "false":
        cgroups = False
    else:
        cgroups = euid != 0 or userns
    return RootlessFacts(euid=euid != 0, cgroups=cgroups, in_userns=userns)


def decide(flag: str, *, euid: int, in_userns: bool, environ, root: str | None = None) -> Decision:
    """The whole table: facts plus state directory. Pure.

    ``environ`` needs only USER and XDG_RUNTIME_DIR; ``root`` is ``--root``,
    which always wins. Raises UsageError when no state directory can be
    chosen (a non-root user without XDG_RUNTIME_DIR).
    """
    from migrate.runtime.rootdir import default_root

    facts = detect(flag, euid=euid, in_userns=in_userns)
    if root is not None:
        return Decision(facts=facts, root=root, root_is_default=False)
    return Decision(facts=facts, root=default_root(environ, euid=euid, in_userns=in_userns),
                    root_is_default=True)


# -- what a rootless container may ask for ----------------------------------


def check_spec(spec, facts: RootlessFacts, idmap=None, *, own_maps=None, subids=None) -> None:
    """Refuse a config this process cannot run, naming the offending item.

    ``idmap`` is the ``idmap.IdMapPlan`` for a new user namespace (None when
    the config creates none); ``own_maps`` our (uid_map, gid_map), read
    from /proc when needed and not given; ``subids`` the text of
    (/etc/subuid, /etc/subgid), read when needed and not given.

    Raises ConfigError.
    """
    from migrate.oci.validate import ConfigError

    linux = spec.linux
    userns = linux.namespace("user")
    if facts.euid and userns is None:
        raise ConfigError("config.json", "linux.namespaces",
                          f"running as a non-root user (uid {os.geteuid()}) needs a user "
                          f"namespace (see `migrate spec --rootless`)")
    if userns is not None and userns.path is not None:
        return      # joined: its maps are not ours to check
    if idmap is not None and idmap.use_helpers:
        _check_delegated(idmap, subids)
    if idmap is not None:
        uid_map = tuple((c, h, s) for c, h, s in idmap.uid_map)
        gid_map = tuple((c, h, s) for c, h, s in idmap.gid_map)
        where, uid_key, gid_key = "", "linux.uidMappings", "linux.gidMappings"
    elif facts.in_userns:
        # No user namespace of its own: the container uses ours, so IDs must
        # be mapped here (e.g. devpts gid=5 under `unshare --map-root-user`).
        uid_map, gid_map = own_maps if own_maps is not None else own_id_maps()
        where, uid_key, gid_key = " of this user namespace", "uid_map", "gid_map"
    else:
        return
    for i, m in enumerate(spec.mounts):
        for opt in m.options:
            key, eq, value = opt.partition("=")
            if not eq or key not in ("uid", "gid") or not value.isdigit():
                continue
            ranges, name = (uid_map, uid_key) if key == "uid" else (gid_map, gid_key)
            if not _mapped(int(value), ranges):
                raise ConfigError("config.json", f"mounts[{i}].options",
                                  f'"{opt}" of "{m.destination}" names an ID that is not mapped '
                                  f"in the {name}{where} ({_describe(ranges)}): map it or "
                                  f"drop the option")
    user = spec.process.user if spec.process is not None else None
    if user is None:
        return
    for what, value, ranges, name in (("uid", user.uid, uid_map, uid_key),
                                      ("gid", user.gid, gid_map, gid_key)):
        if not _mapped(value, ranges):
            raise ConfigError("config.json", f"process.user.{what}",
                              f"{value} is not mapped in the {name}{where} ({_describe(ranges)})")
    for i, gid in enumerate(user.additional_gids):
        if not _mapped(gid, gid_map):
            raise ConfigError("config.json", f"process.user.additionalGids[{i}]",
                              f"{gid} is not mapped in the {gid_key}{where} ({_describe(gid_map)})")
    if user.additional_gids and idmap is not None and idmap.deny_setgroups:
        raise ConfigError("config.json", "process.user.additionalGids",
                          "supplementary groups need setgroups(2), which a single-ID map written "
                          "without privilege must deny: map more IDs (newgidmap, from the uidmap "
                          "package, with a range in /etc/subgid)")


def check_exec_user(process, pid: int, proc_root: str = "/proc") -> None:
    """An exec'd process's user and groups must be mapped in the container's
    user namespace (when it has one). Raises UsageError naming the flag."""
    from migrate.errors import UsageError

    maps = _read_maps(pid, proc_root)
    if maps is None:
        return
    uid_map, gid_map = maps
    if not in_user_namespace(format_ranges(uid_map)):
        return                                   # the initial namespace: all mapped
    user = process.user
    for what, value, ranges in (("uid", user.uid, uid_map), ("gid", user.gid, gid_map)):
        if not _mapped(value, ranges):
            raise UsageError(f"exec --user: {what} {value} is not mapped in the container's "
                             f"user namespace ({_describe(ranges)})")
    for gid in user.additional_gids:
        if not _mapped(gid, gid_map):
            raise UsageError(f"exec --additional-gids: {gid} is not mapped in the container's "
                             f"user namespace ({_describe(gid_map)})")


def format_ranges(ranges) -> str:
    return "".join(f"{c} {h} {s}\n" for c, h, s in ranges)


def _mapped(value: int, ranges) -> bool:
    return any(c <= value < c + s for c, _h, s in ranges)


def _describe(ranges) -> str:
    if not ranges:
        return "nothing is mapped"
    return "mapped: " + ", ".join(f"{c}" if s == 1 else f"{c}-{c + s - 1}" for c, _h, s in ranges)


def _check_delegated(idmap, subids) -> None:
    """newuidmap/newgidmap map only our own ID and what /etc/subuid and
    /etc/subgid delegate to us (subuid(5)); say which mapping asks for more
    before a container process exists."""
    import pwd

    from migrate.oci.validate import ConfigError
    from migrate.runtime.idmap import parse_subid, uncovered

    euid = os.geteuid()
    try:
        names = (pwd.getpwuid(euid).pw_name, str(euid))
    except KeyError:
        names = (str(euid),)
    if subids is None:
        subids = tuple(_read_text(p) for p in ("/etc/subuid", "/etc/subgid"))
    for key, ranges, own, text, path in (
            ("uidMappings", idmap.uid_map, euid, subids[0], "/etc/subuid"),
            ("gidMappings", idmap.gid_map, os.getegid(), subids[1], "/etc/subgid")):
        delegated = parse_subid(text, names)
        for i, (_c, host, size) in enumerate(ranges):
            if (host, size) == (own, 1) or not uncovered(host, size, delegated):
                continue
            have = ", ".join(f"{s}-{s + n - 1}" for s, n in delegated) or "none"
            raise ConfigError("config.json", f"linux.{key}[{i}]",
                              f"host IDs {host}-{host + size - 1} are not delegated to "
                              f'"{names[0]}" in {path} (delegated: {have}; your own ID '
                              f"{own} may be mapped alone, size 1)")


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
