"""The rootless decision table (EUID, user namespace, $USER, XDG_RUNTIME_DIR,
--rootless, --root), every row; the state directory's mode; the checks that
name what a rootless config asks for and cannot have; the PID-namespace
walk; and the unprivileged-CRIU decision."""

import os
import stat
import struct
from types import SimpleNamespace as NS

import pytest

from migrate.checkpoint.unprivileged import (CAPS, CriuCaps, blocker, criu_unprivileged_options,
                                             parse_vfs_cap)
from migrate.errors import UsageError
from migrate.oci import parse_config
from migrate.oci.validate import ConfigError
from migrate.runtime import pidns, rootless
from migrate.runtime.idmap import IdMapPlan, parse_subid, uncovered
from migrate.runtime.rootdir import DEFAULT_ROOT, prepare_root
from migrate.runtime.rootless import RootlessFacts, decide, detect, in_user_namespace

XDG = "/run/user/1000"

# -- the state directory: EUID x user namespace x $USER x XDG_RUNTIME_DIR ------
# None in "want" means: a UsageError (no usable directory).
ROOT_ROWS = [
    # euid  userns  USER     XDG    want
    (0,     False,  None,    False, DEFAULT_ROOT),
    (0,     False,  None,    True,  DEFAULT_ROOT),     # root ignores XDG_RUNTIME_DIR
    (0,     False,  "root",  False, DEFAULT_ROOT),
    (0,     False,  "root",  True,  DEFAULT_ROOT),
    (0,     False,  "alice", False, DEFAULT_ROOT),
    (0,     False,  "alice", True,  DEFAULT_ROOT),     # ... whatever $USER says
    (0,     True,   None,    False, DEFAULT_ROOT),
    (0,     True,   None,    True,  DEFAULT_ROOT),     # $USER unset: /run/migrate
    (0,     True,   "root",  False, DEFAULT_ROOT),
    (0,     True,   "root",  True,  DEFAULT_ROOT),     # $USER=root: /run/migrate
    (0,     True,   "alice", False, DEFAULT_ROOT),     # no XDG: nothing else to use
    (0,     True,   "alice", True,  XDG + "/migrate"),  # the one userns-root XDG row
    (1000,  False,  None,    False, None),
    (1000,  False,  None,    True,  XDG + "/migrate"),
    (1000,  False,  "root",  False, None),
    (1000,  False,  "root",  True,  XDG + "/migrate"),  # $USER does not matter
    (1000,  False,  "alice", False, None),
    (1000,  False,  "alice", True,  XDG + "/migrate"),
    (1000,  True,   None,    False, None),
    (1000,  True,   None,    True,  XDG + "/migrate"),
    (1000,  True,   "root",  False, None),
    (1000,  True,   "root",  True,  XDG + "/migrate"),
    (1000,  True,   "alice", False, None),
    (1000,  True,   "alice", True,  XDG + "/migrate"),
]


def _env(user, xdg):
    env = {}
    if user is not None:
        env["USER"] = user
    if xdg:
        env["XDG_RUNTIME_DIR"] = XDG
    return env


@pytest.mark.parametrize("euid,userns,user,xdg,want", ROOT_ROWS)
def test_state_directory(euid, userns, user, xdg, want):
    if want is None:
        with pytest.raises(UsageError, match="XDG_RUNTIME_DIR is not set.*--root DIR"):
            decide("auto", euid=euid, in_userns=userns, environ=_env(user, xdg))
        return
    d = decide("auto", euid=euid, in_userns=userns, environ=_env(user, xdg))
    assert (d.root, d.root_is_default) == (want, True)


@pytest.mark.parametrize("euid,userns,user,xdg,_want", ROOT_ROWS)
def test_root_flag_always_wins(euid, userns, user, xdg, _want):
    d = decide("auto", euid=euid, in_userns=userns, environ=_env(user, xdg), root="/srv/state")
    assert (d.root, d.root_is_default) == ("/srv/state", False)


def test_relative_xdg_runtime_dir_is_refused():
    with pytest.raises(UsageError, match="not an absolute path"):
        decide("auto", euid=1000, in_userns=False, environ={"XDG_RUNTIME_DIR": "run"})


