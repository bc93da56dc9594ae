"""The runtime's own executable, out of the container's reach (CVE-2019-5736).

A process that joins a container (the init of `create`/`run`, the process
of `exec`) is a fork of the runtime: until it execs the container's program,
``/proc/<pid>/exe`` inside the container is the runtime's executable, here
the host's Python interpreter. A process in the container holding
CAP_SYS_PTRACE gets past non-dumpable and can open that link (O_PATH) and,
once no host process runs the interpreter any more ("Text file busy" is the
only thing in the way), reopen it for writing through /proc/self/fd/N.

So the commands that join a container run from an interpreter file that
cannot be written by anybody. The `migrate` executable, a small C launcher
(nsexec/launcher.c), makes that view and execs Python from it, once; when
Python finds itself started otherwise (the `migrate-py` entry script run
directly, a launcher that could not), it re-executes itself the same way
(cli/main.py ``_protect_executable``, ~20 ms more). The view is

1. a read-only overlayfs whose lower layer is the interpreter's directory,
   made with fsopen(2)/fsmount(2) and never attached to any path
   (``sys_ro_overlay_open`` in nsexec/syscalls.c). An overlay without an
   upper layer refuses every write (EROFS), and a mount without a path
   cannot be remounted read-write from inside the container. No copy, ~1 ms.
2. when overlayfs is unavailable, a sealed memfd copy of the interpreter
   (memfd_create(2) + F_SEAL_WRITE|GROW|SHRINK|SEAL): a few ms and the
   interpreter's size in memory per command.

Two more things a process in the container could read while a fork of the
runtime joins it, with CAP_SYS_PTRACE:

- /proc/PID/environ: the runtime's whole environment. ``scrub_environ``
  zeroes that memory in the fork before it joins anything (Python keeps
  its own copy in os.environ; the container's program gets an explicit
  environment from the spec).
- /proc/PID/mem (and exe, maps): a non-dumpable process is open to
  CAP_SYS_PTRACE in its user namespace, and nothing in the classic
  permission model closes that. When a container without a user
  namespace keeps CAP_SYS_PTRACE in its bounding set, its init enters a
  Landlock domain (init/standard.py, ``process.fence_ptrace``): a process
  in a domain cannot ptrace-access one outside it, whatever its
  capabilities. `exec`'d processes stay outside (they can still debug the
  container's processes; the container's cannot reach them).

runc 1.2 does the same two things for its own binary (runc#4448, #4482);
runc 1.1 bind-mounted it read-only, which a container with CAP_SYS_ADMIN can
undo (hence a detached mount here). Everything else the interpreter maps
(libc, extension modules) is reachable from /proc/<pid>/map_files only with
CAP_SYS_ADMIN in the initial user namespace, which is a privileged
container anyway.
"""

from __future__ import annotations

import os

from migrate.errors import KernelError

__all__ = ["MARK", "exe_is_protected", "protected_interpreter", "reexec_protected",
           "scrub_environ", "import_path"]

# Set in the environment of the re-executed runtime (and removed from
# os.environ at once by the CLI), so it re-executes only once.
MARK = "_MIGRATE_EXE_GUARD"


def _second_layer() -> str:
    # overlayfs needs two lower layers when it has no upper one; any
    # directory that neither contains nor is inside the interpreter's will
    # do, since the first layer wins for the interpreter's name. Ours.
    return os.path.dirname(os.path.abspath(__file__))


def _overlay_fd(path: str) -> int:
    from migrate.runtime import nsexec

    directory, name = os.path.split(path)
    second = _second_layer()
    if directory == second or second.startswith(directory + "/") or \
            directory.startswith(second + "/"):
        raise OSError(22, "overlapping layers")
    lower = f"{directory}:{second}".encode()
    return nsexec.check(nsexec.lib().sys_ro_overlay_open(lower, name.encode()),
                        "fsopen(overlay)", path)


def _memfd_fd(path: str) -> int:
    import fcntl

    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    fd = -1
    try:
        fd = os.memfd_create("migrate-python", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        size = os.fstat(src).st_size
        done = 0
        while done < size:    # sendfile: copy_file_range refuses EXDEV into a memfd
            n = os.sendfile(fd, src, None, size - done)
            if n <= 0:
                raise OSError(5, "short copy of the interpreter", path)
            done += n
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    finally:
        os.close(src)


def protected_interpreter(path: str, *, allow_overlay: bool = True) -> tuple[int, str]:
    """An fd to exec ``path`` from that nobody can write to, and how it was
    made ("overlay" or "memfd"). Raises KernelError when neither works."""
    if allow_overlay:
        try:
            return _overlay_fd(path), "overlay"
        except OSError:
            pass    # no overlayfs, no new mount API (< 5.2), not allowed: copy it
    try:
        return _memfd_fd(path), "memfd"
    except OSError as err:
        raise KernelError.from_oserror("protect the runtime's executable: memfd copy of",
                                       err, path) from None


def exe_is_protected(exe: str = "/proc/self/exe") -> bool:
    """Whether this process runs from an executable nobody can write: a
    sealed memfd, or a file on a read-only mount (the overlay above, made
    here or by the `migrate` launcher). Checks the running file itself, so
    an environment mark alone is never trusted."""
    import fcntl

    try:
        fd = os.open(exe, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE:
                return True
        except OSError:
            pass        # EINVAL: not a memfd
        return bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
    except OSError:
        return False
    finally:
        os.close(fd)


def import_path() -> str:
    """This interpreter's ``sys.path`` as a PYTHONPATH, the package's own
    parent first: what an interpreter started with -S (no site, so no .pth
    and no editable install's finder) needs to import as this one does."""
    import sys

    import migrate

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(migrate.__file__)))
    return os.pathsep.join([package_parent, *(p for p in sys.path if p)])


def reexec_protected(argv: list[str], environ, *, allow_overlay: bool = True) -> None:
    """execve the interpreter from a protected fd with the same ``argv``
    (``sys.orig_argv``) and ``environ`` plus MARK. Never returns: raises
    KernelError when it cannot."""
    exe = os.path.realpath("/proc/self/exe")
    fd, how = protected_interpreter(exe, allow_overlay=allow_overlay)
    env = dict(environ)
    env[MARK] = how
    try:
        os.execve(fd, argv, env)
    except OSError as err:
        os.close(fd)
        raise KernelError.from_oserror("execve (protected interpreter)", err, exe) from None


def scrub_environ(proc_self: str = "/proc/self") -> None:
    """Zero this process's initial environment block (what
    /proc/PID/environ shows), best effort: called in a fork about to join a
    container. Python's os.environ is a copy and stays intact."""
    try:
        with open(f"{proc_self}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # Fields 50 and 51 (env_start, env_end), counted from "state" (3).
        start, end = int(fields[50 - 3]), int(fields[51 - 3])
        if not 0 < start < end:
            return
        fd = os.open(f"{proc_self}/mem", os.O_RDWR | os.O_CLOEXEC)
        try:
            os.pwrite(fd, bytes(end - start), start)
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        pass
