"""What CRIU must be told is external, computed from /proc text (no CRIU)."""

import pytest

from migrate.checkpoint.externals import (ExternalMount, classify_mounts, describe_fd,
                                          describe_file, external_namespaces)
from migrate.errors import UnsupportedError
from migrate.runtime.mountinfo import parse_mountinfo

# Taken from a real container of ours (cgroup v1 hybrid host, one bind mount).
MOUNTINFO = """\
71 42 254:0 /tmp/b/rootfs / rw,relatime - ext4 /dev/vda rw
72 71 0:44 / /proc rw,relatime - proc proc rw
73 71 0:45 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
74 73 0:46 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
77 71 0:48 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
78 77 0:49 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
79 78 0:29 /migrate/c1 /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
87 78 0:37 /migrate/c1 /sys/fs/cgroup/systemd ro,nosuid - cgroup cgroup rw,name=systemd
88 78 0:38 /migrate/c1 /sys/fs/cgroup/unified ro,nosuid - cgroup2 cgroup2 rw
89 71 254:0 /srv/data /data ro,relatime - ext4 /dev/vda rw
47 72 0:44 /sys /proc/sys ro,relatime - proc proc rw
49 72 0:45 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
51 77 0:51 / /sys/firmware ro,relatime - tmpfs tmpfs ro
"""


def test_parse_mountinfo_fields_and_escapes():
    entries = parse_mountinfo(MOUNTINFO + r"99 71 0:60 / /with\040space rw - tmpfs tmpfs rw" + "\n")
    assert entries[0].mount_point == "/" and entries[0].root == "/tmp/b/rootfs"
    assert entries[-1].mount_point == "/with space"
    assert entries[6].fstype == "cgroup" and entries[6].dev == "0:29"


def test_classify_container_mounts():
    got = classify_mounts(parse_mountinfo(MOUNTINFO), bind_destinations={"/data"},
                          masked_paths={"/proc/keys"}, notify_dir=None)
    assert got == [
        ExternalMount(mountpoint="/sys/fs/cgroup/cpu", kind="cgroup", detail="cpu"),
        ExternalMount(mountpoint="/sys/fs/cgroup/systemd", kind="cgroup", detail="systemd"),
        ExternalMount(mountpoint="/sys/fs/cgroup/unified", kind="cgroup", detail="unified"),
        ExternalMount(mountpoint="/data", kind="bind"),
    ]
    # /proc/sys (from the container's /proc) and /proc/keys (the container's
    # own /dev/null) are internal binds CRIU recreates itself.


def test_masked_host_file_and_devices_in_a_user_namespace():
    text = MOUNTINFO.replace("0:45 /null /proc/keys", "0:5 /null /proc/keys").replace(
        "tmpfs tmpfs rw,size=65536k,mode=755\n51", "devtmpfs udev rw\n51")
    text += "60 73 0:5 /null /dev/null rw,nosuid - devtmpfs udev rw\n"
    got = classify_mounts(parse_mountinfo(text), bind_destinations={"/data"},
                          masked_paths={"/proc/keys"}, notify_dir=None)
    assert ExternalMount(mountpoint="/proc/keys", kind="mask") in got
    assert ExternalMount(mountpoint="/dev/null", kind="device", detail="/dev/null") in got


def test_unknown_outside_mount_is_refused():
    text = MOUNTINFO + "95 71 254:0 /etc/secret /secret rw - ext4 /dev/vda rw\n"
    with pytest.raises(UnsupportedError, match="/secret"):
        classify_mounts(parse_mountinfo(text), bind_destinations={"/data"},
                        masked_paths=set(), notify_dir=None)


def test_pure_v2_cgroup_mount():
    text = ("1 0 254:0 /r / rw - ext4 /dev/vda rw\n"
            "2 1 0:30 /migrate/x /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n")
    got = classify_mounts(parse_mountinfo(text), bind_destinations=set(), masked_paths=set(),
                          notify_dir=None)
    assert got == [ExternalMount(mountpoint="/sys/fs/cgroup", kind="cgroup", detail="")]


def test_describe_stdio():
    assert describe_fd(0, "pipe:[123]", "", 123).external == "pipe:[123]"
    assert describe_fd(1, "/dev/pts/0", "mnt_id:\t40\n", 3).external is None
    file = describe_fd(2, "/var/log/x", "pos:\t0\nflags:\t02\nmnt_id:\t27\n", 0x20c046)
    assert file.external == "file[1b:20c046]"     # CRIU's own key format, in hex


def test_a_file_on_the_containers_own_mounts_is_not_external():
    """``exec >/tmp/log`` in the init: CRIU dumps that file by its path."""
    inside = frozenset({100, 108})
    assert describe_fd(1, "/tmp/log", "mnt_id:\t108\n", 9, 0o100644,
                       inside=inside).external is None
    assert describe_fd(1, "/var/log/x", "mnt_id:\t27\n", 9, 0o100644,
                       inside=inside).external == "file[1b:9]"
    assert describe_fd(1, "pipe:[5]", "mnt_id:\t15\n", 5, 0o10600,
                       inside=frozenset({15})).external == "pipe:[5]"


