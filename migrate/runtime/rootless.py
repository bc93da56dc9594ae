"""Who are we? The two rootless facts, decided once per command.

- rootless EUID: a non-zero effective UID; we must create a user namespace
  and may only map what we are allowed to.
- rootless cgroups: we are not root in the initial user namespace (or the
  user said ``--rootless=true``): cgroup errors are tolerated, never fatal.
"""

from __future__ import annotations

import os
from migrate._record import record

__all__ = ["RootlessFacts", "detect", "in_user_namespace"]


def in_user_namespace(uid_map_text: str | None = None) -> bool:
    """A full identity map ("0 0 4294967295") means the initial namespace."""
    if uid_map_text is None:
        try:
            with open("/proc/self/uid_map") as f:
                uid_map_text = f.read()
        except OSError:
            return False
    lines = [l.split() for l in uid_map_text.strip().splitlines() if l.strip()]
    return lines != [["0", "0", "4294967295"]]


@record
class RootlessFacts:
    euid: bool
    cgroups: bool
    in_userns: bool


def detect(flag: str = "auto", *, euid: int | None = None,
           in_userns: bool | None = None) -> RootlessFacts:
    euid = os.geteuid() if euid is None else euid
    userns = in_user_namespace() if in_userns is None else in_userns
    if flag == "true":
        cgroups = True
    elif flag == "false":
        cgroups = False
    else:
        cgroups = euid != 0 or userns
    return RootlessFacts(euid=euid != 0, cgroups=cgroups, in_userns=userns)
