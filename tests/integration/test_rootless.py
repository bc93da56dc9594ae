"""Rootless operation, run as an unprivileged user the session creates (with
subordinate ID ranges) and as root inside user namespaces that user makes.

The user's state lives in $XDG_RUNTIME_DIR/migrate: no test passes --root,
the default-directory rules are part of what is tested. The rootless
checkpoint tests are at the end; see migrate/checkpoint/unprivileged.py for
what CRIU needs here and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import time
import uuid

import pytest

from runtime_helpers import Result, build_rootfs, runtime_argv

pytestmark = pytest.mark.requires("root", "busybox")

PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
COUNTER = ("exec </dev/null >/dev/null 2>&1; i=0; "
           "while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done")


def _subid(path: str, name: str) -> tuple[int, int]:
    with open(path) as f:
        for line in f:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[0] == name:
                return int(parts[1]), int(parts[2])
    raise LookupError(f"{name} has no range in {path}")


def _pids_of(uid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            out.append(int(entry))
                        break
        except OSError:
            pass
    return out


class User:
    """The test user: runs commands with stdout/stderr in files (never pipes:
    a detached container inherits them)."""

    def __init__(self, name: str):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.xdg = f"/run/user/{self.uid}"
        self.subuid = _subid("/etc/subuid", name)
        self.subgid = _subid("/etc/subgid", name)
        self.migrate = runtime_argv()
        self.template = os.path.join(self.home, "template")
        self.config: dict = {}

    @property
    def state_dir(self) -> str:
        return os.path.join(self.xdg, "migrate")

    def env(self, **extra) -> list[str]:
        env = {"PATH": PATH, "HOME": self.home, "USER": self.name, "XDG_RUNTIME_DIR": self.xdg}
        env.update(extra)
        return [f"{k}={v}" for k, v in env.items() if v is not None]

    def run(self, *argv: str, cwd: str | None = None, timeout: float = 60, env=None,
            cgroup: str | None = None) -> Result:
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
               "env", "-i", *self.env(**(env or {})), *argv]
        if cgroup is not None:   # start inside a cgroup delegated to the user
            cmd = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, *cmd]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  timeout=timeout, cwd=cwd or self.home)
            out.seek(0)
            err.seek(0)
            return Result(proc.returncode, out.read().decode(errors="replace"),
                          err.read().decode(errors="replace"))

    def mig(self, *args: str, **kw) -> Result:
        return self.run(*self.migrate, *args, **kw)

    def bundle(self, script: str | None = None, config: dict | None = None) -> str:
        path = tempfile.mkdtemp(prefix="bundle-", dir=self.home)
        subprocess.run(["cp", "-a", os.path.join(self.template, "rootfs"), path], check=True,
                       timeout=60)
        cfg = json.loads(json.dumps(config or self.config))
        if script is not None:
            cfg["process"]["args"] = ["sh", "-c", script]
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        self.chown(path)
        return path

    def chown(self, path: str) -> None:
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", path], check=True, timeout=60)

    def state(self, cid: str) -> dict:
        return json.loads(self.mig("state", cid).check().stdout)

    def wait_status(self, cid: str, want: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            res = self.mig("state", cid)
            status = json.loads(res.stdout)["status"] if res.returncode == 0 else "gone"
            if status == want or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def cleanup_containers(self) -> None:
        if os.path.isdir(self.state_dir):
            for cid in os.listdir(self.state_dir):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.mig("delete", "--force", cid, timeout=30)


def _can_unshare(user: User) -> str | None:
    res = user.run("unshare", "--user", "--map-root-user", "true")
    return None if res.returncode == 0 else f"unprivileged user namespaces: {res.stderr.strip()}"


@pytest.fixture(scope="session")
def rl():
    """An unprivileged user with subordinate IDs, its XDG_RUNTIME_DIR and a
    template rootfs; removed with everything it ran at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating the test user needs root")
    for tool in ("useradd", "userdel", "setpriv", "unshare", "newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (uidmap, util-linux, passwd packages)")
    name = f"mgrl{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True,
                   timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    user = None
    try:
        try:
            _subid("/etc/subuid", name)
            _subid("/etc/subgid", name)
        except LookupError:   # useradd without SUB_UID_COUNT: delegate a range ourselves
            subprocess.run(["usermod", "--add-subuids", "3100000-3165535",
                            "--add-subgids", "3100000-3165535", name], check=True, timeout=60)
        user = User(name)
        os.makedirs(user.xdg, mode=0o700, exist_ok=True)
        os.chown(user.xdg, user.uid, user.gid)
        if (why := _can_unshare(user)) is not None:
            pytest.skip(why)
        os.chmod(user.home, 0o755)
        build_rootfs(os.path.join(user.template, "rootfs"))
        user.chown(user.template)
        user.mig("spec", "--rootless", cwd=user.template).check()
        with open(os.path.join(user.template, "config.json")) as f:
            config = json.load(f)
        config["process"]["terminal"] = False
        config["root"]["readonly"] = False
        user.config = config
        yield user
    finally:
        if user is not None:
            user.cleanup_containers()
            uid = user.uid
        else:
            uid = pwd.getpwnam(name).pw_uid
        for _ in range(3):
            for pid in _pids_of(uid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        shutil.rmtree(f"/run/user/{uid}", ignore_errors=True)
        subprocess.run(["userdel", "--remove", name], timeout=60, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        for path in ("/etc/subuid", "/etc/subgid"):   # userdel usually does this already
            with open(path) as f:
                lines = [line for line in f if not line.startswith(name + ":")]
            with open(path, "w") as f:
                f.writelines(lines)


@pytest.fixture
def user(rl):
    yield rl
    rl.cleanup_containers()


def cid() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


# -- installation ----------------------------------------------------------------


def test_installed_runtime_runs_for_any_user(user):
    res = user.run(*user.migrate, "--version").check()
    assert res.stdout.startswith("migrate version")
    # Not from a tree under /root (0700): the installed entry point and venv,
    # every file of the package (and pycriu, for checkpoints) readable by all.
    entry = os.path.realpath(shutil.which("migrate") or user.migrate[0])
    assert not entry.startswith("/root/")
    code = ("import migrate, pycriu, os; print(os.path.dirname(migrate.__file__)); "
            "print(os.path.dirname(pycriu.__file__))")
    res = user.run(os.path.join(os.path.dirname(entry), "python"), "-c", code).check()
    for top in res.stdout.split():
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                mode = os.stat(os.path.join(dirpath, name)).st_mode
                assert mode & stat.S_IROTH, f"{dirpath}/{name} is not readable by other users"


# -- spec --rootless and the lifecycle as the user -----------------------------


def test_spec_rootless(user):
    path = tempfile.mkdtemp(dir=user.home)
    user.chown(path)
    # No XDG_RUNTIME_DIR: spec needs no state directory.
    user.mig("spec", "--rootless", cwd=path, env={"XDG_RUNTIME_DIR": None}).check()
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    linux = config["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": user.uid, "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": user.gid, "size": 1}]
    types = [ns["type"] for ns in linux["namespaces"]]
    assert "user" in types and "network" not in types
    assert "resources" not in linux
    sys_mount = next(m for m in config["mounts"] if m["destination"] == "/sys")
    assert sys_mount["source"] == "/sys" and "rbind" in sys_mount["options"]
    assert not [o for m in config["mounts"] for o in m.get("options", ())
                if o.startswith(("uid=", "gid="))]


def test_run_exec_kill_delete_list_in_xdg_runtime_dir(user):
    c = cid()
    b = user.bundle("sleep 1000")
    user.mig("run", "--detach", "--bundle", b, c).check()
    st = os.stat(user.state_dir)
    assert stat.S_IMODE(st.st_mode) == 0o1700 and st.st_uid == user.uid
    assert os.path.exists(os.path.join(user.state_dir, c, "state.json"))
    listed = json.loads(user.mig("list", "--format", "json").check().stdout)
    assert [(x["id"], x["status"], x["owner"]) for x in listed] == [(c, "running", user.name)]
    state = user.state(c)
    assert state["rootless"] is True and state["status"] == "running"
    init_uid = next(int(line.split()[1]) for line in open(f"/proc/{state['pid']}/status")
                    if line.startswith("Uid:"))
    assert init_uid == user.uid
    res = user.mig("exec", c, "cat", "/proc/self/uid_map").check()
    assert res.stdout.split() == ["0", str(user.uid), "1"]
    assert user.mig("exec", c, "id", "-u").check().stdout.strip() == "0"
    user.mig("kill", c, "KILL").check()
    assert user.wait_status(c, "stopped") == "stopped"
    user.mig("delete", c).check()
    assert json.loads(user.mig("list", "--format", "json").check().stdout) is None   # runc: null


def test_ps_and_kill_all_walk_the_pid_namespace_without_cgroups(user):
    c = cid()
    b = user.bundle("sleep 1000 & sleep 1001 & wait")
    user.mig("run", "--detach", "--bundle", b, c).check()
    with open(os.path.join(user.state_dir, c, "state.json")) as f:
        assert json.load(f)["cgroup"]["usable"] is False     # nothing delegated here
    deadline = time.monotonic() + 5
    while len(pids := json.loads(user.mig("ps", "--format", "json", c).check().stdout)) < 3:
        assert time.monotonic() < deadline, pids
        time.sleep(0.05)
    assert len(pids) == 3 and user.state(c)["pid"] in pids
    table = user.mig("ps", c).check().stdout
    assert "sleep 1000" in table and "sleep 1001" in table
    res = user.mig("pause", c)
    assert res.returncode == 1
    assert "has no cgroup of its own (it was created rootless" in res.stderr
    user.mig("kill", "--all", c, "TERM").check()     # the sleeps die, then sh's wait returns
    assert user.wait_status(c, "stopped") == "stopped"
    assert not any(_alive(p) for p in pids)


@pytest.fixture
def delegated(user):
    """A cgroup v2 directory delegated to the user (what systemd's Delegate=yes
    gives a user session), on the unified hierarchy."""
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f if " - cgroup2 " in line]
    if not mounts:
        pytest.skip("no cgroup v2 hierarchy is mounted")
    path = os.path.join(mounts[0][4], f"migrate-test-{user.name}")
    os.mkdir(path)
    for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        os.chown(os.path.join(path, name), user.uid, user.gid)
    yield path
    user.cleanup_containers()
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda x: -len(x[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def test_delegated_cgroup_gives_ps_pause_resume_kill_all(user, delegated):
    c = cid()
    b = user.bundle("sleep 1000 & wait")
    user.mig("run", "--detach", "--bundle", b, c, cgroup=delegated).check()
    with open(os.path.join(user.state_dir, c, "state.json")) as f:
        cg = json.load(f)["cgroup"]
    assert cg["usable"] is True
    assert set(cg["paths"]) == {""} and cg["paths"][""].startswith(delegated + "/")
    pids = json.loads(user.mig("ps", "--format", "json", c).check().stdout)
    with open(os.path.join(cg["paths"][""], "cgroup.procs")) as f:
        assert sorted(int(p) for p in f.read().split()) == pids
    user.mig("pause", c).check()
    assert user.state(c)["status"] == "paused"
    user.mig("resume", c).check()
    assert user.state(c)["status"] == "running"
    user.mig("kill", "--all", c, "KILL").check()
    assert user.wait_status(c, "stopped") == "stopped"
    user.mig("delete", c).check()
    assert not os.path.exists(cg["paths"][""])


def test_several_mapped_users_and_a_supplementary_group(user):
    cfg = json.loads(json.dumps(user.config))
    (sub_uid, n_uid), (sub_gid, n_gid) = user.subuid, user.subgid
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": user.uid, "size": 1},
                                   {"containerID": 1, "hostID": sub_uid, "size": n_uid}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": user.gid, "size": 1},
                                   {"containerID": 1, "hostID": sub_gid, "size": n_gid}]
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [100]}
    b = user.bundle("id; cat /proc/self/gid_map; touch /tmp/f; stat -c %u:%g /tmp/f", cfg)
    res = user.mig("run", "--bundle", b, cid()).check()
    lines = res.stdout.splitlines()
    assert lines[0] == "uid=1000(tester) gid=1000(tester) groups=100(users)"
    assert [line.split() for line in lines[1:3]] == [["0", str(user.gid), "1"],
                                                     ["1", str(sub_gid), str(n_gid)]]
    assert lines[3] == "1000:1000"
    # Seen from the host, container user 1000 is subordinate ID start + 999.
    st = os.stat(os.path.join(b, "rootfs/tmp/f"))
    assert (st.st_uid, st.st_gid) == (sub_uid + 999, sub_gid + 999)


