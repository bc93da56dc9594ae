"""One decoder for /proc/PID/mountinfo: a second hand-written one (there
were four) drifts in escapes and optional fields."""

import pathlib

from migrate.runtime.mountinfo import parse_mountinfo, read_mountinfo

PACKAGE = pathlib.Path(__file__).resolve().parents[3] / "migrate"


def test_only_mountinfo_py_splits_mountinfo_lines():
    # Every parser of the format splits a line at " - " (the separator
    # before the file system type); only the one module may.
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name != "mountinfo.py" and 'partition(" - ")' in p.read_text()]
    assert offenders == []


def test_optional_fields_and_escapes():
    text = ("36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n"
            "37 36 0:5 / /x rw - tmpfs none\n")
    a, b = parse_mountinfo(text)
    assert (a.mount_id, a.parent_id, a.root, a.mount_point, a.fstype, a.source) == \
        (36, 35, "/mnt1", "/mnt two", "ext3", "/dev/root")
    assert a.super_options == "rw,errors=continue" and b.super_options == ""


def test_reads_this_process():
    assert any(e.mount_point == "/" for e in read_mountinfo())
