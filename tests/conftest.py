import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import needs  # noqa: E402


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        for need in mark.args:
            reason = needs.check(need)
            if reason is not None:
                pytest.skip(f"requires {need}: {reason}")


requires = pytest.mark.requires