# -- every validation error ------------------------------------------------------


def _edit(config: dict, change) -> dict:
    cfg = json.loads(json.dumps(config))
    change(cfg)
    return cfg


def _no_userns(c):
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "user"]
    del c["linux"]["uidMappings"], c["linux"]["gidMappings"]


def _no_maps(c):
    del c["linux"]["uidMappings"], c["linux"]["gidMappings"]


def _gid5(c):
    next(m for m in c["mounts"] if m["destination"] == "/dev/pts")["options"].append("gid=5")


def _groups(c):
    c["process"]["user"]["additionalGids"] = [0]


def _user_1000(c):
    c["process"]["user"] = {"uid": 1000, "gid": 0}


def _ranges(uid_host):
    def change(c):
        c["linux"]["uidMappings"].append({"containerID": 1, "hostID": uid_host, "size": 100})
    return change


VALIDATION = [
    ("no-userns", _no_userns, {},
     r"config.json: linux.namespaces: running as a non-root user \(uid \d+\) needs a user "
     r"namespace \(see `migrate spec --rootless`\)"),
    ("no-maps", _no_maps, {},
     r"config.json: linux.uidMappings: is required when a new user namespace is created"),
    ("unmapped-mount-gid", _gid5, {},
     r'config.json: mounts\[\d\].options: "gid=5" of "/dev/pts" names an ID that is not mapped '
     r"in the linux.gidMappings \(mapped: 0\)"),
    ("unmapped-process-uid", _user_1000, {},
     r"config.json: process.user.uid: 1000 is not mapped in the linux.uidMappings"),
    ("groups-need-newgidmap", _groups, {},
     r"config.json: process.user.additionalGids: supplementary groups need setgroups\(2\).*"
     r"newgidmap"),
    ("no-newuidmap", _ranges(None), {"PATH": "/usr/local/bin"},
     r"mapping more than your own uid/gid needs newuidmap \(install the uidmap package\)"),
    ("not-delegated", _ranges(4000000000), {},
     r"config.json: linux.uidMappings\[1\]: host IDs 4000000000-4000000099 are not delegated to "
     r'"mgrl\w+" in /etc/subuid'),
    ("no-xdg", lambda c: None, {"XDG_RUNTIME_DIR": None},
     r"XDG_RUNTIME_DIR is not set: a non-root user \(uid \d+\) keeps container state in "
     r"\$XDG_RUNTIME_DIR/migrate.*or pass --root DIR"),
]


