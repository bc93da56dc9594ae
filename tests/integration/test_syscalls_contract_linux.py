"""The Syscalls contract on the real kernel (the fake's half is
tests/unit/runtime/test_syscalls_contract.py). Every case fails harmlessly
or touches only tmp_path."""

import os

import pytest

from migrate.runtime.syscalls import LinuxSyscalls
from migrate.testing import ContractHarness, syscalls_contract_cases


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.mark.requires("root")
@pytest.mark.parametrize("case", syscalls_contract_cases(), ids=lambda c: c.__name__)
def test_linux_syscalls_contract(case, tmp_path):
    case(ContractHarness(syscalls=LinuxSyscalls(), tmp=str(tmp_path), contents=_read,
                         live_pid=os.getpid()))