# -- the two facts: EUID x user namespace x --rootless --------------------------
FACT_ROWS = [
    # euid  userns  flag     rootless EUID  rootless cgroups  state "rootless"
    (0,     False,  "auto",  False,         False,            False),  # never rootless
    (0,     False,  "true",  False,         True,             False),
    (0,     False,  "false", False,         False,            False),
    (0,     True,   "auto",  False,         True,             False),  # root in a userns
    (0,     True,   "true",  False,         True,             False),
    (0,     True,   "false", False,         False,            False),
    (1000,  False,  "auto",  True,          True,             True),
    (1000,  False,  "true",  True,          True,             True),
    (1000,  False,  "false", True,          False,            False),
    (1000,  True,   "auto",  True,          True,             True),
    (1000,  True,   "true",  True,          True,             True),
    (1000,  True,   "false", True,          False,            False),
]


@pytest.mark.parametrize("euid,userns,flag,r_euid,r_cgroups,reported", FACT_ROWS)
def test_facts(euid, userns, flag, r_euid, r_cgroups, reported):
    env = {"XDG_RUNTIME_DIR": XDG}
    facts = decide(flag, euid=euid, in_userns=userns, environ=env).facts
    assert facts == RootlessFacts(euid=r_euid, cgroups=r_cgroups, in_userns=userns)
    # What `state` prints: both facts must hold (query.state).
    assert (facts.euid and facts.cgroups) is reported


def test_own_id_maps_are_read_once_per_process(tmp_path, monkeypatch):
    (tmp_path / "self").mkdir()
    (tmp_path / "self/uid_map").write_text("         0       1000          1\n")
    (tmp_path / "self/gid_map").write_text("0 1000 1\n1 100000 65536\n")
    proc = str(tmp_path)
    first = rootless.own_id_maps(proc)
    assert first == (((0, 1000, 1),), ((0, 1000, 1), (1, 100000, 65536)))
    (tmp_path / "self/uid_map").write_text("0 0 4294967295\n")
    assert rootless.own_id_maps(proc) == first        # cached
    (tmp_path / "self/uid_map").unlink()
    assert rootless.own_id_maps(str(tmp_path / "missing")) == (
        ((0, 0, 4294967295),), ((0, 0, 4294967295),))  # unreadable: the initial namespace


def test_parse_id_map_skips_garbage():
    assert rootless.parse_id_map("0 1000 1\nnonsense\n1 2\n") == ((0, 1000, 1),)


# -- the state directory on disk -------------------------------------------------


def test_private_root_is_created_0700_and_sticky(tmp_path):
    path = str(tmp_path / "xdg/migrate")
    prepare_root(path, private=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o1700


def test_private_root_that_exists_gets_the_sticky_bit(tmp_path):
    path = tmp_path / "migrate"
    path.mkdir(mode=0o711)
    prepare_root(str(path), private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o1700


def test_shared_root_is_0711(tmp_path):
    path = str(tmp_path / "run-migrate")
    prepare_root(path, private=False)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o711


def test_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "migrate").write_text("")
    with pytest.raises(UsageError, match="is not a directory"):
        prepare_root(str(tmp_path / "migrate"), private=True)


def test_root_that_cannot_be_created_names_it(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"cannot create state directory .*/file/migrate: "
                                         r".*check XDG_RUNTIME_DIR, or pass --root DIR"):
        prepare_root(str(tmp_path / "file/migrate"), private=True)


# -- what a rootless config may ask for ------------------------------------------


def _spec(**changes):
    config = {
        "ociVersion": "1.2.0",
        "root": {"path": "/rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "mounts": [{"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                    "options": ["nosuid", "mode=0620"]}],
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "user"}],
                  "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                  "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]},
    }
    config.update(changes)      # top-level keys only
    return parse_config(config, bundle="/b")


def _plan(spec, *, helpers=False, deny=True):
    linux = spec.linux
    return IdMapPlan(uid_map=tuple((m.container_id, m.host_id, m.size) for m in linux.uid_mappings),
                     gid_map=tuple((m.container_id, m.host_id, m.size) for m in linux.gid_mappings),
                     use_helpers=helpers, deny_setgroups=deny)


USER = RootlessFacts(euid=True, cgroups=True, in_userns=False)
USERNS_ROOT = RootlessFacts(euid=False, cgroups=True, in_userns=True)
ROOT = RootlessFacts(euid=False, cgroups=False, in_userns=False)


