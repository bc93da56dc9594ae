"""The Syscalls contract on FakeSyscalls (the LinuxSyscalls half runs as root
in tests/integration/test_syscalls_contract_linux.py)."""

import os

import pytest

from migrate.testing import ContractHarness, FakeSyscalls, syscalls_contract_cases


@pytest.mark.parametrize("case", syscalls_contract_cases(), ids=lambda c: c.__name__)
def test_fake_syscalls_contract(case, tmp_path):
    sys = FakeSyscalls(pids={os.getpid()})
    case(ContractHarness(syscalls=sys, tmp=str(tmp_path), contents=sys.written,
                         live_pid=os.getpid()))
