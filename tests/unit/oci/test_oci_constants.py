"""Names and numbers in migrate.oci.constants."""

import resource

import pytest

from migrate.oci import (
    CAP_LAST_CAP,
    CAP_NUMBERS,
    CAPABILITIES,
    IOPRIO_CLASSES,
    NAMESPACE_CLONE_FLAGS,
    NAMESPACE_PROC_NAMES,
    NAMESPACE_TYPES,
    RLIM_INFINITY,
    RLIMITS,
    ROOTFS_PROPAGATIONS,
    SCHED_FLAGS,
    SCHED_POLICIES,
)
from migrate.oci.constants import HOOK_NAMES


def test_capabilities_are_numbered_0_to_40_without_gaps():
    assert sorted(CAP_NUMBERS.values()) == list(range(CAP_LAST_CAP + 1))
    assert CAP_LAST_CAP == 40
    assert CAP_NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    assert CAPABILITIES == tuple(CAP_NUMBERS)
    assert all(name.startswith("CAP_") and name.isupper() for name in CAPABILITIES)


@pytest.mark.parametrize("name, number", [
    ("CAP_CHOWN", 0), ("CAP_KILL", 5), ("CAP_NET_BIND_SERVICE", 10), ("CAP_NET_ADMIN", 12),
    ("CAP_SYS_ADMIN", 21), ("CAP_SYS_RESOURCE", 24), ("CAP_MKNOD", 27),
    ("CAP_AUDIT_WRITE", 29), ("CAP_SETFCAP", 31), ("CAP_AUDIT_READ", 37),
    ("CAP_PERFMON", 38), ("CAP_BPF", 39),
])
def test_capability_numbers(name, number):
    assert CAP_NUMBERS[name] == number


def test_capabilities_known_to_this_kernel_are_known_to_us():
    # /proc/sys/kernel/cap_last_cap is read-only information; fine in a unit test.
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except OSError:
        pytest.skip("no /proc/sys/kernel/cap_last_cap")
    assert last <= CAP_LAST_CAP


def test_rlimit_numbers_match_the_resource_module():
    for name, number in RLIMITS.items():
        if hasattr(resource, name):
            assert getattr(resource, name) == number, name
    assert sorted(RLIMITS.values()) == list(range(16))
    assert RLIM_INFINITY == 2**64 - 1
    assert resource.RLIM_INFINITY in (-1, RLIM_INFINITY)


def test_namespaces():
    assert set(NAMESPACE_TYPES) == {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"}
    assert set(NAMESPACE_CLONE_FLAGS) == set(NAMESPACE_TYPES) == set(NAMESPACE_PROC_NAMES)
    flags = list(NAMESPACE_CLONE_FLAGS.values())
    assert len(set(flags)) == len(flags)
    assert all(f & (f - 1) == 0 for f in flags)  # one bit each
    assert NAMESPACE_PROC_NAMES["network"] == "net"
    assert NAMESPACE_PROC_NAMES["mount"] == "mnt"
    import os
    for type, attr in (("mount", "CLONE_NEWNS"), ("network", "CLONE_NEWNET"),
                       ("user", "CLONE_NEWUSER"), ("time", "CLONE_NEWTIME")):
        if hasattr(os, attr):  # Python 3.12+
            assert getattr(os, attr) == NAMESPACE_CLONE_FLAGS[type]


def test_small_tables():
    assert len(ROOTFS_PROPAGATIONS) == 8
    assert SCHED_POLICIES["SCHED_DEADLINE"] == 6
    assert SCHED_FLAGS["SCHED_FLAG_UTIL_CLAMP_MAX"] == 0x40
    assert IOPRIO_CLASSES == {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
    assert list(HOOK_NAMES) == ["prestart", "createRuntime", "createContainer",
                                "startContainer", "poststart", "poststop"]
