"""Test doubles shipped with the runtime (for tests only: nothing in
``migrate`` imports this package).

``FakeSyscalls`` records calls to the ``Syscalls`` seam; the call types are
the dataclasses it records. ``syscalls_contract_cases`` are the cases that
both the fake and ``LinuxSyscalls`` must pass.
"""

from migrate.testing import fakes
from migrate.testing._contract import ContractHarness, syscalls_contract_cases
from migrate.testing.fakes import *  # noqa: F403 - the call types, listed in fakes.__all__
from migrate.testing.migration import FakeHostFacts, FakeRestore

__all__ = [*fakes.__all__, "ContractHarness", "syscalls_contract_cases",
           "FakeHostFacts", "FakeRestore"]
