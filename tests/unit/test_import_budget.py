"""The hot path imports only light modules (no timing here: scripts/bench.py
measures speed). Each check runs a fresh interpreter, ``-I`` so neither the
environment nor site-packages' .pth files add imports of their own.

A hot command is checked twice: importing its modules, and dispatching it
through ``main()`` until it fails early on a missing container or bundle
(which runs the imports it makes inside its functions).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FORBIDDEN = ("click", "rich", "google.protobuf", "pycriu", "pyroute2", "cffi",
             # hashlib loads OpenSSL; datetime and subprocess are ~1 and ~3 ms
             "hashlib", "datetime", "subprocess")

# Light stdlib only (issue 16): these pull in the re/enum/functools/
# collections family, ~15-20 ms of every command together (migrate/_light.py
# has the stand-ins). Checked among the modules the command itself imports:
# an editable install's finder loads some of them at start-up already.
HEAVY_STDLIB = ("re", "enum", "json", "socket", "selectors", "signal", "getopt", "gettext",
                "contextlib", "functools", "collections", "array", "importlib", "typing",
                "dataclasses", "logging", "struct", "locale")

# hot command -> its lifecycle module
HOT = {"create": "create", "start": "start", "state": "query", "kill": "kill",
       "delete": "delete", "exec": "exec", "run": "run"}


def _modules_after(code: str) -> set[str]:
    # -I: the installed package (with its compiled nsexec extension), as the
    # `migrate` command runs it; the source tree has no compiled extension.
    return _imports(code)[1]


def _imports(code: str) -> tuple[set[str], set[str]]:
    """(modules loaded before ``code``, all modules after it)."""
    prog = (f"import sys\n_before = sorted(sys.modules)\n{code}\n"
            f"sys.stdout.write('\\n' + repr((_before, sorted(sys.modules))))\n")
    res = subprocess.run([sys.executable, "-I", "-c", prog], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert res.returncode == 0, res.stderr
    before, after = ast.literal_eval(res.stdout.rsplit("\n", 1)[-1])
    return set(before), set(after)


def _heavy(code: str) -> list[str]:
    """Heavy stdlib modules that ``code`` imports (not the interpreter's start-up)."""
    before, after = _imports(code)
    return sorted(m for m in after - before for h in HEAVY_STDLIB
                  if m == h or m.startswith(h + "."))


def _forbidden(modules: set[str]) -> list[str]:
    # "cffi" is the cffi package; the compiled _nsexec extension needs only
    # _cffi_backend, which is fine.
    return sorted(m for m in modules for f in FORBIDDEN if m == f or m.startswith(f + "."))


def test_forbidden_names_are_matched_exactly():
    assert _forbidden({"cffi", "cffi.api", "_cffi_backend", "google.protobuf.message",
                       "richard", "clickhouse"}) == ["cffi", "cffi.api", "google.protobuf.message"]


@pytest.mark.parametrize("command", sorted(HOT))
def test_hot_command_modules(command):
    modules = _modules_after(
        "from migrate.cli import main as m\n"
        f"import migrate.cli.hot, migrate.runtime.lifecycle.{HOT[command]}\n")
    assert f"migrate.runtime.lifecycle.{HOT[command]}" in modules
    assert not _forbidden(modules)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle whose config parses but whose rootfs is missing: create and
    run load and check the whole config, then stop before touching anything."""
    from migrate.oci import default_spec

    path = tmp_path_factory.mktemp("bundle")
    spec = default_spec(rootless=os.geteuid() != 0)
    spec["root"]["path"] = str(path / "no-rootfs")
    spec["process"]["terminal"] = False
    (path / "config.json").write_text(json.dumps(spec))
    return str(path)


def _argv(command: str, bundle: str) -> list[str]:
    return {
        "create": ["create", "--bundle", bundle, "budget-c"],
        "run": ["run", "--bundle", bundle, "budget-r"],
        "exec": ["exec", "budget-x", "true"],
        "kill": ["kill", "budget-k", "KILL"],
        "delete": ["delete", "budget-d"],   # --force of a missing one succeeds, as in runc
    }.get(command, [command, f"budget-{command}"])


@pytest.mark.parametrize("command", sorted(HOT))
def test_hot_command_dispatch(command, bundle, tmp_path):
    argv = ["--root", str(tmp_path / "root"), *_argv(command, bundle)]
    modules = _modules_after(
        "import io, contextlib\n"
        "from migrate.cli.main import main\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        f"    code = main({argv!r})\n"
        # exec failures exit 255, as runc's (exec.go fatalWithCode).
        f"assert code == {255 if command == 'exec' else 1}, (code, err.getvalue())\n"
        "assert 'does not exist' in err.getvalue(), err.getvalue()\n")
    assert f"migrate.runtime.lifecycle.{HOT[command]}" in modules
    if command in ("create", "run"):
        assert "migrate.oci.parse" in modules          # the config was read
    assert not _forbidden(modules)


@pytest.mark.parametrize("command", sorted(HOT))
def test_hot_command_imports_only_light_stdlib(command, bundle, tmp_path):
    """Dispatched as in test_hot_command_dispatch (its error silenced at the
    fd, so the harness imports nothing of its own)."""
    argv = ["--root", str(tmp_path / "root"), *_argv(command, bundle)]
    heavy = _heavy("import os\n"
                   "os.dup2(os.open(os.devnull, os.O_WRONLY), 2)\n"
                   "from migrate.cli.main import main\n"
                   f"main({argv!r})\n")
    assert not heavy, f"{command} imports {heavy}"


@pytest.mark.parametrize("command", sorted(HOT))
def test_engine_log_flags_stay_light(command, bundle, tmp_path):
    """Engines pass --log FILE --log-format json on every call: the hot
    commands write those lines without logging/json/datetime (migrate/_log.py),
    and the error line still reaches the file."""
    log = tmp_path / "log.json"
    argv = ["--root", str(tmp_path / "root"), "--log", str(log), "--log-format", "json",
            "--debug", *_argv(command, bundle)]
    before, after = _imports("import os\n"
                             "os.dup2(os.open(os.devnull, os.O_WRONLY), 2)\n"
                             "from migrate.cli.main import main\n"
                             f"main({argv!r})\n")
    heavy = sorted(m for m in after - before for h in HEAVY_STDLIB
                   if m == h or m.startswith(h + "."))
    assert not heavy and not _forbidden(after), f"{command} imports {heavy}"
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["level"] == "error" and "does not exist" in last["msg"], last
    assert last["time"].endswith("Z") and list(last) == ["level", "msg", "time"]


def test_exec_reads_the_process_without_the_config_parser():
    """exec rebuilds the container's process with oci/reader.py: the
    parser, its checks and the resources model stay unloaded."""
    modules = _modules_after(
        "import json\n"
        "from migrate.oci.defaults import default_spec\n"
        "data = json.loads(json.dumps(default_spec()['process']))\n"
        "import migrate.runtime.lifecycle.exec\n"
        "from migrate.oci.reader import Obj, read_process\n"
        "assert read_process(Obj(data, 'process')).args == tuple(data['args'])\n")
    loaded = {"migrate.oci.parse", "migrate.oci.validate", "migrate.oci.resources"} & modules
    assert not loaded, loaded


def test_init_imports_only_light_stdlib():
    assert not _heavy("import migrate.runtime.init.standard, migrate.runtime.init.setns, "
                      "migrate.runtime.loopback")


def test_init_modules_are_light():
    modules = _modules_after("import migrate.runtime.init.standard, migrate.runtime.init.setns")
    assert not _forbidden(modules)


# Protobuf and pycriu (25-35 ms with bytecode) are for cold paths only
# (inspect, stats, content pre-copy): checkpoint, restore and the migration
# source/destination speak to CRIU through criu_rpc._wire (issue 16).
PROTOBUF = ("google", "pycriu")


def _protobuf(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for p in PROTOBUF if m == p or m.startswith(p + "."))


def test_protobuf_names_are_matched():
    assert _protobuf({"google._upb._message", "google.protobuf", "pycriu.rpc_pb2", "googly"}) == \
        ["google._upb._message", "google.protobuf", "pycriu.rpc_pb2"]


@pytest.mark.parametrize("package", ["migrate.criu_rpc", "migrate.oci"])
def test_packages_do_not_import_protobuf(package):
    assert not _protobuf(_modules_after(f"import {package}"))


@pytest.mark.parametrize("command", ["checkpoint", "restore"])
def test_checkpoint_and_restore_dispatch_without_protobuf(command, bundle, tmp_path):
    argv = ["--root", str(tmp_path / "root"), command, *(
        ["--bundle", bundle] if command == "restore" else []), f"budget-{command}"]
    modules = _modules_after(
        "import os\n"
        "os.dup2(os.open(os.devnull, os.O_WRONLY), 2)\n"
        "from migrate.cli.main import main\n"
        f"assert main({argv!r}) != 0\n"
        "import migrate.checkpoint.dump, migrate.checkpoint.restore, migrate.checkpoint.compat\n"
        "import migrate.checkpoint.restore_plan, migrate.checkpoint.restore_prep\n")
    assert "migrate.checkpoint.restore" in modules
    assert not _protobuf(modules)


def test_a_criu_conversation_imports_no_protobuf(tmp_path):
    """A dump and a restore with notifications, against the scripted
    stand-in for criu swrk (it speaks protobuf in its own process), and the
    images restore reads (written here by pycriu)."""
    from pycriu import images

    fake = os.path.join(REPO, "tests", "unit", "criu_rpc", "fake_swrk.py")
    img = tmp_path / "img"
    img.mkdir()
    with open(img / "mountpoints-13.img", "wb") as f:
        images.dump({"magic": "MNTS", "entries": [
            {"fstype": 5, "mnt_id": 13, "root_dev": 1, "parent_mnt_id": 1, "flags": 0,
             "root": "/", "mountpoint": "/", "source": "none", "options": "",
             "ext_key": "/data"}]}, f)
    with open(img / "netns-10.img", "wb") as f:
        images.dump({"magic": "NETNS", "entries": [{"ext_key": "extRootNetNS"}]}, f)
    ids = {"vm_id": 1, "files_id": 1, "fs_id": 1, "sighand_id": 1}
    for name, magic, entry in (
            ("pstree.img", "PSTREE", {"pid": 7, "ppid": 0, "pgid": 7, "sid": 7}),
            ("inventory.img", "INVENTORY", {"img_version": 2, "root_ids": {**ids, "net_ns_id": 1}}),
            ("ids-7.img", "IDS", {**ids, "net_ns_id": 2})):
        with open(img / name, "wb") as f:
            images.dump({"magic": magic, "entries": [entry]}, f)
    scripts = {}
    for scenario in ("notify", "restore"):
        script = tmp_path / f"criu-{scenario}"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" {scenario} '
                          f'"{tmp_path}/{scenario}.record" "$@"\n')
        script.chmod(0o755)
        scripts[scenario] = str(script)
    modules = _modules_after(
        "from migrate.criu_rpc import Client, CriuOptions, SwrkOptions\n"
        "from migrate.criu_rpc.images import read_entries\n"
        f"opts = CriuOptions(images_dir={str(img)!r}, pid=7, leave_running=True)\n"
        f"Client(SwrkOptions(criu={scripts['notify']!r})).dump(opts, {{'post-dump': print}})\n"
        f"restored = Client(SwrkOptions(criu={scripts['restore']!r})).restore(\n"
        f"    opts.replace(pid=None, leave_running=False), {{'post-restore': print}})\n"
        "assert restored.pid == 4242, restored\n"
        f"assert read_entries({str(img / 'mountpoints-13.img')!r}, 'MNTS')[0].ext_key == '/data'\n"
        f"assert read_entries({str(img / 'netns-10.img')!r}, 'NETNS')[0].ext_key\n"
        "from migrate.checkpoint.compat import _own_netns_in_ids\n"
        f"assert _own_netns_in_ids({str(img)!r})\n")
    assert "migrate.criu_rpc._wire" in modules
    assert not _protobuf(modules)


# What `checkpoint` itself no longer imports (issue 16): swrk starts with
# posix_spawn (subprocess pulls in threading, selectors, signal, locale,
# warnings and contextlib, ~3 ms), the netns check asks nftables over netlink
# (no nsenter + nft), migrate.json goes through _light's encoder, the
# timestamp through time.
CHECKPOINT_SPARED = ("subprocess", "threading", "json", "datetime", "selectors", "locale")


def test_checkpoint_and_a_dump_conversation_spare_subprocess_and_json(tmp_path):
    fake = os.path.join(REPO, "tests", "unit", "criu_rpc", "fake_swrk.py")
    script = tmp_path / "criu-notify"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" notify '
                      f'"{tmp_path}/notify.record" "$@"\n')
    script.chmod(0o755)
    img = tmp_path / "img"
    img.mkdir()
    argv = ["--root", str(tmp_path / "root"), "checkpoint", "budget-checkpoint"]
    modules = _modules_after(
        "import os\n"
        "os.dup2(os.open(os.devnull, os.O_WRONLY), 2)\n"
        "from migrate.cli.main import main\n"
        f"assert main({argv!r}) != 0\n"
        "import migrate.checkpoint.dump, migrate.checkpoint.netns, migrate.checkpoint.metadata\n"
        "from migrate.criu_rpc import Client, CriuOptions, SwrkOptions\n"
        f"opts = CriuOptions(images_dir={str(img)!r}, pid=7, leave_running=True)\n"
        f"Client(SwrkOptions(criu={str(script)!r})).dump(opts, {{'post-dump': print}})\n")
    assert "migrate.checkpoint.netns" in modules and "migrate.criu_rpc._swrk" in modules
    assert not sorted(m for m in modules for s in CHECKPOINT_SPARED
                      if m == s or m.startswith(s + "."))
