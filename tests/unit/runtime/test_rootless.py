"""The two rootless facts: a non-root EUID, and whether cgroup errors are tolerated."""

import pytest

from migrate.runtime.rootless import RootlessFacts, detect, in_user_namespace


@pytest.mark.parametrize("text,inside", [
    ("         0          0 4294967295\n", False),
    ("0 0 4294967295", False),
    ("         0       1000          1\n", True),
    ("0 100000 65536\n", True),
    ("0 0 4294967295\n1 1 1\n", True),
    ("", True),
])
def test_in_user_namespace(text, inside):
    assert in_user_namespace(text) is inside


def test_in_user_namespace_reads_proc_self():
    assert in_user_namespace() in (True, False)


@pytest.mark.parametrize("flag,euid,userns,cgroups", [
    ("auto", 0, False, False),
    ("auto", 1000, False, True),
    ("auto", 0, True, True),
    ("true", 0, False, True),
    ("false", 1000, True, False),
])
def test_detect(flag, euid, userns, cgroups):
    facts = detect(flag, euid=euid, in_userns=userns)
    assert facts == RootlessFacts(euid=euid != 0, cgroups=cgroups, in_userns=userns)
