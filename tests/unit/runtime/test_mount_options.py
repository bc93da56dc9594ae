"""Mount option words -> MS_* flags, cleared flags and mount_setattr attributes, and the
pure remount rules of migrate/runtime/mounts.py (named apart from the integration
tests/integration/test_mounts.py: pytest needs unique basenames here)."""

import pytest

from migrate.errors import UsageError
from migrate.runtime.mounts import (ATIME_MASK, LOCKABLE, MOUNT_ATTR, PROPAGATION, check_flags,
                                    conflicts, explain, flag_names, idmap_ranges,
                                    keep_locked, new_mount_flags,
                                    parse_options, plan_remount, rec_conflicts, statvfs_flags,
                                    violates_locks)
from migrate.runtime.mountinfo import descendants, parse_mountinfo
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


# -- more option words ----------------------------------------------------------

def test_silent_loud_and_iversion_are_flags_not_data():
    o = parse_options(["silent", "iversion", "mode=700"], "tmpfs")
    assert o.flags == MS.SILENT | MS.I_VERSION and o.data == "mode=700"
    o = parse_options(["loud", "noiversion"])
    assert o.cleared == MS.SILENT | MS.I_VERSION
    assert not parse_options(["bind", "silent"]).explicit     # no remount for "silent"


def test_remount_of_a_non_bind_mount_passes_ms_remount():
    assert parse_options(["remount", "ro"], "tmpfs").flags == MS.REMOUNT | MS.RDONLY
    assert not parse_options(["remount", "bind", "ro"]).flags & MS.REMOUNT


def test_tmpcopyup_is_ours_not_the_file_system_s():
    opts = parse_options(["rw", "tmpcopyup", "size=1m"], "tmpfs")
    assert opts.copy_up and opts.data == "size=1m"
    assert not parse_options(["rw"], "tmpfs").copy_up


def test_recursive_words_are_kept_for_messages():
    assert parse_options(["rro", "rbind", "rnoatime"]).rec_words == ("rro", "rnoatime")


@pytest.mark.parametrize("word,attr_set", [
    ("ratime", MOUNT_ATTR.RELATIME), ("rnostrictatime", MOUNT_ATTR.RELATIME),
    ("rnorelatime", MOUNT_ATTR.STRICTATIME), ("rrelatime", MOUNT_ATTR.RELATIME),
])
def test_recursive_words_that_clear_a_mode_pick_the_kernel_default(word, attr_set):
    # mount_setattr(2) takes a mode only with all of MOUNT_ATTR__ATIME in
    # attr_clr; a partial clear is EINVAL.
    o = parse_options([word])
    assert o.rec_set == attr_set and o.rec_clr == MOUNT_ATTR._ATIME


# -- new mounts and the remount plan --------------------------------------------

def test_norelatime_alone_on_a_new_mount_means_strictatime():
    assert new_mount_flags(parse_options(["norelatime"], "tmpfs")) == MS.STRICTATIME
    assert new_mount_flags(parse_options(["norelatime", "noatime"], "tmpfs")) == MS.NOATIME
    assert new_mount_flags(parse_options(["nosuid"], "tmpfs")) == MS.NOSUID


@pytest.mark.parametrize("words,flags", [
    # missing flags mean cleared; no atime word: the kernel keeps the atime group
    (["bind", "ro"], MS.RDONLY),
    (["rbind", "rw", "nosuid"], MS.NOSUID),
    (["bind", "ro", "sync"], MS.RDONLY),                       # superblock flag: not passed
    # any atime word sets the whole group
    (["bind", "noatime"], MS.NOATIME),
    (["bind", "nodiratime"], MS.NODIRATIME | MS.RELATIME),
    (["bind", "strictatime", "nodiratime"], MS.STRICTATIME | MS.NODIRATIME),
    (["bind", "atime"], MS.RELATIME),
    (["bind", "nostrictatime"], MS.RELATIME),
    (["bind", "norelatime"], MS.STRICTATIME),
    (["bind", "diratime"], MS.RELATIME),
    (["bind", "nosymfollow", "noexec"], MS.NOSYMFOLLOW | MS.NOEXEC),
])
def test_plan_remount(words, flags):
    assert plan_remount(parse_options(words)) == flags