@pytest.mark.parametrize("change,env,message", [v[1:] for v in VALIDATION],
                         ids=[v[0] for v in VALIDATION])
def test_validation_errors(user, change, env, message):
    cfg = _edit(user.config, change)
    for m in cfg["linux"].get("uidMappings", ()):
        if m["hostID"] is None:   # "no-newuidmap": a delegated range, helpers not on PATH
            m["hostID"] = user.subuid[0]
    c = cid()
    res = user.mig("run", "--bundle", user.bundle("true", cfg), c, env=env)
    assert res.returncode != 0
    assert re.search(message, res.stderr), res.stderr
    assert not os.path.exists(os.path.join(user.state_dir, c))   # nothing left behind


# -- root inside a user namespace ---------------------------------------------------

INNER = textwrap.dedent("""\
    cd "$1"
    migrate spec || exit 10
    /opt/migrate/venv/bin/python - <<'EOF' || exit 11
    import json
    c = json.load(open("config.json"))
    c["process"]["terminal"] = False
    c["root"]["readonly"] = False
    c["process"]["args"] = ["sh", "-c", "id -u; sleep 1000"]
    json.dump(c, open("config.json", "w"))
    EOF
    migrate $FLAGS run --detach c1 || exit 12
    migrate state c1 > state.out || exit 13
    cat /proc/self/uid_map > uid_map.out
    migrate delete --force c1 || exit 14
    """)


