import pytest

from migrate.runtime.foreground import Foreground
from migrate.testing import FakeSyscalls


@pytest.mark.parametrize("pid", [0, -1])
def test_wait_refuses_a_pid_that_would_signal_a_group(pid):
    # Waiting on pid 0 forwarded every signal with kill(0, sig): to our own
    # process group, SIGTERM included, at 100% CPU (issue 11, item 5).
    with pytest.raises(ValueError, match="process id"):
        Foreground(FakeSyscalls()).wait(pid)
