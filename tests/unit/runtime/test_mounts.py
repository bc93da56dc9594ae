"""Mount option words -> MS_* flags, cleared flags and mount_setattr attributes."""

import pytest

from migrate.errors import UsageError
from migrate.runtime.mounts import (ATIME_MASK, LOCKABLE, MOUNT_ATTR, PROPAGATION, check_flags,
                                    flag_names, parse_options)
from migrate.runtime.syscalls import MS


def test_set_and_clear_words():
    o = parse_options(["nosuid", "noexec", "nodev", "ro"])
    assert o.flags == MS.NOSUID | MS.NOEXEC | MS.NODEV | MS.RDONLY
    assert o.cleared == 0 and not o.bind
    o = parse_options(["rw", "suid", "dev", "exec"])
    assert o.flags == 0
    assert o.cleared == MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC


def test_last_word_wins():
    o = parse_options(["ro", "rw"])
    assert not o.flags & MS.RDONLY and o.cleared & MS.RDONLY
    o = parse_options(["rw", "ro"])
    assert o.flags & MS.RDONLY and not o.cleared & MS.RDONLY


def test_atime_modes_replace_each_other():
    o = parse_options(["noatime", "relatime"])
    assert o.flags & ATIME_MASK == MS.RELATIME
    o = parse_options(["relatime", "strictatime"])
    assert o.flags & ATIME_MASK == MS.STRICTATIME
    o = parse_options(["norelatime", "noatime"])
    assert o.flags & ATIME_MASK == MS.NOATIME
    assert o.cleared & ATIME_MASK == 0        # setting a mode forgets cleared modes
    check_flags(o.flags, "mount /x")


def test_check_flags_refuses_two_atime_modes():
    with pytest.raises(UsageError, match="/x: more than one atime mode"):
        check_flags(MS.NOATIME | MS.STRICTATIME, "/x")


@pytest.mark.parametrize("words,flags,recursive", [
    (["bind"], MS.BIND, False),
    (["rbind"], MS.BIND | MS.REC, True),
    (["bind", "rbind"], MS.BIND | MS.REC, True),
])
def test_bind_words(words, flags, recursive):
    o = parse_options(words)
    assert o.bind and o.flags == flags and o.recursive is recursive
    assert not o.explicit                      # only bind: no remount needed


def test_bind_type_means_bind():
    o = parse_options(["ro"], "bind")
    assert o.bind and o.flags == MS.BIND | MS.RDONLY and o.explicit


def test_explicit_counts_cleared_flags():
    assert parse_options(["bind", "rw"]).explicit
    assert parse_options(["rbind", "nosuid"]).explicit


def test_propagation_in_order():
    o = parse_options(["rprivate", "bind", "shared"])
    assert o.propagation == (MS.PRIVATE | MS.REC, MS.SHARED)
    assert o.flags == MS.BIND                  # propagation is not a mount flag
    assert set(PROPAGATION) == {"private", "rprivate", "shared", "rshared", "slave",
                                "rslave", "unbindable", "runbindable"}


def test_recursive_attributes():
    o = parse_options(["rro", "rnosuid", "rnoatime"])
    assert o.rec_set == MOUNT_ATTR.RDONLY | MOUNT_ATTR.NOSUID | MOUNT_ATTR.NOATIME
    # Changing the atime mode needs the whole MOUNT_ATTR__ATIME in attr_clr.
    assert o.rec_clr == MOUNT_ATTR._ATIME
    o = parse_options(["rro", "rrw"])
    assert o.rec_set == 0 and o.rec_clr == MOUNT_ATTR.RDONLY
    o = parse_options(["rnoatime", "rstrictatime"])
    assert o.rec_set == MOUNT_ATTR.STRICTATIME and o.rec_clr == MOUNT_ATTR._ATIME


def test_idmap_words():
    assert parse_options(["idmap"]).idmap and not parse_options(["idmap"]).ridmap
    o = parse_options(["ridmap"])
    assert o.idmap and o.ridmap


def test_unknown_words_are_filesystem_data():
    o = parse_options(["nosuid", "mode=755", "size=65536k", "defaults", ""], "tmpfs")
    assert o.data == "mode=755,size=65536k"
    assert o.flags == MS.NOSUID
    assert parse_options([]).data == ""


def test_remount_word():
    assert parse_options(["remount", "ro"]).remount


def test_flag_names_use_mount_words():
    assert flag_names(MS.RDONLY | MS.NOSUID | MS.NODEV) == "ro,nosuid,nodev"
    assert flag_names(MS.BIND | MS.REC) == ""
    assert flag_names(MS.RELATIME) == "relatime"


def test_lockable_flags():
    # mount_namespaces(7): these are locked on mounts a less privileged
    # user namespace inherits.
    for flag in (MS.RDONLY, MS.NOSUID, MS.NODEV, MS.NOEXEC, MS.NOATIME, MS.RELATIME,
                 MS.STRICTATIME, MS.NODIRATIME):
        assert LOCKABLE & flag
    assert not LOCKABLE & (MS.BIND | MS.REC | MS.SYNCHRONOUS)


def test_ms_constants_match_the_kernel():
    # include/uapi/linux/mount.h
    assert (MS.RDONLY, MS.NOSUID, MS.NODEV, MS.NOEXEC, MS.REMOUNT, MS.BIND, MS.MOVE,
            MS.REC) == (1, 2, 4, 8, 32, 4096, 8192, 16384)
    assert (MS.PRIVATE, MS.SLAVE, MS.SHARED, MS.RELATIME, MS.STRICTATIME) == \
        (1 << 18, 1 << 19, 1 << 20, 1 << 21, 1 << 24)