def _as_userns_root(user: User, *, multi: bool, env: dict, flags: str = "") -> tuple[Result, str]:
    b = tempfile.mkdtemp(dir=user.home)
    subprocess.run(["cp", "-a", os.path.join(user.template, "rootfs"), b], check=True, timeout=60)
    user.chown(b)
    unshare = ["unshare", "--user", "--map-root-user"] + (["--map-auto"] if multi else [])
    res = user.run(*unshare, "env", f"FLAGS={flags}", "sh", "-c", INNER, "sh", b, env=env)
    return res, b


def test_userns_root_with_user_root_keeps_run_migrate(user):
    res, b = _as_userns_root(user, multi=True, env={"USER": "root"})
    assert res.returncode == 12, res.stderr
    assert re.search(r"cannot (create|use) state directory /run/migrate: Permission denied: as "
                     r"root in a user namespace, set USER to another name than root", res.stderr)
    assert not os.path.exists(os.path.join(user.state_dir, "c1"))


def test_userns_root_with_another_user_uses_xdg_and_plain_spec(user):
    # A multi-range map (newuidmap, --map-auto): gid 5 of /dev/pts is mapped,
    # so the plain (not --rootless) spec works; cgroups cannot be created
    # (root here is not root on the host) and that is not an error.
    res, b = _as_userns_root(user, multi=True, env={"USER": "builder"})
    assert res.returncode == 0, res.stderr
    state = json.load(open(os.path.join(b, "state.out")))
    assert state["status"] == "running" and state["rootless"] is False
    assert len(open(os.path.join(b, "uid_map.out")).read().splitlines()) == 2
    # The state lived in $XDG_RUNTIME_DIR/migrate (deleted again by the script).
    assert os.path.isdir(user.state_dir) and not os.path.exists(os.path.join(user.state_dir, "c1"))


