"""The parent's half of the uid/gid map handshake: plan, then write."""

import errno
import subprocess

import pytest

from migrate.errors import KernelError, UsageError
from migrate.oci import IdMapping
from migrate.runtime import idmap
from migrate.runtime.idmap import IdMapPlan, format_map, plan_idmap, write_idmaps
from migrate.testing import FakeSyscalls, WriteFile


def _m(c, h, s):
    return IdMapping(container_id=c, host_id=h, size=s)


def test_format_map():
    assert format_map([(0, 1000, 1), (1, 100000, 65536)]) == "0 1000 1\n1 100000 65536\n"
    assert format_map([]) == ""


def test_privileged_writes_anything_directly():
    plan = plan_idmap([_m(0, 100000, 65536)], [_m(0, 100000, 65536)], privileged=True,
                      euid=0, egid=0)
    assert plan == IdMapPlan(uid_map=((0, 100000, 65536),), gid_map=((0, 100000, 65536),),
                             use_helpers=False, deny_setgroups=False)


def test_unprivileged_own_ids_deny_setgroups():
    plan = plan_idmap([_m(0, 1000, 1)], [_m(0, 1000, 1)], privileged=False, euid=1000,
                      egid=1000)
    assert plan.deny_setgroups and not plan.use_helpers


def test_unprivileged_wider_maps_need_helpers(monkeypatch):
    monkeypatch.setattr(idmap.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    plan = plan_idmap([_m(0, 1000, 1), _m(1, 100000, 65536)], [_m(0, 1000, 1)],
                      privileged=False, euid=1000, egid=1000)
    assert plan.use_helpers and not plan.deny_setgroups


def test_missing_helper_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(idmap.shutil, "which",
                        lambda tool: None if tool == "newgidmap" else "/usr/bin/newuidmap")
    with pytest.raises(UsageError, match="needs newgidmap"):
        plan_idmap([_m(0, 2000, 1)], [_m(0, 1000, 1)], privileged=False, euid=1000, egid=1000)


@pytest.mark.parametrize("uids,gids", [([], [_m(0, 0, 1)]), ([_m(0, 0, 1)], [])])
def test_both_maps_are_required(uids, gids):
    with pytest.raises(UsageError, match="uidMappings and linux.gidMappings"):
        plan_idmap(uids, gids, privileged=True, euid=0, egid=0)


def _proc(tmp_path, pid=77):
    d = tmp_path / str(pid)
    d.mkdir()
    for name in ("uid_map", "gid_map", "setgroups"):
        (d / name).write_text("")
    return str(tmp_path)


def test_write_order_unprivileged(tmp_path):
    sys = FakeSyscalls()
    plan = IdMapPlan(uid_map=((0, 1000, 1),), gid_map=((0, 1000, 1),), use_helpers=False,
                     deny_setgroups=True)
    write_idmaps(77, plan, sys.write_file, proc_root=_proc(tmp_path))
    base = f"{tmp_path}/77"
    # setgroups "deny" must come before gid_map (user_namespaces(7)).
    assert sys.calls == [WriteFile(f"{base}/setgroups", "deny"),
                         WriteFile(f"{base}/gid_map", "0 1000 1\n"),
                         WriteFile(f"{base}/uid_map", "0 1000 1\n")]


def test_write_privileged_skips_setgroups(tmp_path):
    sys = FakeSyscalls()
    plan = IdMapPlan(uid_map=((0, 100000, 65536),), gid_map=((0, 100000, 65536),),
                     use_helpers=False, deny_setgroups=False)
    write_idmaps(77, plan, sys.write_file, proc_root=_proc(tmp_path))
    assert [c.path.rsplit("/", 1)[1] for c in sys.calls] == ["gid_map", "uid_map"]


def test_write_failure_is_a_kernel_error_naming_the_file(tmp_path):
    sys = FakeSyscalls()
    sys.fail_on(WriteFile, nth=2, errno=errno.EPERM)
    plan = IdMapPlan(uid_map=((0, 1000, 1),), gid_map=((0, 1000, 1),), use_helpers=False,
                     deny_setgroups=True)
    with pytest.raises(KernelError) as info:
        write_idmaps(77, plan, sys.write_file, proc_root=_proc(tmp_path))
    assert info.value.path == f"{tmp_path}/77/gid_map"
    assert info.value.errno == errno.EPERM
    assert "Operation not permitted" in str(info.value)


def test_helpers_get_flat_ranges(monkeypatch):
    runs = []

    def fake_run(argv, **kw):
        runs.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(idmap.subprocess, "run", fake_run)
    plan = IdMapPlan(uid_map=((0, 1000, 1), (1, 100000, 65536)), gid_map=((0, 1000, 1),),
                     use_helpers=True, deny_setgroups=False)
    write_idmaps(77, plan, None)
    assert runs == [["newuidmap", "77", "0", "1000", "1", "1", "100000", "65536"],
                    ["newgidmap", "77", "0", "1000", "1"]]


def test_helper_failure_quotes_its_last_line(monkeypatch):
    monkeypatch.setattr(idmap.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 1, "", "newuidmap: uid range [1-65537) -> [100000-165536) not allowed\n"))
    plan = IdMapPlan(uid_map=((0, 1000, 1),), gid_map=((0, 1000, 1),), use_helpers=True,
                     deny_setgroups=False)
    with pytest.raises(UsageError, match=r"newuidmap 77 failed: newuidmap: uid range"):
        write_idmaps(77, plan, None)
