"""The entry point in-process: global flags, dispatch, and the one-line errors."""

import json
import re

import pytest

from migrate.cli import hot, main as main_mod
from migrate.cli.main import COMMANDS, HOT, _Usage, main, parse_globals
from migrate.errors import NotFoundError


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "root")


# -- parse_globals --------------------------------------------------------------

def test_globals_then_command():
    opts, rest = parse_globals(["--root", "/r", "--log", "/l", "--log-format", "json",
                                "--debug", "--systemd-cgroup", "--rootless", "true",
                                "--criu", "/usr/sbin/criu", "state", "web"])
    assert opts == {"root": "/r", "log": "/l", "log-format": "json", "debug": True,
                    "systemd-cgroup": True, "rootless": "true", "criu": "/usr/sbin/criu"}
    assert rest == ["state", "web"]


def test_equals_forms():
    opts, rest = parse_globals(["--log-format=json", "--log=/l", "--root=/r", "kill", "web"])
    assert opts == {"log-format": "json", "log": "/l", "root": "/r"}
    assert rest == ["kill", "web"]


def test_single_dash_forms():
    opts, rest = parse_globals(["-root", "/r", "-log-format=json", "-debug", "delete", "x"])
    assert opts == {"root": "/r", "log-format": "json", "debug": True}
    assert rest == ["delete", "x"]


def test_repeated_flag_last_wins():
    opts, _ = parse_globals(["--root", "/a", "--root=/b", "-root", "/c", "list"])
    assert opts["root"] == "/c"


@pytest.mark.parametrize("arg,value", [("--debug=false", False), ("--debug=0", False),
                                       ("--debug=true", True), ("--debug", True)])
def test_boolean_values(arg, value):
    assert parse_globals([arg, "list"])[0]["debug"] is value


def test_command_flags_are_not_globals():
    opts, rest = parse_globals(["state", "--root", "x"])
    assert opts == {} and rest == ["state", "--root", "x"]
    assert parse_globals(["-", "x"]) == ({}, ["-", "x"])


def test_unknown_global_flag():
    with pytest.raises(_Usage, match="flag provided but not defined: --bogus"):
        parse_globals(["--bogus", "state"])


def test_missing_value():
    with pytest.raises(_Usage, match="flag needs an argument: --root"):
        parse_globals(["--root"])


def test_every_command_has_a_reference():
    for name, ref in COMMANDS.items():
        module, _, func = ref.partition(":")
        assert module.startswith("migrate.cli.") and func, name
    assert set(HOT) == {"create", "start", "run", "exec", "state", "kill", "delete",
                        "checkpoint", "restore"}


# -- main -----------------------------------------------------------------------

def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("migrate version ")


@pytest.mark.parametrize("argv", [["--help"], ["-h"]])
def test_help(capsys, argv):
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "NAME:"
    assert "runc - Open Container Initiative runtime" in lines[1]


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("NAME:\n   migrate - ")


def test_unknown_command(capsys, root):
    assert main(["--root", root, "frobnicate", "x"]) == 2
    err = capsys.readouterr().err
    assert err == ('migrate: unknown command "frobnicate" (No help topic for \'frobnicate\'); '
                   'run `migrate --help`\n')


def test_unknown_global_flag_exit_code(capsys):
    assert main(["--bogus", "state", "x"]) == 2
    assert capsys.readouterr().err == "migrate: flag provided but not defined: --bogus\n"


@pytest.mark.parametrize("argv,message", [
    (["--rootless", "maybe"], 'invalid --rootless value "maybe": use true, false or auto'),
    (["--log-format", "xml"], 'invalid --log-format "xml": use text or json'),
])
def test_bad_global_values(capsys, root, argv, message):
    assert main(["--root", root, *argv, "state", "web"]) == 2
    assert capsys.readouterr().err == f"migrate: {message}\n"