def test_userns_root_state_records_tolerated_cgroups(user):
    script = textwrap.dedent("""\
        cd "$1" && migrate spec && /opt/migrate/venv/bin/python - <<'EOF'
        import json
        c = json.load(open("config.json"))
        c["process"].update(terminal=False, args=["sleep", "1000"])
        json.dump(c, open("config.json", "w"))
        EOF
        migrate run --detach c2 && cp "$XDG_RUNTIME_DIR/migrate/c2/state.json" saved.json
        migrate delete --force c2
        """)
    b = tempfile.mkdtemp(dir=user.home)
    subprocess.run(["cp", "-a", os.path.join(user.template, "rootfs"), b], check=True, timeout=60)
    user.chown(b)
    res = user.run("unshare", "--user", "--map-root-user", "--map-auto", "sh", "-c", script,
                   "sh", b, env={"USER": "builder"})
    assert res.returncode == 0, res.stderr
    saved = json.load(open(os.path.join(b, "saved.json")))
    assert (saved["rootless_euid"], saved["rootless_cgroups"]) == (False, True)
    assert saved["cgroup"]["usable"] is False


def test_userns_root_with_rootless_false_makes_cgroup_errors_fatal(user):
    res, _b = _as_userns_root(user, multi=True, env={"USER": "builder"}, flags="--rootless=false")
    assert res.returncode == 12
    assert "/sys/fs/cgroup" in res.stderr and "ermission denied" in res.stderr