def _rec(fd, path, mnt_id=27, inode=9, mode=0o100644):
    return {"fd": fd, "path": path, "mnt_id": mnt_id, "inode": inode, "mode": mode}


DEV_NULL = _rec(0, "/dev/null", 6, 5, 0o20666)


def test_stdio_without_a_record_is_what_the_fds_are_now():
    from migrate.checkpoint.externals import Descriptor, stdio_descriptors

    now = [describe_file(0, "/dev/null", 6, 5, 0o20666),
           describe_file(2, "/var/log/x", 27, 9, 0o100644)]
    got = stdio_descriptors([], now)
    assert [(d.fd, d.path, d.external) for d in got] == [
        (0, "/dev/null", None), (1, "/dev/null", None),     # closed: as runc's index needs
        (2, "/var/log/x", "file[1b:9]")]
    assert got[1] == Descriptor(fd=1, path="/dev/null", external=None)
    # a record of fds create could not read is no record
    unread = [_rec(fd, "", None, 0, 0) for fd in range(3)]
    assert stdio_descriptors(unread, now) == got


def test_stdio_moved_to_another_fd_is_declared_from_the_record():
    """The race this exists for: at checkpoint time fd 1 points inside the
    container and the host file that was stdout is on fd 10."""
    from migrate.checkpoint.externals import stdio_descriptors

    recorded = [DEV_NULL, _rec(1, "/run/out", inode=0x21), _rec(2, "/run/out", inode=0x21)]
    now = [describe_file(0, "/dev/null", 6, 5, 0o20666),
           describe_file(1, "/tmp/seen", 108, 0x33, 0o100644, inside=frozenset({108})),
           describe_file(2, "/run/out", 27, 0x21, 0o100644)]
    got = stdio_descriptors(recorded, now, inside=frozenset({108}))
    assert [(d.fd, d.path, d.external) for d in got] == [
        (0, "/dev/null", None), (1, "/run/out", "file[1b:21]"), (2, "/run/out", "file[1b:21]")]


def test_stdio_adds_host_files_that_are_not_in_the_record():
    from migrate.checkpoint.externals import stdio_descriptors

    recorded = [DEV_NULL, _rec(1, "pipe:[7]", 15, 7, 0o10600), _rec(2, "", None, 0, 0)]
    now = [describe_file(0, "/var/log/new", 27, 0x40, 0o100644),      # a host file: added
           describe_file(1, "pipe:[8]", 15, 8, 0o10600),              # a pipe of its own: dumped
           describe_file(2, "/tmp/x", 108, 3, 0o100644, inside=frozenset({108}))]
    got = stdio_descriptors(recorded, now, inside=frozenset({108}))
    assert [(d.fd, d.path, d.external) for d in got] == [
        (0, "/dev/null", None), (1, "pipe:[7]", "pipe:[7]"), (2, "/dev/null", None),
        (0, "/var/log/new", "file[1b:40]")]


def test_stdio_recorded_on_the_containers_mounts_is_not_external():
    """A container in the host's mount namespace: its stdio files are paths
    CRIU can dump (and declaring them would map them onto the restorer's)."""
    from migrate.checkpoint.externals import stdio_descriptors

    got = stdio_descriptors([_rec(1, "/var/log/x")], [], inside=frozenset({27}))
    assert [d.external for d in got] == [None]


def test_external_namespaces():
    ext, keys = external_namespaces({"network": "/proc/9/ns/net", "ipc": "/proc/9/ns/ipc"},
                                    {"network", "ipc"}, lambda path: 4026531992)
    assert ext == ["net[4026531992]:extRootNetNS"]
    assert keys == {"network": "extRootNetNS"}


# -- the empty read-only tmpfs over masked directories ----------------------

MASKED = {"/sys/firmware", "/proc/acpi", "/proc/keys"}


def _masked(text, *, can_remount=False, empty=lambda mp: True):
    from migrate.checkpoint.externals import masked_tmpfs_mounts

    return masked_tmpfs_mounts(parse_mountinfo(text), masked_paths=MASKED,
                               can_remount=can_remount, is_empty=empty)


def test_masked_tmpfs_that_is_empty_and_read_only_is_external():
    from migrate.checkpoint.externals import MASKED_TMPFS

    got = _masked(MOUNTINFO + "52 72 0:52 / /proc/acpi ro,relatime - tmpfs tmpfs ro\n")
    assert got == [ExternalMount(mountpoint="/sys/firmware", kind=MASKED_TMPFS,
                                 detail="ro,relatime ro"),
                   ExternalMount(mountpoint="/proc/acpi", kind=MASKED_TMPFS,
                                 detail="ro,relatime ro")]