def test_a_plain_rootless_config_passes():
    spec = _spec()
    rootless.check_spec(spec, USER, _plan(spec))


def test_rootless_euid_needs_a_user_namespace():
    spec = _spec(linux={"namespaces": [{"type": "mount"}]})
    with pytest.raises(ConfigError, match=r"config.json: linux.namespaces: running as a non-root "
                                          r"user \(uid \d+\) needs a user namespace"):
        rootless.check_spec(spec, USER, None)
    rootless.check_spec(spec, ROOT, None)       # root needs none


def test_a_joined_user_namespace_is_not_checked():
    spec = _spec(linux={"namespaces": [{"type": "mount"}, {"type": "user", "path": "/proc/1/ns/user"}]})
    rootless.check_spec(spec, USER, None)


@pytest.mark.parametrize("option,where", [("gid=5", "gid"), ("uid=1000", "uid")])
def test_mount_id_option_must_be_mapped(option, where):
    spec = _spec(mounts=[{"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                          "options": ["nosuid", option]}])
    key = "linux.gidMappings" if where == "gid" else "linux.uidMappings"
    with pytest.raises(ConfigError, match=rf'mounts\[0\].options: "{option}" of "/dev/pts" names '
                                          rf"an ID that is not mapped in the {key} \(mapped: 0\)"):
        rootless.check_spec(spec, USER, _plan(spec))


def test_mount_id_option_mapped_by_a_range_passes():
    spec = _spec(mounts=[{"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                          "options": ["gid=5"]}],
                 linux=_ranges([(0, os.geteuid(), 1)], [(0, os.getegid(), 1), (1, 100000, 65536)]))
    rootless.check_spec(spec, USER, _plan(spec, helpers=True, deny=False),
                        subids=("", f"{os.getegid()}:100000:65536\n"))


def test_mount_id_option_against_our_own_maps_for_root_in_a_user_namespace():
    spec = _spec(mounts=[{"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                          "options": ["gid=5"]}],
                 linux={"namespaces": [{"type": "mount"}]})
    single = (((0, 1000, 1),), ((0, 1000, 1),))
    with pytest.raises(ConfigError, match=r'"gid=5" of "/dev/pts" names an ID that is not mapped '
                                          r"in the gid_map of this user namespace \(mapped: 0\)"):
        rootless.check_spec(spec, USERNS_ROOT, None, own_maps=single)
    many = (((0, 1000, 1), (1, 100000, 65536)), ((0, 1000, 1), (1, 100000, 65536)))
    rootless.check_spec(spec, USERNS_ROOT, None, own_maps=many)
    rootless.check_spec(spec, ROOT, None, own_maps=single)   # initial namespace: not checked


@pytest.mark.parametrize("user,where", [
    ({"uid": 1000, "gid": 0}, r"process.user.uid: 1000 is not mapped in the linux.uidMappings"),
    ({"uid": 0, "gid": 1000}, r"process.user.gid: 1000 is not mapped in the linux.gidMappings"),
    ({"uid": 0, "gid": 0, "additionalGids": [0, 100]},
     r"process.user.additionalGids\[1\]: 100 is not mapped in the linux.gidMappings"),
])
def test_process_ids_must_be_mapped(user, where):
    spec = _spec(process={"args": ["sh"], "cwd": "/", "user": user})
    with pytest.raises(ConfigError, match=where):
        rootless.check_spec(spec, USER, _plan(spec))


def test_additional_groups_need_newgidmap():
    spec = _spec(process={"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0,
                                                               "additionalGids": [0]}})
    with pytest.raises(ConfigError, match=r"process.user.additionalGids: supplementary groups "
                                          r"need setgroups\(2\).*newgidmap"):
        rootless.check_spec(spec, USER, _plan(spec, deny=True))
    rootless.check_spec(spec, USER, _plan(spec, deny=False))


def _ranges(uid_ranges, gid_ranges):
    def maps(ranges):
        return [{"containerID": c, "hostID": h, "size": s} for c, h, s in ranges]
    return {"namespaces": [{"type": "mount"}, {"type": "user"}],
            "uidMappings": maps(uid_ranges), "gidMappings": maps(gid_ranges)}


def test_helper_ranges_must_be_delegated():
    me, my_gid = os.geteuid(), os.getegid()
    spec = _spec(linux=_ranges([(0, me, 1), (1, 200000, 10)], [(0, my_gid, 1)]))
    subids = (f"{me}:100000:65536\n", f"{my_gid}:100000:65536\n")
    with pytest.raises(ConfigError, match=r"linux.uidMappings\[1\]: host IDs 200000-200009 are not "
                                          r'delegated to ".*" in /etc/subuid \(delegated: '
                                          r"100000-165535; your own ID"):
        rootless.check_spec(spec, USER, _plan(spec, helpers=True, deny=False), subids=subids)
    spec = _spec(linux=_ranges([(0, me, 1), (1, 100000, 65536)],
                               [(0, my_gid, 1), (1, 100000, 65536)]))
    rootless.check_spec(spec, USER, _plan(spec, helpers=True, deny=False), subids=subids)
    with pytest.raises(ConfigError, match=r"linux.gidMappings\[1\].*/etc/subgid \(delegated: none"):
        rootless.check_spec(spec, USER, _plan(spec, helpers=True, deny=False),
                            subids=(subids[0], ""))


def test_subid_parsing_and_coverage():
    text = "alice:100000:10\n1000:100010:5\nbob:5:5\n# comment\nbad\n"
    ranges = parse_subid(text, ("alice", "1000"))
    assert ranges == [(100000, 10), (100010, 5)]
    assert not uncovered(100000, 15, ranges)     # spans two adjacent entries
    assert uncovered(100000, 16, ranges)
    assert uncovered(99999, 2, ranges)
    assert not uncovered(100012, 1, ranges)


# -- PID namespace walk (no cgroup) ------------------------------------------------


def _proc(tmp_path, procs):
    """procs: pid -> (ppid, namespace name); namespaces are hard links of one file."""
    root = tmp_path / "proc"
    ns_files = {}
    for pid, (ppid, ns) in procs.items():
        d = root / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "stat").write_text(f"{pid} (sh (x)) S {ppid} 1 1 0\n")
        if ns not in ns_files:
            ns_files[ns] = tmp_path / f"ns-{ns}"
            ns_files[ns].write_text(ns)
        os.link(ns_files[ns], d / "ns/pid")
    (root / "self").mkdir()
    return str(root)


def test_walk_finds_the_pid_namespace(tmp_path):
    proc = _proc(tmp_path, {1: (0, "host"), 50: (1, "ctr"), 51: (50, "ctr"), 60: (1, "ctr"),
                            70: (1, "host"), 71: (50, "other")})
    assert pidns.container_pids(50, own_pid_namespace=True, proc_root=proc) == [50, 51, 60]


def test_walk_without_a_pid_namespace_takes_descendants(tmp_path):
    proc = _proc(tmp_path, {1: (0, "host"), 50: (1, "host"), 51: (50, "host"), 52: (51, "host"),
                            60: (1, "host")})
    assert pidns.container_pids(50, own_pid_namespace=False, proc_root=proc) == [50, 51, 52]


def test_walk_of_a_gone_init(tmp_path):
    proc = _proc(tmp_path, {1: (0, "host")})
    assert pidns.container_pids(50, own_pid_namespace=True, proc_root=proc) == []


@pytest.mark.parametrize("namespaces,own", [
    ([{"type": "pid"}], True), ([{"type": "pid", "path": "/proc/1/ns/pid"}], False),
    ([{"type": "mount"}], False), (None, False)])
def test_has_own_pid_namespace(namespaces, own):
    config = {"linux": {"namespaces": namespaces}} if namespaces is not None else {}
    assert pidns.has_own_pid_namespace(config) is own


# -- unprivileged CRIU: refuse before freezing ----------------------------------

ALL = frozenset(CAPS)


def _caps(**kw):
    base = dict(euid=1000, in_userns=False, criu="/usr/local/sbin/criu", file_caps=ALL,
                bounding=ALL, no_new_privs=False, nosuid=False, cap_last_cap=40)
    base.update(kw)
    return CriuCaps(**base)


CHECKPOINTABLE = {"linux": {"namespaces": [{"type": t} for t in
                                           ("network", "pid", "ipc", "mount", "cgroup", "user")]},
                  "mounts": [{"destination": "/sys", "type": "sysfs", "source": "sysfs"}]}
RUNC_ROOTLESS = {"linux": {"namespaces": [{"type": t} for t in
                                          ("pid", "ipc", "uts", "mount", "cgroup", "user")]},
                 "mounts": [{"destination": "/sys", "type": "none", "source": "/sys",
                             "options": ["rbind", "ro"]}]}


def test_root_is_never_refused():
    assert blocker(_caps(euid=0, file_caps=frozenset()), RUNC_ROOTLESS) is None


def test_root_in_a_user_namespace_is_refused_for_map_files():
    why = blocker(_caps(euid=0, in_userns=True), CHECKPOINTABLE)
    assert "map_files needs CAP_CHECKPOINT_RESTORE in the initial user namespace" in why


def test_all_four_capabilities_and_a_checkpointable_config_pass():
    assert blocker(_caps(), CHECKPOINTABLE) is None
    assert blocker(_caps(file_caps=ALL - {"cap_checkpoint_restore"}), CHECKPOINTABLE) is None


def test_only_cap_checkpoint_restore_is_not_enough():
    why = blocker(_caps(file_caps=frozenset({"cap_checkpoint_restore"})), CHECKPOINTABLE)
    assert why.startswith("CRIU run by uid 1000 lacks cap_setgid, cap_sys_admin, cap_sys_chroot")
    assert ("fix: `setcap cap_checkpoint_restore,cap_setgid,cap_sys_admin,cap_sys_chroot+eip "
            "/usr/local/sbin/criu`") in why
    assert "root-equivalent" in why


def test_no_file_capabilities_at_all():
    why = blocker(_caps(file_caps=frozenset()), None)     # no config: assume a rootless one
    assert "lacks cap_checkpoint_restore, cap_setgid, cap_sys_admin, cap_sys_chroot" in why


@pytest.mark.parametrize("changes,text", [
    (dict(cap_last_cap=39), "which this kernel lacks (Linux 5.9 or later)"),
    (dict(criu=None), "criu not found"),
    (dict(no_new_privs=True), "no_new_privs is set"),
    (dict(nosuid=True), "is on a nosuid mount"),
    (dict(bounding=ALL - {"cap_sys_admin"}), "cap_sys_admin not in this process's capability "
                                             "bounding set"),
])
def test_refusals(changes, text):
    assert text in blocker(_caps(**changes), CHECKPOINTABLE)


def test_uts_namespace_cannot_be_restored_without_root():
    why = blocker(_caps(), RUNC_ROOTLESS)
    assert "own UTS namespace, which only root can restore" in why


def test_recursive_bind_of_the_host_sys_cannot_be_restored():
    config = {"linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "user")]},
              "mounts": RUNC_ROOTLESS["mounts"]}
    assert "recursive bind of the host's" in blocker(_caps(), config)


def test_vfs_cap_parsing():
    bits = (1 << 6) | (1 << 21) | (1 << 18) | (1 << 40)
    v2 = struct.pack("<5I", 0x02000001, bits & 0xFFFFFFFF, 0, bits >> 32, 0)
    assert parse_vfs_cap(v2) == ALL
    v3 = struct.pack("<6I", 0x03000001, 1 << 6, 0, 0, 0, 1000)
    assert parse_vfs_cap(v3) == {"cap_setgid"}
    no_effective = struct.pack("<5I", 0x02000000, bits & 0xFFFFFFFF, 0, bits >> 32, 0)
    assert parse_vfs_cap(no_effective) == frozenset()
    assert parse_vfs_cap(b"\x01") == frozenset()


def test_criu_options_for_non_root():
    assert criu_unprivileged_options(euid=1000) == {"unprivileged": True}
    assert criu_unprivileged_options(euid=0) == {}


def test_root_we_may_not_use_names_it(tmp_path):
    path = tmp_path / "shared"
    path.mkdir(mode=0o711)
    if os.geteuid() == 0:
        pytest.skip("root may use any directory")
    os.chmod(path, 0o500)
    with pytest.raises(UsageError, match=r"cannot use state directory .*/shared: Permission denied"):
        prepare_root(str(path), private=False)


# -- moved from tests/unit/runtime/test_rootless.py (its basename clashed with
# tests/integration/test_rootless.py in one pytest run) ---------------------
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
