"""tmpcopyup: a new tmpfs starts with what the image had at its mount point.

runc's extension (``libcontainer/rootfs_linux.go``, ``EXT_COPYUP``), which
Podman puts on every tmpfs it asks for (``--tmpfs``, and /tmp, /var/tmp and
/run under ``--read-only``). runc mounts the tmpfs on a scratch directory,
copies and moves it into place; we open the mount point first instead: a
descriptor opened before the mount still reads the directory beneath it,
so nothing is made outside the container's root.

What is copied, as runc does: directories, regular files, symlinks (not
followed), device nodes, fifos and sockets, each with its mode and owner.
Hard links become separate files; times are not kept. The tmpfs itself
takes the mode and owner of the image's directory, unless the options set
them (``mode=``, ``uid=``, ``gid=``) or the directory was not in the image.
"""

from __future__ import annotations

import os
import stat

__all__ = ["copy_tree"]

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_tree(src_fd: int, dst_fd: int, *, top_attributes: bool = True) -> None:
    """Copy the directory open at ``src_fd`` into the empty one at ``dst_fd``,
    with the top directory's mode and owner if ``top_attributes``. Raises OSError."""
    if top_attributes:
        st = os.fstat(src_fd)
        os.fchown(dst_fd, st.st_uid, st.st_gid)
        os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
    for entry in os.scandir(src_fd):
        _copy_entry(src_fd, dst_fd, entry.name)


def _copy_entry(src_dir: int, dst_dir: int, name: str) -> None:
    st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        os.mkdir(name, 0o700, dir_fd=dst_dir)
        src = os.open(name, _O_DIR, dir_fd=src_dir)
        try:
            dst = os.open(name, _O_DIR, dir_fd=dst_dir)
            try:
                copy_tree(src, dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        return
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(name, dir_fd=src_dir), name, dir_fd=dst_dir)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
        return
    if stat.S_ISREG(mode):
        _copy_file(src_dir, dst_dir, name, st.st_size)
    else:   # character or block device, fifo, socket
        os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst_dir)
    # chown before chmod: chown clears the set-user-ID and set-group-ID bits.
    os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
    os.chmod(name, stat.S_IMODE(mode), dir_fd=dst_dir)


def _copy_file(src_dir: int, dst_dir: int, name: str, size: int) -> None:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                      dir_fd=dst_dir)
        try:
            offset = 0
            while offset < size:
                sent = os.sendfile(dst, src, offset, size - offset)
                if sent == 0:       # the file shrank meanwhile
                    break
                offset += sent
        finally:
            os.close(dst)
    finally:
        os.close(src)
