"""Terminals: a pty made inside the container, its master handed out.

The init opens the pty inside the container's own devpts (so the slave is
``/dev/pts/N`` there), makes the slave its controlling terminal and stdio,
and sends the master to the runtime, which passes it to ``--console-socket``
or, in the foreground, copies it to and from its own terminal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import termios

__all__ = ["open_container_pty", "send_console", "check_console_socket", "set_winsize",
           "get_winsize"]


def set_winsize(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def get_winsize(fd: int) -> tuple[int, int] | None:
    try:
        h, w, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return h, w


def open_container_pty(console_size=None, mount=None) -> int:
    """In the init, after pivot_root: returns the master fd; the slave
    becomes fds 0-2 and the controlling terminal. ``mount(src, dst)`` binds
    the slave onto /dev/console."""
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    name = os.ttyname(slave)
    if console_size is not None:
        set_winsize(slave, console_size.height, console_size.width)
    if mount is not None:
        if not os.path.exists("/dev/console"):
            with contextlib.suppress(OSError):
                os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        mount(name, "/dev/console")
    # We are a session leader already (the C bootstrap's setsid): take the
    # terminal as our controlling one.
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    return master


def check_console_socket(socket_path: str) -> None:
    """Before anything is started: ``--console-socket`` must name a socket.
    Raises UsageError."""
    import stat

    from migrate.errors import UsageError

    try:
        st = os.stat(socket_path)
    except OSError as err:
        raise UsageError(f"--console-socket {socket_path}: {err.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"--console-socket {socket_path}: not a socket")


def send_console(socket_path: str, master_fd: int, name: str = "/dev/ptmx") -> None:
    """Hand the pty master to whoever listens on ``--console-socket``.
    Raises UsageError naming the socket (nobody listens, gone, refused)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(socket_path)
            socket.send_fds(s, [name.encode()], [master_fd])
    except OSError as err:
        from migrate.errors import UsageError

        raise UsageError(f"--console-socket {socket_path}: {err.strerror}") from None
