"""Mount semantics against real containers (runtime-spec "Linux mount options").

Sources are tmpfs mounts made on the host with ``nodev,nosuid,noexec,noatime``,
with ``ro`` and with ``strictatime`` (plus a plain one and a nested tree);
containers bind them with many option combinations and print
/proc/self/mountinfo, which is checked flag by flag. Everything runs as root
and in a container with a user namespace, where the kernel locks the source's
flags: the runtime then keeps them when that is compatible with the request
and otherwise fails naming the mount and the flag.

The expectations come from ``expect`` below, written from the rules in
migrate/runtime/mounts.py's docstring, not from its code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

from runtime_helpers import Bundle

pytestmark = pytest.mark.requires("root", "busybox")

HOST_ID = 100000            # container 0 -> host 100000 in the user namespace tests
MODES = ("noatime", "relatime", "strictatime")
CLEAR_OF = {"ro": "rw", "nosuid": "suid", "nodev": "dev", "noexec": "exec"}
ATIME_WORDS = set(MODES) | {"atime", "norelatime", "nostrictatime", "nodiratime", "diratime"}

# name -> (tmpfs options on the host, the mount's flags as words, read-only superblock)
SOURCES = {
    "locked": ("nodev,nosuid,noexec,noatime", {"nodev", "nosuid", "noexec", "noatime"}, False),
    "ro": ("ro", {"ro", "relatime"}, True),
    "strict": ("strictatime", {"strictatime"}, False),
    "plain": ("relatime", {"relatime"}, False),
}
COMBOS = [
    ("bind",),
    ("bind", "ro"),
    ("bind", "rw"),
    ("bind", "nosuid"),
    ("bind", "nosuid", "nodev", "noexec"),
    ("bind", "suid", "dev", "exec"),
    ("bind", "dev"),
    ("bind", "ro", "nosuid", "nodev", "noexec", "noatime"),
    ("bind", "noatime"),
    ("bind", "relatime"),
    ("bind", "strictatime"),
    ("bind", "atime"),
    ("bind", "norelatime"),
    ("bind", "nostrictatime"),
    ("bind", "nodiratime"),
    ("bind", "noatime", "nodiratime"),
]


# -- host-side sources ----------------------------------------------------------

def _sh(*argv: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{' '.join(argv)}: {res.stderr}"


def _tmpfs(path: str, options: str = "") -> None:
    os.makedirs(path, exist_ok=True)
    _sh("mount", "-t", "tmpfs", "-o", ",".join(filter(None, ["size=1m", options])), "tmpfs", path)


@pytest.fixture(scope="module")
def area():
    """A 0711 directory under /tmp (a container's mapped root can pass
    through it) holding the sources; unmounted and removed at the end."""
    base = tempfile.mkdtemp(prefix="migrate-mounts-", dir="/tmp")
    os.chmod(base, 0o711)
    made = []
    try:
        for name, (opts, _flags, _sb_ro) in SOURCES.items():
            path = os.path.join(base, name)
            # ro: fill it first, then make the whole file system read-only
            _tmpfs(path, "" if opts == "ro" else opts)
            made.append(path)
            with open(os.path.join(path, "file"), "w") as f:
                f.write(name)
            if opts == "ro":
                _sh("mount", "-o", "remount,ro", path)
        # a tree of nested mounts: tree (plain), tree/sub (nosuid), tree/sub/deep (noexec)
        tree = os.path.join(base, "tree")
        _tmpfs(tree)
        made.append(tree)
        _tmpfs(os.path.join(tree, "sub"), "nosuid")
        _tmpfs(os.path.join(tree, "sub", "deep"), "noexec")
        # files with owners, for idmapped mounts
        ids = os.path.join(base, "ids")
        _tmpfs(ids, "mode=755")
        made.append(ids)
        for name, owner in (("root-owned", 0), ("user-owned", 1000)):
            with open(os.path.join(ids, name), "w") as f:
                f.write(name)
            os.chown(os.path.join(ids, name), owner, owner)
        yield base
    finally:
        for path in reversed(made):
            subprocess.run(["umount", "--recursive", "--lazy", path], capture_output=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def make_bundle(bundle_template, area):
    """bundle(userns) -> a Bundle under ``area``; with a user namespace the
    rootfs belongs to the mapped root, as an engine would prepare it."""
    base, config = bundle_template
    made = []

    def make(userns: bool) -> Bundle:
        path = os.path.join(area, f"bundle-{uuid.uuid4().hex[:8]}")
        os.mkdir(path)
        made.append(path)
        subprocess.run(["cp", "-a", os.path.join(base, "rootfs"), path], check=True, timeout=60)
        cfg = json.loads(json.dumps(config))
        if userns:
            subprocess.run(["chown", "-R", f"{HOST_ID}:{HOST_ID}", os.path.join(path, "rootfs")],
                           check=True, timeout=60)
            cfg["linux"]["namespaces"].append({"type": "user"})
            cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": HOST_ID, "size": 65536}]
            cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": HOST_ID, "size": 65536}]
        return Bundle(path, cfg)

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def _run(runtime, bundle: Bundle, mounts: list[dict], script: str):
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if not m["destination"].startswith("/m")] + mounts
    bundle.sh(script)
    return runtime("run", "--bundle", bundle.path, f"m-{uuid.uuid4().hex[:8]}")


def _mountinfo(text: str) -> dict[str, tuple[set[str], set[str]]]:
    """mount point -> (per-mount options, super options), last mount wins."""
    out = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if sep:
            fields = left.split()
            out[fields[4]] = (set(fields[5].split(",")), set(right.split()[2].split(",")))
    return out


def _flags(per_mount: set[str], super_options: set[str]) -> set[str]:
    """The flags that matter, as words; ro if the mount or its file system is."""
    words = {w for w in per_mount if w in ("nosuid", "nodev", "noexec", "nodiratime")}
    if "ro" in per_mount or "ro" in super_options:
        words.add("ro")
    words.add(next((w for w in ("noatime", "relatime") if w in per_mount), "strictatime"))
    return words


# -- the oracle -----------------------------------------------------------------

class Refused:
    def __init__(self, word: str, got: str, locked: bool):
        self.word, self.got, self.locked = word, got, locked

    def __repr__(self):
        return f"refused ({self.word}: {'locked' if self.locked else 'file system'} {self.got})"


def _atime_of(flags: set[str]) -> set[str]:
    return {w for w in flags if w in MODES or w == "nodiratime"}


def expect(source: str, options: tuple[str, ...], userns: bool):
    """The flags a bind of ``source`` with ``options`` must get, or Refused."""
    _, src, sb_ro = SOURCES[source]
    words = [o for o in options if o not in ("bind", "rbind")]
    if not words:
        return set(src)                       # no remount: the source's flags
    asked = {w for w in words if w in CLEAR_OF}          # missing means cleared
    if ATIME_WORDS & set(words):
        mode = next((w for w in reversed(words) if w in MODES), None)
        asked.add(mode or ("strictatime" if "norelatime" in words else "relatime"))
        if "nodiratime" in words:
            asked.add("nodiratime")
    else:
        asked |= _atime_of(src)              # no atime word: the kernel keeps it
    if userns:
        locked = {w for w in src if w in CLEAR_OF}
        if locked - asked or _atime_of(asked) != _atime_of(src):
            src_mode = next(w for w in src if w in MODES)
            for w in words:
                for set_word, clear_word in CLEAR_OF.items():
                    if w == clear_word and set_word in locked:
                        return Refused(w, set_word, True)
                if ATIME_WORDS & set(words):
                    if w in MODES and w != src_mode:
                        return Refused(w, src_mode, True)
                    if {"atime": "noatime", "norelatime": "relatime",
                            "nostrictatime": "strictatime"}.get(w) == src_mode:
                        return Refused(w, src_mode, True)
                    if w == "nodiratime" and "nodiratime" not in src:
                        return Refused(w, "diratime", True)
            asked = (asked - _atime_of(asked)) | locked | _atime_of(src)
    elif sb_ro and "rw" in words:
        return Refused("rw", "ro", False)
    if sb_ro:
        asked.add("ro")
    return asked


def _check_refusal(res, dest: str, want: Refused) -> None:
    assert res.returncode != 0, f"{dest}: expected {want}, the container ran"
    err = res.stderr
    assert f" on {dest} (" in err, err
    flags = err.split(f" on {dest} (", 1)[1].split(")", 1)[0].split(",")
    assert want.word in flags, err
    why = (f"the source is locked {want.got} in this user namespace and {want.word} was asked for"
           if want.locked else f"the source file system is {want.got} and {want.word} was asked for")
    assert why in err, err


# -- the matrix -----------------------------------------------------------------

@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_bind_option_matrix(runtime, make_bundle, area, userns, capsys):
    cases = [(s, c, f"/m/{s}/{i}", expect(s, c, userns))
             for s in SOURCES for i, c in enumerate(COMBOS)]
    good = [(s, c, d, e) for s, c, d, e in cases if not isinstance(e, Refused)]
    bad = [(s, c, d, e) for s, c, d, e in cases if isinstance(e, Refused)]
    bundle = make_bundle(userns)

    res = _run(runtime, bundle, [{"destination": d, "type": "bind",
                                  "source": os.path.join(area, s), "options": list(c)}
                                 for s, c, d, _ in good],
               "cat /proc/self/mountinfo; cat /m/strict/0/file")
    assert res.returncode == 0, res.stderr
    info = _mountinfo(res.stdout)
    lines = []
    for s, c, d, want in good:
        got = _flags(*info[d])
        assert got == want, f"{s} {','.join(c)}: got {sorted(got)}, want {sorted(want)}"
        lines.append(f"{'userns' if userns else 'root':6} {s:7} {','.join(c):42} ok "
                     f"{','.join(sorted(got))}")
    for s, c, d, want in bad:
        res = _run(runtime, bundle, [{"destination": d, "type": "bind",
                                      "source": os.path.join(area, s), "options": list(c)}],
                   "true")
        _check_refusal(res, d, want)
        lines.append(f"{'userns' if userns else 'root':6} {s:7} {','.join(c):42} {want!r}")
    with capsys.disabled():
        print(f"\nbind option matrix ({'user namespace' if userns else 'root'}): "
              f"{len(good)} mounted as asked, {len(bad)} refused")
        print("\n".join(lines))
    if userns:
        # the locked sources force refusals; compatible requests still mount
        assert len(bad) >= 10 and len(good) >= 30
    else:
        assert [(s, c) for s, c, _, _ in bad] == [("ro", ("bind", "rw"))]


def test_oracle_examples():
    """A few rows of the matrix spelled out, so the oracle is readable."""
    assert expect("locked", ("bind", "ro"), False) == {"ro", "noatime"}
    assert expect("locked", ("bind", "ro"), True) == {"ro", "nosuid", "nodev", "noexec",
                                                       "noatime"}
    assert repr(expect("locked", ("bind", "dev"), True)) == "refused (dev: locked nodev)"
    assert repr(expect("locked", ("bind", "strictatime"), True)) == \
        "refused (strictatime: locked noatime)"
    assert expect("locked", ("bind", "norelatime"), True) == {"nosuid", "nodev", "noexec",
                                                               "noatime"}
    assert repr(expect("ro", ("bind", "rw"), True)) == "refused (rw: locked ro)"
    assert repr(expect("ro", ("bind", "rw"), False)) == "refused (rw: file system ro)"
    assert expect("ro", ("bind", "nosuid"), True) == {"ro", "nosuid", "relatime"}
    assert expect("strict", ("bind", "atime"), True) == {"strictatime"}


# -- rbind: flags on the top mount only (runc, runtime-spec) ------------------------

def _tree(info) -> dict[str, set[str]]:
    return {p: _flags(*info[p]) for p in ("/m/t", "/m/t/sub", "/m/t/sub/deep")}


@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_rbind_flags_apply_to_the_top_mount_only(runtime, make_bundle, area, userns):
    # "rbind,ro" is read-only but not recursively, as in runc (mounts_recursive.bats);
    # "rro" is the recursive one.
    bundle = make_bundle(userns)
    res = _run(runtime, bundle, [{"destination": "/m/t", "type": "bind",
                                  "source": os.path.join(area, "tree"),
                                  "options": ["rbind", "ro", "nodev"]}],
               "cat /proc/self/mountinfo; touch /m/t/sub/w && echo sub-writable; true")
    assert res.returncode == 0, res.stderr
    tree = _tree(_mountinfo(res.stdout))
    assert tree["/m/t"] == {"ro", "nodev", "relatime"}
    # the submounts keep their own flags
    assert "ro" not in tree["/m/t/sub"] and "nosuid" in tree["/m/t/sub"]
    assert "ro" not in tree["/m/t/sub/deep"] and "noexec" in tree["/m/t/sub/deep"]
    if not userns:       # (the mapped root may not write the host root's tmpfs)
        assert "sub-writable" in res.stdout


def test_rbind_exec_leaves_a_locked_noexec_submount_alone(runtime, make_bundle, area):
    res = _run(runtime, make_bundle(True), [{"destination": "/m/t", "type": "bind",
                                             "source": os.path.join(area, "tree"),
                                             "options": ["rbind", "ro", "exec"]}],
               "cat /proc/self/mountinfo")
    assert res.returncode == 0, res.stderr
    tree = _tree(_mountinfo(res.stdout))
    assert "noexec" not in tree["/m/t"] and "noexec" in tree["/m/t/sub/deep"]


# -- recursive attributes (mount_setattr) -------------------------------------------

@pytest.mark.requires("mount_setattr")
@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_recursive_attributes_on_nested_mounts(runtime, make_bundle, area, userns):
    bundle = make_bundle(userns)
    res = _run(runtime, bundle, [{"destination": "/m/t", "type": "bind",
                                  "source": os.path.join(area, "tree"),
                                  "options": ["rbind", "rro", "rnosuid", "rnodev"]}],
               "cat /proc/self/mountinfo; touch /m/t/sub/deep/x 2>&1 || echo WRITE-REFUSED")
    assert res.returncode == 0, res.stderr
    tree = _tree(_mountinfo(res.stdout))
    assert tree["/m/t"] == tree["/m/t/sub"] == {"ro", "nosuid", "nodev", "relatime"}
    assert tree["/m/t/sub/deep"] == {"ro", "nosuid", "nodev", "noexec", "relatime"}
    assert "WRITE-REFUSED" in res.stdout


@pytest.mark.requires("mount_setattr")
def test_recursive_atime_as_root(runtime, make_bundle, area):
    res = _run(runtime, make_bundle(False), [{"destination": "/m/t", "type": "bind",
                                              "source": os.path.join(area, "tree"),
                                              "options": ["rbind", "rnoatime", "rnodiratime"]}],
               "cat /proc/self/mountinfo")
    assert res.returncode == 0, res.stderr
    for flags in _tree(_mountinfo(res.stdout)).values():
        assert {"noatime", "nodiratime"} <= flags


@pytest.mark.requires("mount_setattr")
@pytest.mark.parametrize("userns,options,want", [
    (True, ["rbind", "rrw"], Refused("rrw", "ro", True)),
    (False, ["rbind", "rrw"], Refused("rrw", "ro", False)),
    (True, ["rbind", "rstrictatime"], Refused("rstrictatime", "relatime", True)),
], ids=["userns-rrw", "root-rrw", "userns-rstrictatime"])
def test_recursive_attribute_refusals(runtime, make_bundle, area, userns, options, want):
    res = _run(runtime, make_bundle(userns), [{"destination": "/m/r", "type": "bind",
                                               "source": os.path.join(area, "ro"),
                                               "options": options}], "true")
    _check_refusal(res, "/m/r", want)


# -- idmapped mounts --------------------------------------------------------------

def _owners(out: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in out.splitlines() if " /m/" in line}


@pytest.mark.requires('idmapped_mounts("tmpfs")')
def test_idmapped_mount_as_root(runtime, make_bundle, area):
    ids = os.path.join(area, "ids")
    res = _run(runtime, make_bundle(False), [
        {"destination": "/m/id", "type": "bind", "source": ids, "options": ["bind", "idmap", "ro"],
         "uidMappings": [{"containerID": 0, "hostID": HOST_ID, "size": 65536}],
         "gidMappings": [{"containerID": 0, "hostID": HOST_ID, "size": 65536}]},
        {"destination": "/m/plain", "type": "bind", "source": ids, "options": ["bind"]},
    ], "stat -c '%u:%g %n' /m/id/* /m/plain/*; grep ' /m/id ' /proc/self/mountinfo")
    assert res.returncode == 0, res.stderr
    owners = _owners(res.stdout)
    assert owners["/m/id/root-owned"] == f"{HOST_ID}:{HOST_ID}"
    assert owners["/m/id/user-owned"] == f"{HOST_ID + 1000}:{HOST_ID + 1000}"
    assert owners["/m/plain/root-owned"] == "0:0"
    assert " ro," in res.stdout and "idmapped" in res.stdout


@pytest.mark.requires('idmapped_mounts("tmpfs")')
def test_idmapped_mount_with_the_container_user_namespace(runtime, make_bundle, area):
    ids, tree = os.path.join(area, "ids"), os.path.join(area, "tree")
    res = _run(runtime, make_bundle(True), [
        {"destination": "/m/id", "type": "bind", "source": ids, "options": ["rbind", "ridmap"]},
        {"destination": "/m/plain", "type": "bind", "source": ids, "options": ["bind"]},
        {"destination": "/m/rt", "type": "bind", "source": tree, "options": ["rbind", "ridmap"]},
        {"destination": "/m/it", "type": "bind", "source": tree, "options": ["rbind", "idmap"]},
    ], "stat -c '%u:%g %n' /m/id/* /m/plain/* /m/rt/sub/deep /m/it /m/it/sub/deep")
    assert res.returncode == 0, res.stderr
    owners = _owners(res.stdout)
    # host 0 and 1000 appear as themselves; without the idmap they are unmapped
    assert owners["/m/id/root-owned"] == "0:0"
    assert owners["/m/id/user-owned"] == "1000:1000"
    assert owners["/m/plain/root-owned"] == "65534:65534"
    # ridmap maps every mount of the tree, idmap only its top
    assert owners["/m/rt/sub/deep"] == "0:0"
    assert owners["/m/it"] == "0:0" and owners["/m/it/sub/deep"] == "65534:65534"


@pytest.mark.requires('idmapped_mounts("tmpfs")')
def test_idmapped_mount_in_a_user_namespace_keeps_the_source_flags(runtime, make_bundle, area):
    # The kernel locks nothing on the tree the runtime attached: the same
    # rule as a plain bind is applied by the runtime.
    locked = os.path.join(area, "locked")
    bundle = make_bundle(True)
    res = _run(runtime, bundle, [{"destination": "/m/id", "type": "bind", "source": locked,
                                  "options": ["bind", "idmap", "ro"]}],
               "cat /proc/self/mountinfo")
    assert res.returncode == 0, res.stderr
    assert _flags(*_mountinfo(res.stdout)["/m/id"]) == {"ro", "nosuid", "nodev", "noexec",
                                                         "noatime"}
    res = _run(runtime, bundle, [{"destination": "/m/id", "type": "bind", "source": locked,
                                  "options": ["bind", "idmap", "dev"]}], "true")
    _check_refusal(res, "/m/id", Refused("dev", "nodev", True))


def test_idmap_without_mappings_or_user_namespace_is_refused(runtime, make_bundle, area):
    res = _run(runtime, make_bundle(False), [{"destination": "/m/id", "type": "bind",
                                              "source": os.path.join(area, "ids"),
                                              "options": ["bind", "idmap"]}], "true")
    assert res.returncode != 0
    # refused while checking config.json, before anything is mounted
    assert "/m/id" in res.stderr and "idmap" in res.stderr, res.stderr
    assert "user namespace" in res.stderr, res.stderr


# -- runc's rules for proc/sys, a read-only /dev and unreachable sources ---------

@pytest.mark.parametrize("name, fstype", [("proc", "proc"), ("sys", "sysfs")])
def test_proc_or_sys_as_a_symlink_in_the_image_is_refused(runtime, make_bundle, name, fstype):
    # A malicious image could point them elsewhere (masked paths would then
    # miss); runc refuses with these words (mask.bats).
    bundle = make_bundle(False)
    target = os.path.join(bundle.rootfs, name)
    subprocess.run(["rm", "-rf", target], check=True, timeout=30)
    os.symlink("/tmp", target)
    res = _run(runtime, bundle, [], "true")
    assert res.returncode == 1, res.stderr
    assert f'filesystem "{fstype}" must be mounted on ordinary directory' in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr


def test_a_read_only_dev_is_filled_first(runtime, make_bundle):
    # /dev ro: devices, symlinks and /dev/pts go in, then it turns read-only
    # (runc's finalizeRootfs), as other read-only tmpfs mounts do.
    bundle = make_bundle(False)
    for m in bundle.config["mounts"]:
        if m["destination"] == "/dev":
            m["options"] = m["options"] + ["ro"]
    res = _run(runtime, bundle, [], "grep '^tmpfs /dev ' /proc/mounts; ls /dev/null /dev/pts; "
                                    "touch /dev/x || echo dev-read-only")
    assert res.returncode == 0, res.stderr
    assert " ro," in res.stdout.splitlines()[0] and "dev-read-only" in res.stdout


def test_a_bind_source_the_mapped_root_cannot_reach_mounts(runtime, make_bundle, area):
    # The source is under a 0700 directory of the host's root: the
    # container's root (another host uid) could not even look it up, but
    # the runtime opened it before entering the user namespace (runc too).
    hidden = os.path.join(area, f"hidden-{uuid.uuid4().hex[:6]}")
    os.makedirs(os.path.join(hidden, "dir"))
    os.chmod(hidden, 0o700)
    with open(os.path.join(hidden, "dir", "foo.txt"), "w") as f:
        f.write("reached")
    try:
        res = _run(runtime, make_bundle(True),
                   [{"destination": "/m/hidden", "type": "bind",
                     "source": os.path.join(hidden, "dir"), "options": ["bind", "ro"]}],
                   "cat /m/hidden/foo.txt; touch /m/hidden/new || echo stays-ro")
        assert res.returncode == 0, res.stderr
        assert "reached" in res.stdout and "stays-ro" in res.stdout
    finally:
        subprocess.run(["rm", "-rf", hidden], timeout=30)
