"""Where the state lives when --root is not given (runc's rules).

- root in the initial user namespace: /run/migrate, XDG_RUNTIME_DIR ignored;
- a non-root EUID: $XDG_RUNTIME_DIR/migrate, created 0700 and sticky;
- root inside a user namespace: $XDG_RUNTIME_DIR/migrate only when $USER is
  set and is not "root", else /run/migrate.

``--root`` always wins. The sticky bit keeps the directory out of the
age-based clean-up systemd applies to XDG_RUNTIME_DIR (file-hierarchy(7),
tmpfiles.d(5) "t"), as runc does.
"""

from __future__ import annotations

import os
import stat

from migrate.errors import UsageError

__all__ = ["default_root", "prepare_root", "DEFAULT_ROOT"]

DEFAULT_ROOT = "/run/migrate"


def default_root(environ, *, euid: int, in_userns: bool) -> str:
    """The state directory for this user. Pure: the caller
    (``rootless.decide``) probes the user namespace.

    Raises UsageError when a non-root user has no XDG_RUNTIME_DIR.
    """
    xdg = environ.get("XDG_RUNTIME_DIR")
    if euid == 0:
        user = environ.get("USER")
        if in_userns and xdg and user and user != "root":
            return os.path.join(xdg, "migrate")
        return DEFAULT_ROOT
    if not xdg:
        raise UsageError(f"XDG_RUNTIME_DIR is not set: a non-root user (uid {euid}) keeps container "
                         f"state in $XDG_RUNTIME_DIR/migrate; set it to a directory you own "
                         f"(usually /run/user/{euid}) or pass --root DIR")
    if not os.path.isabs(xdg):
        raise UsageError(f'XDG_RUNTIME_DIR "{xdg}" is not an absolute path')
    return os.path.join(xdg, "migrate")


def prepare_root(path: str, *, private: bool) -> None:
    """Create the default state directory if needed.

    ``private`` (a directory under XDG_RUNTIME_DIR): mode 0700 plus the
    sticky bit. Otherwise 0711, like the state store. Raises UsageError
    naming the directory and what to do instead.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise _cannot(path, err) from None
    if st is None:
        try:
            os.makedirs(path, mode=0o700 if private else 0o711, exist_ok=True)
            st = os.stat(path)
        except OSError as err:
            raise _cannot(path, err) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"state directory {path} is not a directory: remove it or pass --root DIR")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise _cannot(path, PermissionError(13, "Permission denied"), "use")
    if private and stat.S_IMODE(st.st_mode) != 0o1700 and st.st_uid == os.geteuid():
        try:
            os.chmod(path, 0o1700)
        except OSError as err:
            raise _cannot(path, err) from None


def _cannot(path: str, err: OSError, what: str = "create") -> UsageError:
    hint = "pass --root DIR"
    if path == DEFAULT_ROOT and os.geteuid() == 0:
        hint = ("as root in a user namespace, set USER to another name than root and "
                "XDG_RUNTIME_DIR to a directory you own, or pass --root DIR")
    elif os.path.basename(path) == "migrate":
        hint = "check XDG_RUNTIME_DIR, or pass --root DIR"
    return UsageError(f"cannot {what} state directory {path}: {err.strerror}: {hint}")
