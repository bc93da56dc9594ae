"""Where the state lives when --root is not given (runc's rules).

- root in the initial user namespace: /run/migrate, XDG_RUNTIME_DIR ignored;
- a non-root EUID: $XDG_RUNTIME_DIR/migrate;
- root inside a user namespace: $XDG_RUNTIME_DIR/migrate only when $USER is
  set and is not "root", else /run/migrate.
"""

from __future__ import annotations

import os

from migrate.errors import UsageError

__all__ = ["default_root", "DEFAULT_ROOT"]

DEFAULT_ROOT = "/run/migrate"


def default_root(environ, *, euid: int | None = None, in_userns: bool | None = None) -> str:
    """Raises UsageError when a non-root user has no XDG_RUNTIME_DIR."""
    euid = os.geteuid() if euid is None else euid
    xdg = environ.get("XDG_RUNTIME_DIR")
    if euid == 0:
        if in_userns is None:
            from migrate.runtime.rootless import in_user_namespace

            in_userns = in_user_namespace()
        user = environ.get("USER")
        if in_userns and xdg and user and user != "root":
            return os.path.join(xdg, "migrate")
        return DEFAULT_ROOT
    if not xdg:
        raise UsageError("XDG_RUNTIME_DIR is not set: a non-root user needs it "
                         "(or --root DIR) for container state")
    return os.path.join(xdg, "migrate")