def test_violates_locks():
    locked = MS.RDONLY | MS.NOSUID | MS.NOATIME
    assert violates_locks(MS.NOSUID, locked)                         # clears ro
    assert not violates_locks(MS.RDONLY | MS.NOSUID | MS.NODEV, locked)   # adds nodev
    assert not violates_locks(MS.RDONLY | MS.NOSUID, locked)         # atime kept by the kernel
    assert violates_locks(MS.RDONLY | MS.NOSUID | MS.RELATIME, locked)
    assert not violates_locks(MS.RDONLY | MS.NOSUID | MS.NOATIME, locked)
    assert violates_locks(MS.RDONLY | MS.NOSUID | MS.NOATIME | MS.NODIRATIME, locked)


def test_keep_locked_adds_lock_bits_and_replaces_the_atime_group():
    locked = MS.NODEV | MS.NOATIME
    assert keep_locked(MS.RDONLY, locked) == MS.RDONLY | MS.NODEV
    assert keep_locked(MS.RDONLY | MS.RELATIME | MS.NODIRATIME, locked) == \
        MS.RDONLY | MS.NODEV | MS.NOATIME


def _conflicts(words, result, **kw):
    return [(c.asked, c.got) for c in conflicts(parse_options(words), result, **kw)]


def test_conflicts_only_for_explicit_words():
    ro = MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.NOATIME
    assert _conflicts(["bind", "nosuid"], ro) == []                  # extras are fine
    assert _conflicts(["bind", "rw", "dev"], ro) == [("rw", "ro"), ("dev", "nodev")]
    assert _conflicts(["bind", "strictatime"], ro) == [("strictatime", "noatime")]
    assert _conflicts(["bind", "atime"], ro) == [("atime", "noatime")]
    assert _conflicts(["bind", "atime"], MS.STRICTATIME) == []
    assert _conflicts(["bind", "norelatime"], MS.RELATIME) == [("norelatime", "relatime")]
    assert _conflicts(["bind", "noexec"], MS.RELATIME) == [("noexec", "exec")]
    assert _conflicts(["bind", "nodiratime"], MS.RELATIME) == [("nodiratime", "diratime")]
    assert _conflicts(["bind", "diratime"], MS.RELATIME | MS.NODIRATIME) == \
        [("diratime", "nodiratime")]
    assert _conflicts(["bind", "relatime"], MS.RELATIME | MS.NOSUID) == []


def test_superblock_conflicts_only_when_asked():
    assert _conflicts(["bind", "sync"], MS.RELATIME) == []
    assert _conflicts(["bind", "sync"], MS.RELATIME, check_sb=True) == [("sync", "async")]
    assert _conflicts(["bind", "async"], MS.SYNCHRONOUS, check_sb=True) == [("async", "sync")]
    assert _conflicts(["bind", "dirsync"], MS.DIRSYNC, check_sb=True) == []
    assert _conflicts(["bind", "iversion"], 0, check_sb=True) == []   # not observable


def test_explain():
    found = conflicts(parse_options(["bind", "rw", "dev"]), MS.RDONLY | MS.NODEV)
    assert explain(found, "the source is locked {got} and {asked} was asked for") == (
        "the source is locked ro and rw was asked for; "
        "the source is locked nodev and dev was asked for")


def test_statvfs_flags():
    import os as _os
    assert statvfs_flags(_os.ST_RDONLY | _os.ST_NOSUID | _os.ST_RELATIME) == \
        MS.RDONLY | MS.NOSUID | MS.RELATIME
    assert statvfs_flags(_os.ST_NOATIME | _os.ST_NODIRATIME) == MS.NOATIME | MS.NODIRATIME
    assert statvfs_flags(_os.ST_NODEV) == MS.NODEV | MS.STRICTATIME   # no bit: strictatime
    assert statvfs_flags(0x2000 | 0x10) == MS.NOSYMFOLLOW | MS.SYNCHRONOUS | MS.STRICTATIME


