"""The cases every ``Syscalls`` implementation must pass, fake or real.

``tests/unit/runtime/test_syscalls_contract.py`` runs them on
``FakeSyscalls``; ``tests/integration/test_syscalls_contract_linux.py`` runs
the same functions on ``LinuxSyscalls`` as root. Where the fake and the
kernel disagree, one of these fails, and the fake gets fixed.

Every case only makes calls that fail, or that touch files under the
harness's own temporary directory, so running them as root is harmless.
Cases are plain functions (no pytest) that raise ``AssertionError``.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Callable

__all__ = ["ContractHarness", "syscalls_contract_cases"]

# PID_MAX_LIMIT is 2**22 (include/linux/threads.h): no process has a larger
# pid, so kill() of it fails with ESRCH on any machine.
_NO_SUCH_PID = 2**22 + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractHarness:
    syscalls: object                    # a Syscalls implementation
    tmp: str                            # an empty directory the cases may use
    contents: Callable[[str], str | None]   # what write_file left at a path
    live_pid: int                       # kill(live_pid, 0) must succeed


def _expect_oserror(fn, *args, errno_: int, what: str) -> OSError:
    try:
        fn(*args)
    except OSError as err:
        assert err.errno == errno_, (
            f"{what}: errno {err.errno} ({err}), expected {errno.errorcode[errno_]}")
        return err
    raise AssertionError(f"{what}: no error, expected {errno.errorcode[errno_]}")


def write_file_to_existing_file(h: ContractHarness) -> None:
    path = os.path.join(h.tmp, "knob")
    with open(path, "w"):
        pass
    h.syscalls.write_file(path, "1\n")
    assert h.contents(path) == "1\n", h.contents(path)


def write_file_to_missing_path_is_enoent(h: ContractHarness) -> None:
    path = os.path.join(h.tmp, "missing", "knob")
    err = _expect_oserror(h.syscalls.write_file, path, "1", errno_=errno.ENOENT,
                          what="write_file of a missing path")
    assert isinstance(err, FileNotFoundError)
    assert not os.path.exists(path)


def kill_of_missing_pid_is_esrch(h: ContractHarness) -> None:
    err = _expect_oserror(h.syscalls.kill, _NO_SUCH_PID, 0, errno_=errno.ESRCH,
                          what="kill of a pid that cannot exist")
    assert isinstance(err, ProcessLookupError)


def kill_signal_zero_of_live_pid(h: ContractHarness) -> None:
    h.syscalls.kill(h.live_pid, 0)


def mount_on_missing_target_names_it(h: ContractHarness) -> None:
    target = os.path.join(h.tmp, "missing", "mnt")
    err = _expect_oserror(h.syscalls.mount, "tmpfs", target, "tmpfs", 0, None,
                          errno_=errno.ENOENT, what="mount on a missing target")
    assert err.filename == target, err.filename
    assert "mount" in str(err), str(err)
    assert not os.path.exists(target)


def umount_of_missing_target_is_enoent(h: ContractHarness) -> None:
    target = os.path.join(h.tmp, "missing")
    err = _expect_oserror(h.syscalls.umount, target, 0, errno_=errno.ENOENT,
                          what="umount of a missing target")
    assert err.filename == target, err.filename


def open_tree_of_missing_path_names_it(h: ContractHarness) -> None:
    path = os.path.join(h.tmp, "missing")
    err = _expect_oserror(h.syscalls.open_tree, path, errno_=errno.ENOENT,
                          what="open_tree of a missing path")
    assert err.filename == path, err.filename


def syscalls_contract_cases() -> tuple[Callable[[ContractHarness], None], ...]:
    return (
        write_file_to_existing_file,
        write_file_to_missing_path_is_enoent,
        kill_of_missing_pid_is_esrch,
        kill_signal_zero_of_live_pid,
        mount_on_missing_target_names_it,
        umount_of_missing_target_is_enoent,
        open_tree_of_missing_path_names_it,
    )