def test_bad_container_id_is_one_line_and_exit_2(capsys, root):
    assert main(["--root", root, "state", "../etc"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith('migrate: invalid container id "../etc"')
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_container_is_exit_1(capsys, root):
    assert main(["--root", root, "state", "ghost"]) == 1
    assert capsys.readouterr().err == 'migrate: container "ghost" does not exist\n'


@pytest.mark.parametrize("cmd", [["kill", "ghost", "9"], ["delete", "ghost"], ["start", "ghost"]])
def test_unknown_container_for_each_hot_command(capsys, root, cmd):
    assert main(["--root", root, *cmd]) == 1
    assert capsys.readouterr().err == 'migrate: container "ghost" does not exist\n'


def test_delete_force_of_unknown_container_succeeds(capsys, root):
    # runc's rule; Podman runs it after a checkpoint has removed the container.
    assert main(["--root", root, "delete", "--force", "ghost"]) == 0
    assert capsys.readouterr() == ("", "")


def test_json_log_gets_the_error_line(capsys, root, tmp_path):
    log = tmp_path / "log.json"
    assert main(["--log-format=json", "--log", str(log), "--root", root, "state", "ghost"]) == 1
    assert capsys.readouterr().err == 'migrate: container "ghost" does not exist\n'
    lines = log.read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["level"] == "error"
    assert record["msg"] == 'container "ghost" does not exist'
    assert record["time"].endswith("Z")


def test_json_log_gets_usage_errors_too(capsys, root, tmp_path):
    log = tmp_path / "log.json"
    assert main(["--log", str(log), "--log-format", "json", "--root", root,
                 "--rootless", "maybe", "state", "x"]) == 2
    assert capsys.readouterr().err.count("\n") == 1          # printed once
    assert json.loads(log.read_text().splitlines()[-1])["msg"].startswith("invalid --rootless")


def test_text_log(capsys, root, tmp_path):
    log = tmp_path / "log.txt"
    assert main(["--log", str(log), "--root", root, "kill", "ghost", "KILL"]) == 1
    # logrus' text layout, as runc writes its log.
    line = log.read_text().splitlines()[-1]
    assert re.fullmatch(r'time="[0-9T:.-]+Z" level=error msg="container \\"ghost\\" does not exist"',
                        line), line


def test_internal_errors_ask_for_a_report(capsys, root, monkeypatch):
    def boom(ctx, argv):
        raise RuntimeError("boom")

    monkeypatch.setattr(hot, "state_cmd", boom)
    assert main(["--root", root, "state", "web"]) == 70
    err = capsys.readouterr().err
    assert err == ("migrate: internal error: RuntimeError: boom (this is a bug: please report "
                   "it, with --debug output)\n")


def test_debug_shows_the_traceback(capsys, root, monkeypatch):
    def boom(ctx, argv):
        raise RuntimeError("boom")

    monkeypatch.setattr(hot, "state_cmd", boom)
    assert main(["--debug", "--root", root, "state", "web"]) == 70
    assert "Traceback" in capsys.readouterr().err


def test_cleanup_notes_are_on_the_same_line(capsys, root, monkeypatch):
    def fail(ctx, argv):
        err = NotFoundError('bundle /b does not exist')
        err.add_note("cleanup: removing cgroups failed: EBUSY")
        raise err

    monkeypatch.setattr(hot, "create_cmd", fail)
    assert main(["--root", root, "create", "web"]) == 1
    assert capsys.readouterr().err == ("migrate: bundle /b does not exist "
                                       "(cleanup: removing cgroups failed: EBUSY)\n")


def test_keyboard_interrupt(root, monkeypatch):
    def interrupted(ctx, argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(hot, "kill_cmd", interrupted)
    assert main(["--root", root, "kill", "web"]) == 130


def test_context_reaches_the_command(root, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(hot, "state_cmd", lambda ctx, argv: seen.append((ctx, argv)) or 0)
    monkeypatch.chdir(tmp_path)
    assert main(["--root", "rel", "--systemd-cgroup", "--rootless=TRUE", "--criu", "/c",
                 "state", "web"]) == 0
    [(ctx, argv)] = seen
    assert argv == ["web"]
    assert ctx.root == str(tmp_path / "rel")                   # made absolute
    assert (ctx.systemd_cgroup, ctx.rootless, ctx.criu) == (True, "true", "/c")


def test_podman_create_argv(root, monkeypatch, tmp_path):
    from migrate.runtime.lifecycle import create

    seen = []
    monkeypatch.setattr(create, "create", lambda ctx, opts: seen.append((ctx, opts)))
    log = tmp_path / "podman.log"
    assert main(["--root", root, "--log-format=json", "--log", str(log), "create",
                 "--bundle", "/b", "--pid-file", "/p", "web"]) == 0
    ctx, opts = seen[0]
    assert (ctx.log, ctx.log_format, opts.bundle, opts.pid_file, opts.id) == \
        (str(log), "json", "/b", "/p", "web")


def test_entry_point_module():
    assert main_mod.__all__ == ["main", "program", "COMMANDS"]


# -- program (the console script: main, then os._exit) -------------------------

def _program(*argv: str):
    import subprocess
    import sys

    code = "import sys; sys.argv[1:] = %r; from migrate.cli.main import program; program()" % (
        list(argv),)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_program_flushes_output_before_its_fast_exit():
    res = _program("--version")
    assert res.returncode == 0
    assert res.stdout.startswith("migrate version ")     # a pipe: block-buffered


def test_program_exit_codes(tmp_path):
    assert _program("--root", str(tmp_path), "frobnicate").returncode == 2
    res = _program("--root", str(tmp_path), "state", "ghost")
    assert res.returncode == 1 and 'container "ghost" does not exist' in res.stderr


def test_program_hot_command_help():
    res = _program("state", "--help")
    assert res.returncode == 0 and "migrate state [command options]" in res.stdout


def test_debug_adds_no_traceback_to_a_user_error(capsys, root):
    assert main(["--debug", "--root", root, "state", "ghost"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and 'container "ghost" does not exist' in err


@pytest.mark.parametrize("text", ["\r", "\n", "a\r\nb", "\x0b", "\x1c", "\x85", "\u2028", "\x1b[2K"])
def test_control_characters_in_quoted_input_keep_the_error_on_one_line(capsys, root, text):
    # Found by the create fuzz: an annotation key "\r" split the error in two.
    # Any user text an error quotes (IDs, paths, config keys) may carry these.
    assert main(["--root", root, "state", f"x{text}y"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.endswith("\n")
    assert repr(text)[1:-1] in err


def test_bad_annotation_key_in_a_bundle_is_one_line(capsys, root, tmp_path):
    bundle = tmp_path / "b"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["true"], "cwd": "/"}, "annotations": {"\r": None}}))
    assert main(["--root", root, "create", "--bundle", str(bundle), "c1"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ['migrate: config.json: annotations["\\r"]: must be a string']
