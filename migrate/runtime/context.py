"""The frozen context every runtime operation receives.

Flags and environment are read once by the CLI into a ``RuntimeContext``;
nothing below the CLI reads ``os.environ`` or keeps global state.
"""

from __future__ import annotations

from migrate._record import field, record
TYPE_CHECKING = False   # typing costs ~2 ms to import; only checkers need it

if TYPE_CHECKING:
    from migrate.runtime.syscalls import Syscalls

__all__ = ["RuntimeContext", "DEFAULT_ROOT"]

DEFAULT_ROOT = "/run/migrate"


def _linux_syscalls():
    from migrate.runtime.syscalls import LinuxSyscalls

    return LinuxSyscalls()


@record
class RuntimeContext:
    root: str = DEFAULT_ROOT
    log: str | None = None
    log_format: str = "text"
    debug: bool = False
    systemd_cgroup: bool = False
    rootless: str = "auto"          # "auto" | "true" | "false" (runc's --rootless)
    criu: str = "criu"
    notify_socket: str | None = None   # $NOTIFY_SOCKET of the runtime (systemd)
    syscalls: "Syscalls" = field(default_factory=_linux_syscalls)
    cgroup_root: str = "/sys/fs/cgroup"
    proc_root: str = "/proc"