def test_userns_root_with_a_single_id_map_names_the_unmapped_gid(user):
    res, _b = _as_userns_root(user, multi=False, env={"USER": "builder"})
    assert res.returncode == 12
    assert ('"gid=5" of "/dev/pts" names an ID that is not mapped in the gid_map of this user '
            'namespace (mapped: 0)') in res.stderr


def test_userns_root_checkpoint_is_refused_with_the_reason(user):
    code = ("from migrate.checkpoint.unprivileged import check_unprivileged_checkpoint as c\n"
            "c('/usr/local/sbin/criu')\n")
    res = user.run("unshare", "--user", "--map-root-user", "/opt/migrate/venv/bin/python", "-c",
                   code)
    assert res.returncode == 1
    assert "map_files needs CAP_CHECKPOINT_RESTORE in the initial user namespace" in res.stderr


# -- rootless checkpoint / restore ----------------------------------------------------


def _count(bundle: str) -> int:
    with open(os.path.join(bundle, "rootfs/tmp/count")) as f:
        return int(f.read().strip() or 0)


def _wait_count(bundle: str, above: int, timeout: float = 5) -> int:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if (n := _count(bundle)) > above:
                return n
        assert time.monotonic() < deadline, f"the counter in {bundle} stopped"
        time.sleep(0.05)


@pytest.mark.requires("criu")
def test_checkpoint_refused_before_any_freeze(user):
    """The installed CRIU has no file capabilities: `migrate checkpoint`
    refuses before CRIU runs, so nothing was frozen or written."""
    c = cid()
    b = user.bundle(COUNTER)
    user.mig("run", "--detach", "--bundle", b, c).check()
    before = _wait_count(b, 0)
    images = os.path.join(user.home, f"images-{c}")
    res = user.mig("checkpoint", "--image-path", images, c,
                   env={"PATH": "/usr/local/sbin:" + PATH})
    assert res.returncode == 1
    assert "cannot checkpoint or restore without root" in res.stderr
    # the first reason found: this spec's own UTS namespace, or CRIU's missing capabilities
    assert ("UTS namespace" in res.stderr or
            "setcap cap_checkpoint_restore,cap_setgid,cap_sys_admin,cap_sys_chroot+eip" in res.stderr)
    assert not os.path.exists(images)          # CRIU never ran: no log, no images
    assert user.state(c)["status"] == "running"
    _wait_count(b, before + 2)                  # and it never stopped counting


DUMP_RESTORE = textwrap.dedent("""\
    import json, os, sys
    from migrate.checkpoint.unprivileged import check_unprivileged_checkpoint, criu_unprivileged_options
    from migrate.criu_rpc import Client, CriuOptions, ExtMount, SwrkOptions
    from migrate.runtime.cgroups import current_paths

    criu, pid, images, rootfs, config = sys.argv[1:6]
    check_unprivileged_checkpoint(criu, config=json.load(open(config)))
    # The container's cgroup mounts are binds of our own cgroups: external.
    dump_ext, restore_ext, own = [], [], current_paths()
    for line in open(f"/proc/{pid}/mountinfo"):
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            mp = left.split()[4]
            name = os.path.basename(mp)
            key = "" if right.startswith("cgroup2") else {"systemd": "name=systemd"}.get(name, name)
            dump_ext.append(ExtMount(key=mp, val="cg-" + name))
            restore_ext.append(ExtMount(key="cg-" + name, val=own[key]))
    common = dict(images_dir=images, work_dir=images, auto_ext_mnt=True, ext_sharing=True,
                  ext_masters=True, **criu_unprivileged_options())
    client = Client(SwrkOptions(criu=criu, timeout=60))
    client.dump(CriuOptions(pid=int(pid), log_file="dump.log", ext_mnt=dump_ext, **common))
    print("dumped", flush=True)
    result = client.restore(CriuOptions(root=rootfs, log_file="restore.log", rst_sibling=True,
                                        ext_mnt=restore_ext, **common))
    print(result.pid)
    """)


