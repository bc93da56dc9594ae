"""The one error hierarchy of `migrate`.

Everything below the CLI raises these; the CLI renders one line and exits
with ``exit_code``. Any other exception is a bug.

    MigrateError                      exit 1
    ├── UsageError                    exit 2   bad flags, config.json, container ID
    ├── NotFoundError                 exit 1   unknown container, missing file
    ├── ExistsError                   exit 1   duplicate container ID
    ├── InvalidStateError(from_, to)  exit 1   operation not allowed in this status
    ├── KernelError(op, path, errno)  exit 1   a syscall or /proc, cgroupfs write failed
    │   └── MountError(op, source, target, flags)
    ├── UnsupportedError              exit 1   the kernel, CRIU or config lacks a feature
    ├── CriuError(action, log_path, log_tail)
    └── MigrationError(phase, source_state)
        └── ProtocolError             the peer broke the migration protocol or was refused
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "MigrateError",
    "UsageError",
    "NotFoundError",
    "ExistsError",
    "InvalidStateError",
    "KernelError",
    "MountError",
    "UnsupportedError",
    "CriuError",
    "MigrationError",
    "ProtocolError",
]


class MigrateError(Exception):
    """Root of all expected errors; ``str()`` is the one line a user sees."""

    exit_code = 1


class UsageError(MigrateError):
    exit_code = 2


class NotFoundError(MigrateError):
    pass


class ExistsError(MigrateError):
    pass


class InvalidStateError(MigrateError):
    def __init__(self, container_id: str, from_: str, to: str, message: str | None = None):
        self.container_id = container_id
        self.from_ = from_
        self.to = to
        super().__init__(
            message or f'container "{container_id}" is {from_}: cannot {to}'
        )


class KernelError(MigrateError):
    def __init__(self, op: str, path: str | None, errno: int, detail: str = ""):
        self.op = op
        self.path = path
        self.errno = errno
        where = f" {path}" if path else ""
        extra = f": {detail}" if detail else ""
        super().__init__(f"{op}{where}: {os.strerror(errno)}{extra}")

    @classmethod
    def from_oserror(cls, op: str, err: OSError, path: str | None = None) -> "KernelError":
        return cls(op, path or err.filename, err.errno or _errno.EIO)


class MountError(KernelError):
    def __init__(self, op: str, source: str | None, target: str, flags: str, errno: int,
                 detail: str = ""):
        self.source = source
        self.target = target
        self.flags = flags
        self.errno = errno
        self.op = op
        self.path = target
        src = f"{source} on " if source else ""
        fl = f" ({flags})" if flags else ""
        extra = f": {detail}" if detail else ""
        MigrateError.__init__(self, f"{op} {src}{target}{fl}: {os.strerror(errno)}{extra}")


class UnsupportedError(MigrateError):
    pass


class CriuError(MigrateError):
    """CRIU refused or failed a request.

    ``log_tail`` holds the last lines of CRIU's log so one glance says why.
    """

    def __init__(self, action: str, message: str, *, errno: int = 0,
                 log_path: str | None = None, log_tail: tuple[str, ...] = (),
                 error_lines: tuple[str, ...] = ()):
        self.action = action
        self.errno = errno
        self.log_path = log_path
        self.log_tail = tuple(log_tail)
        # The log's error lines with what led to each ("N:text"), shown
        # under the message as runc quotes them.
        self.error_lines = tuple(error_lines)
        self.message = message
        text = f"criu {action} failed: {message}"
        if errno:
            text += f" ({os.strerror(errno)})"
        if log_path:
            text += f" (log: {log_path})"
        super().__init__(text)

    def details(self) -> str:
        """The error plus CRIU's log tail, for --debug and logs."""
        return "\n".join([str(self), *self.log_tail])


class MigrationError(MigrateError):
    """A migration failed in ``phase``; ``source_state`` says what became of
    the container on the source (running, frozen, resumed ...)."""

    def __init__(self, phase: str, message: str, *, source_state: str = "running"):
        self.phase = phase
        self.message = message
        self.source_state = source_state
        super().__init__(f"migration failed during {phase}: {message} (source container {source_state})")

    def with_source_state(self, source_state: str) -> "MigrationError":
        """The same error (same class, phase and message) saying what became
        of the source container once the failure was handled."""
        new = type(self).__new__(type(self))
        MigrationError.__init__(new, self.phase, self.message, source_state=source_state)
        return new


class ProtocolError(MigrationError):
    """The peer sent something the migration protocol does not allow, or
    the handshake refused it (version, CRIU, authentication)."""
