"""checkpoint/restore flags: runc's spellings become CRIU's values at the CLI,
and bad values are usage errors (exit 2), never internal errors (exit 70)."""

import pytest

from migrate.cli import checkpoint as cli
from migrate.cli.main import main
from migrate.checkpoint import dump, restore
from migrate.criu_rpc import CgroupMode, NetworkLock
from migrate.errors import UsageError
from migrate.runtime.context import RuntimeContext
from migrate.testing import FakeSyscalls


@pytest.fixture
def ctx(tmp_path):
    return RuntimeContext(root=str(tmp_path / "root"), syscalls=FakeSyscalls())


@pytest.fixture
def seen(monkeypatch):
    got = {}

    def checkpoint(ctx, opts):
        got["checkpoint"] = opts
        return "/images"

    def restore_(ctx, opts):
        got["restore"] = opts
        return 0

    monkeypatch.setattr(dump, "checkpoint", checkpoint)
    monkeypatch.setattr(restore, "restore", restore_)
    return got


@pytest.mark.parametrize("spelling, mode", [("soft", CgroupMode.SOFT), ("full", CgroupMode.FULL),
                                            ("strict", CgroupMode.STRICT),
                                            ("ignore", CgroupMode.IGNORE)])
def test_manage_cgroups_mode_is_criu_enum(ctx, seen, spelling, mode):
    cli.checkpoint_cmd(ctx, ["--manage-cgroups-mode", spelling, "c1"])
    assert seen["checkpoint"].manage_cgroups_mode is mode
    cli.restore_cmd(ctx, [f"--manage-cgroups-mode={spelling}", "c1"])
    assert seen["restore"].manage_cgroups_mode is mode


@pytest.mark.parametrize("spelling, lock", [("iptables", NetworkLock.IPTABLES),
                                            ("nftables", NetworkLock.NFTABLES),
                                            ("skip", NetworkLock.SKIP)])
def test_network_lock_is_criu_enum(ctx, seen, spelling, lock):
    cli.checkpoint_cmd(ctx, ["--network-lock", spelling, "c1"])
    assert seen["checkpoint"].network_lock is lock


def test_empty_ns_network_is_criu_net(ctx, seen):
    cli.checkpoint_cmd(ctx, ["--empty-ns", "network", "c1"])
    assert seen["checkpoint"].empty_ns == frozenset({"net"})
    cli.restore_cmd(ctx, ["--empty-ns", "network", "--empty-ns", "net", "c1"])
    assert seen["restore"].empty_ns == frozenset({"net"})


def test_defaults_are_unset(ctx, seen):
    cli.checkpoint_cmd(ctx, ["c1"])
    opts = seen["checkpoint"]
    assert opts.manage_cgroups_mode is None and opts.network_lock is None
    assert opts.empty_ns == frozenset()


@pytest.mark.parametrize("argv, what", [
    (["--manage-cgroups-mode", "SOFT", "c1"], "manage-cgroups-mode"),
    (["--manage-cgroups-mode", "props", "c1"], "manage-cgroups-mode"),
    (["--network-lock", "ipfw", "c1"], "network-lock"),
    (["--empty-ns", "pid", "c1"], "empty-ns"),
])
def test_bad_values_are_usage_errors(ctx, seen, argv, what):
    with pytest.raises(UsageError, match=what):
        cli.checkpoint_cmd(ctx, argv)
    assert "checkpoint" not in seen


@pytest.mark.parametrize("command", ["checkpoint", "restore"])
def test_bad_value_exits_2_not_70(tmp_path, capsys, command):
    code = main(["--root", str(tmp_path), command, "--manage-cgroups-mode", "bogus", "c1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and "manage-cgroups-mode" in err
