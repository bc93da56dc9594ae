"""Resolving paths inside a container's rootfs without ever leaving it.

A rootfs is untrusted: a symlink in it may point at ``/etc`` of the host or
climb out with ``..``. ``secure_join`` resolves every symlink as if the
rootfs were ``/`` (the semantics of openat2's RESOLVE_IN_ROOT), so the
result always lies under the root.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["secure_join", "mkdir_all_in_root", "ensure_mountpoint"]

_MAX_LINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    """Join ``unsafe`` onto ``root``, resolving symlinks inside ``root``.

    Components that do not exist yet are kept as they are. Raises OSError
    (ELOOP) on symlink loops.
    """
    root = os.path.abspath(root)
    parts = [p for p in unsafe.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", unsafe)
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p] + parts
    return os.path.join(root, *resolved)


def mkdir_all_in_root(root: str, path: str, mode: int = 0o755) -> str:
    """``mkdir -p`` of ``path`` inside ``root``; returns the resolved host path.

    Each component is resolved again after creating the previous one, so a
    symlink that appears in between still cannot lead outside the root.
    """
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        host = secure_join(root, current)
        parent = os.path.dirname(host)
        if not os.path.isdir(parent) and len(parent) > len(os.path.abspath(root)):
            # A dangling symlink led to a path whose parents do not exist
            # yet (lib -> usr/lib without usr): create those first.
            mkdir_all_in_root(root, "/" + os.path.relpath(parent, os.path.abspath(root)), mode)
        try:
            os.mkdir(host, mode)
        except FileExistsError:
            if not os.path.isdir(host):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", host) from None
        current = "/" + os.path.relpath(host, root)
    return secure_join(root, path)


def ensure_mountpoint(root: str, dest: str, *, is_file: bool) -> str:
    """Create what a mount at ``dest`` needs (a directory, or an empty file
    for a file bind mount) and return its resolved host path."""
    if is_file:
        # Mount where ``dest`` resolves inside the root: when its last
        # component is a symlink (etc/resolv.conf -> /run/resolv.conf), on
        # the link's target, never on the link (the kernel would follow it
        # outside the root).
        host = secure_join(root, dest)
        rel_parent = os.path.relpath(os.path.dirname(host), os.path.abspath(root))
        parent = mkdir_all_in_root(root, "/" if rel_parent == "." else "/" + rel_parent)
        host = os.path.join(parent, os.path.basename(host))
        if not os.path.lexists(host):
            fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            os.close(fd)
        return host
    return mkdir_all_in_root(root, dest)
