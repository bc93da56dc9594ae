"""Test doubles shipped with the runtime (for tests only: nothing in
``migrate`` imports this package).

``FakeSyscalls`` records calls to the ``Syscalls`` seam; the call types are
the dataclasses it records. ``syscalls_contract_cases`` are the cases that
both the fake and ``LinuxSyscalls`` must pass.
"""

from migrate.testing._contract import ContractHarness, syscalls_contract_cases
from migrate.testing.migration import FakeHostFacts, FakeRestore
from migrate.testing.fakes import (Call, Capset, Chown, FakeSyscalls, JoinSessionKeyring, Kill,
                                   MarkFdsCloexec, Mknod, MoveMount, Mount, MountSetattr,
                                   OpenTree, Personality, PivotRoot, Prctl, SeccompLoad, LandlockScope,
                                   SeccompPrepare, Setdomainname, Sethostname, Setns, Umount,
                                   Unshare, WriteFile)

__all__ = [
    "FakeSyscalls",
    "Call",
    "Mount",
    "Umount",
    "PivotRoot",
    "Setns",
    "Unshare",
    "Sethostname",
    "Setdomainname",
    "Mknod",
    "Chown",
    "Kill",
    "WriteFile",
    "Prctl",
    "Capset",
    "JoinSessionKeyring",
    "MountSetattr",
    "OpenTree",
    "MoveMount",
    "MarkFdsCloexec",
    "Personality",
    "SeccompPrepare",
    "SeccompLoad",
    "LandlockScope",
    "ContractHarness",
    "syscalls_contract_cases",
    "FakeHostFacts",
    "FakeRestore",
]