@pytest.mark.parametrize("line", [
    "52 72 0:52 / /proc/acpi rw,relatime - tmpfs tmpfs rw",     # remounted rw
    "52 72 0:52 / /proc/acpi ro,relatime - tmpfs tmpfs rw",     # superblock rw
    "52 72 0:52 / /proc/bus ro,relatime - tmpfs tmpfs ro",      # not a masked path
    "52 72 0:52 /sub /proc/acpi ro,relatime - tmpfs tmpfs ro",  # a bind of part of one
    "52 72 0:3 / /proc/acpi ro,relatime - proc proc ro",        # not a tmpfs
])
def test_masked_tmpfs_changed_since_create_is_dumped(line):
    got = _masked(MOUNTINFO + line + "\n")
    assert [m.mountpoint for m in got] == ["/sys/firmware"]


def test_masked_tmpfs_with_a_mount_on_or_below_it_is_dumped():
    on = "53 51 0:53 / /sys/firmware ro,relatime - tmpfs tmpfs ro\n"
    below = "53 51 0:53 / /sys/firmware/x ro,relatime - tmpfs tmpfs ro\n"
    assert _masked(MOUNTINFO + on) == []
    assert _masked(MOUNTINFO + below) == []


def test_masked_tmpfs_not_empty_or_remountable_is_dumped():
    assert _masked(MOUNTINFO, empty=lambda mp: False) == []
    assert _masked(MOUNTINFO, can_remount=True) == []


def test_may_remount_reads_cap_sys_admin_from_bounding_sets():
    from migrate.checkpoint.externals import may_remount

    default = "00000000a80425fb"        # runc spec's bounding set: no CAP_SYS_ADMIN
    assert may_remount([default, default]) is False
    assert may_remount([default, "000001ffffffffff"]) is True
    assert may_remount([None]) is True and may_remount(["zz"]) is True
    assert may_remount([]) is False


def _ro(text, *, can_remount=False, listing=None):
    from migrate.checkpoint.externals import ro_tmpfs_mounts

    default = {"/sys/fs/cgroup": [("cpu", "dir", ""), ("systemd", "dir", ""),
                                  ("unified", "dir", ""), ("cpuacct", "symlink", "cpu")]}
    listing = default if listing is None else listing
    return ro_tmpfs_mounts(parse_mountinfo(text), masked_paths=MASKED, can_remount=can_remount,
                           list_dir=lambda mp: listing.get(mp))


def test_read_only_tmpfs_of_mount_points_and_symlinks_is_external():
    import json

    from migrate.checkpoint.externals import RO_TMPFS

    (got,) = _ro(MOUNTINFO)
    assert got.mountpoint == "/sys/fs/cgroup" and got.kind == RO_TMPFS
    assert json.loads(got.detail) == {
        "options": "ro,nosuid,nodev,noexec,relatime", "super": "rw,mode=755",
        "entries": [["cpu", "dir", ""], ["cpuacct", "symlink", "cpu"], ["systemd", "dir", ""],
                    ["unified", "dir", ""]]}


@pytest.mark.parametrize("listing", [
    {"/sys/fs/cgroup": [("cpu", "dir", ""), ("systemd", "dir", ""), ("unified", "dir", ""),
                        ("notes", "other", "")]},                      # a file in it
    {"/sys/fs/cgroup": [("cpu", "dir", ""), ("systemd", "dir", ""), ("unified", "dir", ""),
                        ("spare", "dir", "")]},                        # a dir nothing is on
    {"/sys/fs/cgroup": [("cpu", "dir", ""), ("systemd", "dir", "")]},  # a mount point unseen
    {},                                                                # unreadable
])
def test_read_only_tmpfs_with_anything_else_is_dumped(listing):
    assert _ro(MOUNTINFO, listing=listing) == []


def test_read_only_tmpfs_that_may_have_changed_is_dumped():
    assert _ro(MOUNTINFO, can_remount=True) == []
    rw = MOUNTINFO.replace("/sys/fs/cgroup ro,nosuid", "/sys/fs/cgroup rw,nosuid")
    assert _ro(rw) == []


def test_writable_tmpfs_with_mounts_only_directly_on_it_is_copied():
    import json

    from migrate.checkpoint.externals import TMPFS_COPY, copied_tmpfs_mounts

    got = copied_tmpfs_mounts(parse_mountinfo(MOUNTINFO), masked_paths=MASKED, can_remount=False,
                              taken={"/sys/fs/cgroup"})
    assert [(m.mountpoint, m.kind) for m in got] == [("/dev", TMPFS_COPY)]
    assert json.loads(got[0].detail) == {"options": "rw,nosuid", "super": "rw,size=65536k,mode=755",
                                         "mountpoints": ["pts"], "copy": 0}
    assert copied_tmpfs_mounts(parse_mountinfo(MOUNTINFO), masked_paths=MASKED, can_remount=True,
                               taken=set()) == []
    deep = MOUNTINFO + "90 73 0:61 / /dev/x/y rw - tmpfs tmpfs rw\n"   # not on a mount point of it
    assert all(m.mountpoint != "/dev" for m in copied_tmpfs_mounts(
        parse_mountinfo(deep), masked_paths=MASKED, can_remount=False, taken=set()))
