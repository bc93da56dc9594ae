"""The bring-up engine's own rules (no cgroups, no processes): undo order,
cleanup notes, what stays after success and after failure."""

import os

import pytest

from migrate.errors import UsageError
from migrate.runtime.context import RuntimeContext
from migrate.runtime.lifecycle.bringup import Bringup, ConsoleHandoff
from migrate.testing.fakes import FakeSyscalls


@pytest.fixture
def ctx(tmp_path):
    return RuntimeContext(root=str(tmp_path / "root"), syscalls=FakeSyscalls())


def _up(ctx, cid="c1"):
    return Bringup(ctx, cid, "create", spec=None, bundle="/b", facts=None)


def test_failure_undoes_in_reverse_scratch_first_and_removes_the_state(ctx):
    done = []
    with pytest.raises(UsageError) as info:
        with _up(ctx) as up:
            up.on_failure(lambda: done.append("u1"))
            up.always(lambda: done.append("s1"))
            up.on_failure(lambda: done.append("u2"), "second")
            up.always(lambda: done.append("s2"))
            up.on_failure(lambda: (_ for _ in ()).throw(OSError("busy")), "removing cgroups")
            state_dir = up.dir
            assert os.path.isdir(state_dir)
            raise UsageError("boom")
    assert done == ["s2", "s1", "u2", "u1"]
    assert info.value.__notes__ == ["cleanup: removing cgroups failed: busy"]
    assert not os.path.exists(state_dir)
    assert up.claim.fd == -1


def test_the_id_is_free_again_after_a_failure(ctx):
    with pytest.raises(UsageError):
        with _up(ctx):
            raise UsageError("boom")
    with _up(ctx) as up:
        assert os.path.isdir(up.dir)


def test_success_keeps_the_state_and_skips_the_failure_steps(ctx):
    done = []
    with _up(ctx) as up:
        up.on_failure(lambda: done.append("undo"))
        up.always(lambda: done.append("scratch"))
    assert done == ["scratch"] and os.path.isdir(up.dir) and up.claim.fd == -1


def test_the_console_goes_to_the_socket_or_is_kept(tmp_path):
    r, w = os.pipe()
    try:
        kept = ConsoleHandoff(None, keep=True)
        kept.give(r)
        assert kept.master is not None and kept.master != r
        os.close(kept.master)
        dropped = ConsoleHandoff(None, keep=False)
        dropped.give(r)
        assert dropped.master is None
    finally:
        os.close(r)
        os.close(w)
