"""Names the runtime spec uses and the kernel numbers behind them.

Plain literals only: importing this module costs nothing. The numbers come
from the kernel UAPI headers (``linux/capability.h``, ``asm-generic/
resource.h``, ``linux/sched.h``, ``uapi/linux/sched/types.h``,
``linux/ioprio.h``) and do not differ between architectures we run on.
"""

from __future__ import annotations

__all__ = [
    "CAP_NUMBERS",
    "CAPABILITIES",
    "CAP_LAST_CAP",
    "RLIMITS",
    "RLIM_INFINITY",
    "NAMESPACE_TYPES",
    "NAMESPACE_CLONE_FLAGS",
    "NAMESPACE_PROC_NAMES",
    "ROOTFS_PROPAGATIONS",
    "DEVICE_TYPES",
    "DEVICE_RULE_TYPES",
    "TIME_OFFSET_CLOCKS",
    "SCHED_POLICIES",
    "SCHED_FLAGS",
    "IOPRIO_CLASSES",
    "HOOK_NAMES",
]

# capabilities(7); CAP_CHECKPOINT_RESTORE is the last one as of Linux 6.18.
CAP_NUMBERS: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
CAPABILITIES: tuple[str, ...] = tuple(CAP_NUMBERS)
CAP_LAST_CAP = 40

# getrlimit(2); resource numbers from asm-generic/resource.h.
RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}
RLIM_INFINITY = 2**64 - 1

# The order is the order runc creates them in; it does not matter to us.
NAMESPACE_TYPES: tuple[str, ...] = (
    "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
)
NAMESPACE_CLONE_FLAGS: dict[str, int] = {
    "mount": 0x00020000,    # CLONE_NEWNS
    "cgroup": 0x02000000,   # CLONE_NEWCGROUP
    "uts": 0x04000000,      # CLONE_NEWUTS
    "ipc": 0x08000000,      # CLONE_NEWIPC
    "user": 0x10000000,     # CLONE_NEWUSER
    "pid": 0x20000000,      # CLONE_NEWPID
    "network": 0x40000000,  # CLONE_NEWNET
    "time": 0x00000080,     # CLONE_NEWTIME (clone3/unshare only)
}
# The file names under /proc/<pid>/ns/.
NAMESPACE_PROC_NAMES: dict[str, str] = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "user": "user",
    "cgroup": "cgroup",
    "time": "time",
}

ROOTFS_PROPAGATIONS: tuple[str, ...] = (
    "private", "rprivate", "slave", "rslave", "shared", "rshared",
    "unbindable", "runbindable",
)

# mknod(2) kinds: char, block, unbuffered char, FIFO.
DEVICE_TYPES: tuple[str, ...] = ("c", "b", "u", "p")
# Device-cgroup rule kinds: all, char, block.
DEVICE_RULE_TYPES: tuple[str, ...] = ("a", "c", "b")

# time_namespaces(7): the only clocks a time namespace offsets.
TIME_OFFSET_CLOCKS: tuple[str, ...] = ("boottime", "monotonic")

SCHED_POLICIES: dict[str, int] = {
    "SCHED_OTHER": 0,
    "SCHED_FIFO": 1,
    "SCHED_RR": 2,
    "SCHED_BATCH": 3,
    "SCHED_ISO": 4,
    "SCHED_IDLE": 5,
    "SCHED_DEADLINE": 6,
}
SCHED_FLAGS: dict[str, int] = {
    "SCHED_FLAG_RESET_ON_FORK": 0x01,
    "SCHED_FLAG_RECLAIM": 0x02,
    "SCHED_FLAG_DL_OVERRUN": 0x04,
    "SCHED_FLAG_KEEP_POLICY": 0x08,
    "SCHED_FLAG_KEEP_PARAMS": 0x10,
    "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
    "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40,
}
IOPRIO_CLASSES: dict[str, int] = {
    "IOPRIO_CLASS_RT": 1,
    "IOPRIO_CLASS_BE": 2,
    "IOPRIO_CLASS_IDLE": 3,
}

# JSON key -> Hooks attribute, in the order they run.
HOOK_NAMES: dict[str, str] = {
    "prestart": "prestart",
    "createRuntime": "create_runtime",
    "createContainer": "create_container",
    "startContainer": "start_container",
    "poststart": "poststart",
    "poststop": "poststop",
}