def test_rec_conflicts_name_the_recursive_word():
    o = parse_options(["rbind", "rrw", "rnoatime"])
    tree = [MS.RELATIME, MS.RDONLY | MS.NOATIME]
    assert [(c.asked, c.got) for c in rec_conflicts(o, tree)] == [("rrw", "ro"),
                                                                  ("rnoatime", "relatime")]
    assert rec_conflicts(parse_options(["rro", "rnosuid"]), tree) == ()
    o = parse_options(["rnodiratime"])
    assert [(c.asked, c.got) for c in rec_conflicts(o, [MS.RELATIME])] == \
        [("rnodiratime", "diratime")]


# -- /proc/self/mountinfo -------------------------------------------------------

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
50 22 0:40 / /srv/a rw,nosuid - tmpfs tmpfs rw,size=1024k
60 50 0:41 / /srv/a/b\\040c ro,noatime - tmpfs tmpfs ro,sync
61 60 0:42 / /srv/a/b\\040c/d rw - tmpfs tmpfs rw,dirsync,lazytime
70 22 0:43 / /srv/x rw - tmpfs tmpfs rw
"""


def test_parse_mountinfo_unescapes_paths():
    entries = parse_mountinfo(MOUNTINFO)
    assert [e.mount_point for e in entries] == ["/", "/srv/a", "/srv/a/b c", "/srv/a/b c/d",
                                               "/srv/x"]
    e = entries[2]
    assert (e.mount_id, e.parent_id, e.options, e.fstype, e.source) == \
        (60, 50, "ro,noatime", "tmpfs", "tmpfs")
    assert e.sb_flags == MS.RDONLY | MS.SYNCHRONOUS
    assert entries[3].sb_flags == MS.DIRSYNC | MS.LAZYTIME


def test_descendants_parents_first():
    entries = parse_mountinfo(MOUNTINFO)
    assert [e.mount_id for e in descendants(entries, 50)] == [60, 61]
    assert [e.mount_id for e in descendants(entries, 22)] == [50, 70, 60, 61]
    assert descendants(entries, 70) == []


# -- idmapped mounts ------------------------------------------------------------

def _m(options=("bind", "idmap"), uids=(), gids=()):
    from migrate.oci import IdMapping, Mount
    return Mount(destination="/d", type="bind", source="/s", options=tuple(options),
                 uid_mappings=tuple(IdMapping(container_id=c, host_id=h, size=s) for c, h, s in uids),
                 gid_mappings=tuple(IdMapping(container_id=c, host_id=h, size=s) for c, h, s in gids))


def _linux(uids=(), gids=()):
    from migrate.oci import IdMapping, Linux
    return Linux(uid_mappings=tuple(IdMapping(container_id=c, host_id=h, size=s) for c, h, s in uids),
                 gid_mappings=tuple(IdMapping(container_id=c, host_id=h, size=s) for c, h, s in gids))


def test_idmap_ranges_of_the_mount_win():
    m = _m(uids=[(0, 100000, 65536)], gids=[(0, 200000, 1000)])
    assert idmap_ranges(m, _linux([(0, 5, 1)], [(0, 5, 1)]), container_userns=True) == \
        (((0, 100000, 65536),), ((0, 200000, 1000),))


def test_idmap_without_ranges_uses_the_container_user_namespace():
    linux = _linux([(0, 100000, 65536)], [(0, 100000, 65536)])
    assert idmap_ranges(_m(), linux, container_userns=True) == \
        (((0, 100000, 65536),), ((0, 100000, 65536),))
    with pytest.raises(UsageError, match="/d: idmap without uidMappings/gidMappings needs"):
        idmap_ranges(_m(), linux, container_userns=False)


def test_idmap_ranges_errors():
    with pytest.raises(UsageError, match="/d: uidMappings and gidMappings go together"):
        idmap_ranges(_m(uids=[(0, 1, 1)]), _linux(), container_userns=False)
    with pytest.raises(UsageError, match="need the idmap or ridmap option"):
        idmap_ranges(_m(("bind",), [(0, 1, 1)], [(0, 1, 1)]), _linux(), container_userns=False)
