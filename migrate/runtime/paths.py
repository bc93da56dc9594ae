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

    It walks down one component at a time from ``root``, descending only
    into what lstat(2) shows to be a real directory (made just now or found);
    a symlink on the way is resolved inside the root (``secure_join``) and
    its target made the same way (lib -> usr/lib without usr: usr, then
    lib). So a symlink that appears in between still cannot lead outside
    the root, and a path that exists costs one lstat per component (the
    init makes ~30 mountpoints: resolving every prefix again was ~300 path
    checks, issue 16).
    """
    root = os.path.abspath(root)
    host = root
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if host != root:
                host = os.path.dirname(host)
            continue
        candidate = os.path.join(host, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            try:
                os.mkdir(candidate, mode)
            except FileExistsError:
                pass                    # made meanwhile: judged below like any other
            st = os.lstat(candidate)
        if stat.S_ISDIR(st.st_mode):
            host = candidate
        elif stat.S_ISLNK(st.st_mode):
            target = secure_join(root, "/" + os.path.relpath(candidate, root))
            host = mkdir_all_in_root(root, "/" + os.path.relpath(target, root), mode)
        else:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", candidate)
    return host


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