@pytest.fixture
def capable_criu(user):
    """A private copy of CRIU with the file capabilities a non-root CRIU needs
    here for a container with its own namespaces (unprivileged.py says why
    each one). cap_sys_admin makes it root-equivalent, so only the test
    user's group may run it, and it is removed afterwards."""
    if shutil.which("setcap") is None:
        pytest.skip("setcap is not installed (libcap2-bin)")
    d = tempfile.mkdtemp(prefix="criu-", dir=user.home)
    path = os.path.join(d, "criu")
    shutil.copy2(shutil.which("criu") or "/usr/local/sbin/criu", path)
    os.chown(d, 0, user.gid)
    os.chmod(d, 0o750)
    os.chown(path, 0, user.gid)
    os.chmod(path, 0o750)
    subprocess.run(["setcap", "cap_checkpoint_restore,cap_setgid,cap_sys_admin,cap_sys_chroot+eip",
                    path], check=True, timeout=30)
    yield path
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.requires("criu")
def test_rootless_checkpoint_and_restore_of_a_counter(user, capable_criu):
    """Dumped and restored by the user through criu swrk in unprivileged mode.
    The config is what CRIU can restore without root: its own network
    namespace and sysfs (not the host's /sys), no UTS namespace."""
    cfg = json.loads(json.dumps(user.config))
    cfg["linux"]["namespaces"] = [{"type": "network"}] + [
        n for n in cfg["linux"]["namespaces"] if n["type"] != "uts"]
    cfg.pop("hostname", None)
    for m in cfg["mounts"]:
        if m["destination"] == "/sys":
            m.update(type="sysfs", source="sysfs", options=["nosuid", "noexec", "nodev", "ro"])
    c = cid()
    b = user.bundle(COUNTER, cfg)
    user.mig("run", "--detach", "--bundle", b, c).check()
    pid = user.state(c)["pid"]
    before = _wait_count(b, 2)
    images = tempfile.mkdtemp(prefix="images-", dir=user.home)
    user.chown(images)
    script = os.path.join(images, "dump_restore.py")
    with open(script, "w") as f:
        f.write(DUMP_RESTORE)
    res = user.run("/opt/migrate/venv/bin/python", script, capable_criu, str(pid), images,
                   os.path.join(b, "rootfs"), os.path.join(b, "config.json"), timeout=120)
    restored = None
    try:
        assert res.returncode == 0, res.stderr + _tail(images)
        restored = int(res.stdout.split()[-1])
        assert not _alive(pid)                                          # the original is gone
        with open(f"/proc/{restored}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        assert status["Uid"].split()[0] == str(user.uid)              # no root anywhere
        assert status["NSpid"].split()[-1] == "1"                      # init of its PID ns again
        assert open(f"/proc/{restored}/uid_map").read().split() == ["0", str(user.uid), "1"]
        _wait_count(b, before + 3)                                      # counting on, from memory
    finally:
        if restored is not None:
            with contextlib.suppress(OSError):
                os.kill(restored, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _tail(images: str) -> str:
    out = []
    for name in ("dump.log", "restore.log"):
        with contextlib.suppress(OSError):
            out.append(f"\n--- {name}\n" + "".join(open(os.path.join(images, name)).readlines()[-15:]))
    return "".join(out)
