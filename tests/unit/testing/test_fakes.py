"""FakeSyscalls: it records, fails on demand, refuses what it does not model,
and has the same methods and parameters as the Syscalls Protocol."""

import dataclasses
import errno
import inspect
import os

import pytest

from migrate.runtime.syscalls import MS, PR, LinuxSyscalls, Syscalls
from migrate.testing import (Capset, Chown, FakeSyscalls, Kill, Mknod, Mount, MountSetattr,
                             Prctl, Umount, WriteFile)


def _protocol_methods():
    return sorted(n for n, v in vars(Syscalls).items()
                  if callable(v) and not n.startswith("_"))


@pytest.mark.parametrize("impl", [FakeSyscalls, LinuxSyscalls], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", _protocol_methods())
def test_implementations_match_the_protocol(impl, name):
    want = inspect.signature(getattr(Syscalls, name))
    got = inspect.signature(vars(impl)[name])   # defined on the class, not via __getattr__
    assert [(p.name, p.kind, p.default) for p in got.parameters.values()] == \
        [(p.name, p.kind, p.default) for p in want.parameters.values()]


def test_calls_are_recorded_in_order_as_frozen_dataclasses(tmp_path):
    sys = FakeSyscalls(pids={42})
    sys.mount("proc", str(tmp_path), "proc", MS.NOSUID, None)
    sys.prctl(PR.SET_KEEPCAPS, 1)
    sys.kill(42, 9)
    sys.mount_setattr(str(tmp_path), attr_set=1, attr_clr=0, recursive=True)
    assert sys.calls == [
        Mount("proc", str(tmp_path), "proc", MS.NOSUID, None),
        Prctl(PR.SET_KEEPCAPS, 1),
        Kill(42, 9),
        MountSetattr(str(tmp_path), 1, 0, 0, True, 0),
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sys.calls[0].flags = 0
    assert sys.of(Kill) == [Kill(42, 9)]


def test_fail_on_nth_call_of_a_type(tmp_path):
    sys = FakeSyscalls()
    sys.fail_on(Mount, nth=2, errno=errno.EBUSY)
    sys.mount(None, str(tmp_path), None, 0, None)
    sys.write_file(os.devnull, "x")           # other types do not count
    with pytest.raises(OSError) as info:
        sys.mount("a", str(tmp_path), None, MS.BIND, None)
    assert info.value.errno == errno.EBUSY
    assert info.value.filename == str(tmp_path)
    assert "mount" in str(info.value)
    sys.mount(None, str(tmp_path), None, 0, None)   # only the 2nd fails
    assert len(sys.of(Mount)) == 3                  # the failed call is recorded


def test_fail_on_defaults_to_first_call_and_eperm():
    sys = FakeSyscalls()
    sys.fail_on(Capset)
    with pytest.raises(PermissionError) as info:
        sys.capset(1, 1, 0)
    assert info.value.errno == errno.EPERM


def test_fail_on_takes_call_types_only():
    sys = FakeSyscalls()
    with pytest.raises(TypeError):
        sys.fail_on("mount")
    with pytest.raises(ValueError):
        sys.fail_on(Mount, nth=0)


def test_clear_restarts_the_count(tmp_path):
    sys = FakeSyscalls()
    sys.fail_on(Umount, nth=1)
    with pytest.raises(OSError):
        sys.umount(str(tmp_path))
    sys.clear()
    assert sys.calls == []
    with pytest.raises(OSError):
        sys.umount(str(tmp_path))


def test_nothing_touches_the_system(tmp_path):
    sys = FakeSyscalls(pids={os.getpid()})
    knob = tmp_path / "knob"
    knob.write_text("old")
    sys.write_file(str(knob), "new")
    assert knob.read_text() == "old"
    assert sys.written(str(knob)) == "new"
    node = tmp_path / "null"
    sys.mknod(str(node), 0o20666, os.makedev(1, 3))
    sys.chown(str(knob), 12345, 12345)
    assert not node.exists()
    assert knob.stat().st_uid == os.getuid()
    sys.kill(os.getpid(), 9)                 # recorded, not sent
    assert sys.of(Mknod) and sys.of(Chown) and sys.of(Kill)


def test_written_ignores_failed_writes(tmp_path):
    sys = FakeSyscalls()
    sys.fail_on(WriteFile, nth=2)
    knob = str(tmp_path)
    sys.write_file(knob, "1")
    with pytest.raises(OSError):
        sys.write_file(knob, "2")
    assert sys.written(knob) == "1"
    assert sys.written("/nowhere") is None


def test_check_paths_can_be_turned_off():
    sys = FakeSyscalls(check_paths=False)
    sys.mount("tmpfs", "/no/such/dir", "tmpfs", 0, None)
    sys.write_file("/proc/4242/uid_map", "0 0 1\n")
    assert sys.written("/proc/4242/uid_map") == "0 0 1\n"


def test_kill_needs_a_known_pid():
    sys = FakeSyscalls(pids={7})
    sys.kill(7, 15)
    with pytest.raises(ProcessLookupError) as info:
        sys.kill(8, 15)
    assert info.value.errno == errno.ESRCH


def test_prctl_results_are_configurable():
    sys = FakeSyscalls(prctl_results={PR.CAPBSET_READ: 1})
    assert sys.prctl(PR.CAPBSET_READ, 21) == 1
    assert sys.prctl(PR.SET_DUMPABLE, 0) == 0


def test_unmodelled_calls_raise_not_implemented():
    sys = FakeSyscalls()
    with pytest.raises(NotImplementedError, match="does not model setresuid"):
        sys.setresuid(0, 0, 0)
    with pytest.raises(AttributeError):
        sys._private  # noqa: B018
