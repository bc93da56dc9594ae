"""The getopt hot-path commands: every flag reaches the options dataclass.

The lifecycle functions are replaced by recorders, so nothing runs.
"""

import json
import signal

import pytest

from migrate.cli import hot
from migrate.errors import UsageError
from migrate.runtime.context import RuntimeContext
from migrate.runtime.lifecycle import create, delete, exec as exec_, kill, query, run, start
from migrate import _record
from migrate.testing import FakeSyscalls
from migrate.testing.fakes import WarmCgroupAttach


@pytest.fixture
def ctx(tmp_path):
    return RuntimeContext(root=str(tmp_path / "root"), syscalls=FakeSyscalls())


@pytest.fixture
def calls(monkeypatch):
    log = []

    def recorder(name, result=None):
        def fn(*args, **kwargs):
            # drop ctx, and the cgroup warm-up (checked on its own below)
            args = tuple(_record.replace(a, attach_warmup=None)
                         if isinstance(a, (create.CreateOptions, exec_.ExecOptions)) else a
                         for a in args[1:])
            log.append((name, args, kwargs))
            return result
        return fn

    monkeypatch.setattr(create, "create", recorder("create", (None, None)))
    monkeypatch.setattr(start, "start", recorder("start"))
    monkeypatch.setattr(run, "run", recorder("run", 0))
    monkeypatch.setattr(exec_, "exec_process", recorder("exec", 0))
    monkeypatch.setattr(kill, "kill", recorder("kill"))
    monkeypatch.setattr(delete, "delete", recorder("delete"))
    monkeypatch.setattr(query, "state", recorder("state", {"id": "web", "status": "running"}))
    return log


# -- create / run -------------------------------------------------------------

def test_create_all_flags(ctx, calls):
    assert hot.create_cmd(ctx, ["--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s",
                                "--no-pivot", "--no-new-keyring", "--preserve-fds", "2",
                                "web"]) == 0
    [(name, (opts,), _)] = calls
    assert name == "create"
    assert opts == create.CreateOptions(id="web", bundle="/b", pid_file="/p",
                                        console_socket="/s", no_pivot=True,
                                        no_new_keyring=True, preserve_fds=2)


@pytest.mark.parametrize("command", ["create", "run", "exec"])
def test_create_run_and_exec_warm_the_cgroup_attach(ctx, monkeypatch, command):
    """The warm-up starts (before the imports) and reaches create or exec,
    which wait for it before forking."""
    seen = []
    monkeypatch.setattr(create, "create", lambda ctx, opts: seen.append(opts) or (None, None))
    monkeypatch.setattr(run, "run", lambda ctx, opts, **kw: seen.append(opts) or 0)
    monkeypatch.setattr(exec_, "exec_process", lambda ctx, opts: seen.append(opts) or 0)
    getattr(hot, f"{command}_cmd")(ctx, ["web", "true"] if command == "exec" else ["web"])
    assert ctx.syscalls.of(WarmCgroupAttach) == [
        WarmCgroupAttach(ctx.cgroup_root, ctx.proc_root)]
    assert seen[0].attach_warmup is not None


def test_create_defaults(ctx, calls):
    hot.create_cmd(ctx, ["web"])
    assert calls[0][1][0] == create.CreateOptions(id="web")


@pytest.mark.parametrize("argv", [
    ["--bundle=/b", "--pid-file=/p", "web"],
    ["-bundle", "/b", "-pid-file", "/p", "web"],
    ["-bundle=/b", "-pid-file=/p", "web"],
    ["-b", "/b", "--pid-file", "/p", "web"],
    ["-b", "/b", "-pid-file", "/p", "web"],
    ["--bundle", "/x", "--bundle", "/b", "--pid-file", "/p", "web"],     # last one wins
])
def test_create_flag_spellings(ctx, calls, argv):
    hot.create_cmd(ctx, argv)
    opts = calls[0][1][0]
    assert (opts.id, opts.bundle, opts.pid_file) == ("web", "/b", "/p")


def test_create_podman_argv(ctx, calls):
    hot.create_cmd(ctx, ["--bundle", "/var/lib/c/b", "--pid-file", "/run/c/pidfile",
                         "--console-socket", "/run/c/sock", "0123abcd"])
    opts = calls[0][1][0]
    assert (opts.id, opts.console_socket) == ("0123abcd", "/run/c/sock")


@pytest.mark.parametrize("argv,match", [
    ([], "expected CONTAINER_ID, got nothing"),
    (["a", "b"], "expected CONTAINER_ID, got a b"),
    (["web", "--bundle", "/b"], "got web --bundle /b"),     # flags come before the ID
    (["--nope", "web"], "option --nope not recognized"),
    (["-nope", "web"], "option --nope not recognized"),
    (["--preserve-fds", "x", "web"], "invalid value 'x' for --preserve-fds"),
    (["--bundle"], "flag needs an argument: --bundle"),
    (["--no-pivot=yes", "web"], "must not have an argument"),
])
def test_create_usage_errors(ctx, calls, argv, match):
    with pytest.raises(UsageError, match=match):
        hot.create_cmd(ctx, argv)
    assert calls == []


def test_run_flags(ctx, calls):
    assert hot.run_cmd(ctx, ["-d", "--keep", "--bundle", "/b", "web"]) == 0
    [(name, (opts,), kwargs)] = calls
    assert name == "run" and kwargs == {"detach": True, "keep": True}
    assert (opts.id, opts.bundle) == ("web", "/b")


def test_run_foreground_returns_the_exit_code(ctx, monkeypatch):
    monkeypatch.setattr(run, "run", lambda ctx, opts, detach, keep: 0 if detach else 137)
    assert hot.run_cmd(ctx, ["web"]) == 137
    assert hot.run_cmd(ctx, ["--detach", "web"]) == 0


def test_start(ctx, calls):
    assert hot.start_cmd(ctx, ["web"]) == 0
    assert calls == [("start", ("web",), {})]


# -- exec ---------------------------------------------------------------------

def test_exec_all_flags(ctx, calls):
    hot.exec_cmd(ctx, ["--env", "A=1", "-e", "B=2", "--cwd", "/tmp", "--user", "1000:100",
                       "--additional-gids", "10", "-g", "20", "--cap", "CAP_KILL",
                       "-c", "CAP_CHOWN", "--tty", "--console-socket", "/s", "--detach",
                       "--pid-file", "/p", "--no-new-privs", "--preserve-fds", "1",
                       "--apparmor", "x", "--process-label", "y", "--cgroup", "z",
                       "web", "sh", "-c", "echo hi"])
    [(name, (opts,), _)] = calls
    assert opts == exec_.ExecOptions(
        id="web", args=("sh", "-c", "echo hi"), env=("A=1", "B=2"), cwd="/tmp", user="1000:100",
        additional_gids=("10", "20"), caps=("CAP_KILL", "CAP_CHOWN"), tty=True,
        console_socket="/s", detach=True, pid_file="/p", no_new_privs=True, preserve_fds=1,
        sub_cgroups=(("", "z"),))


@pytest.mark.parametrize("argv,expected", [
    (["--cgroup", "/"], (("", "/"),)),
    (["--cgroup", "memory:submem", "--cgroup", "cpu,cpuacct:subcpu"],
     (("memory", "submem"), ("cpu", "subcpu"), ("cpuacct", "subcpu"))),
    (["--ignore-paused"], ()),
])
def test_exec_cgroup_and_ignore_paused(ctx, calls, argv, expected):
    hot.exec_cmd(ctx, [*argv, "web", "true"])
    [(_, (opts,), _)] = calls
    assert opts.sub_cgroups == expected
    assert opts.ignore_paused == ("--ignore-paused" in argv)


@pytest.mark.parametrize("argv,message", [
    (["--cgroup", "a:b:c"], "invalid --cgroup argument: a:b:c"),
    (["--cgroup", "x", "--cgroup", "memory:y"], "missing <controller>: prefix"),
])
def test_exec_bad_cgroup(ctx, calls, argv, message):
    with pytest.raises(UsageError, match=message):
        hot.exec_cmd(ctx, [*argv, "web", "true"])


def test_exec_podman_argv(ctx, calls):
    hot.exec_cmd(ctx, ["--pid-file", "/run/p", "--process", "/tmp/process.json", "--detach",
                       "--tty", "--console-socket", "/run/s", "web"])
    opts = calls[0][1][0]
    assert (opts.process_file, opts.detach, opts.tty, opts.args) == \
        ("/tmp/process.json", True, True, ())


@pytest.mark.parametrize("cmd", [
    ["ls", "-la"],
    ["ps", "-ef"],
    ["grep", "-rn", "--color=never", "x", "/etc"],
    ["sh", "-c", "echo -n hi"],
    ["env", "--bundle", "-user"],            # the command's words, not ours
])
def test_exec_command_words_are_left_alone(ctx, calls, cmd):
    hot.exec_cmd(ctx, ["-e", "A=1", "web", *cmd])
    assert calls[0][1][0].args == tuple(cmd)


def test_exec_single_dash_long_flags_before_the_id(ctx, calls):
    hot.exec_cmd(ctx, ["-cwd", "/srv", "-user=5", "-detach", "web", "true"])
    opts = calls[0][1][0]
    assert (opts.cwd, opts.user, opts.detach, opts.args) == ("/srv", "5", True, ("true",))


def test_exec_returns_the_process_exit_code(ctx, monkeypatch):
    monkeypatch.setattr(exec_, "exec_process", lambda ctx, opts: 42)
    assert hot.exec_cmd(ctx, ["web", "false"]) == 42


# -- state, kill, delete ------------------------------------------------------

def test_state_prints_json(ctx, calls, capsys):
    assert hot.state_cmd(ctx, ["web"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"id": "web", "status": "running"}
    assert out.endswith("\n")
    assert calls == [("state", ("web",), {})]


@pytest.mark.parametrize("argv,sig", [
    (["web"], signal.SIGTERM),
    (["web", "9"], signal.SIGKILL),
    (["web", "15"], signal.SIGTERM),
    (["web", "KILL"], signal.SIGKILL),
    (["web", "SIGKILL"], signal.SIGKILL),
    (["web", "SIGRTMIN+3"], signal.SIGRTMIN + 3),
])
def test_kill_signals(ctx, calls, argv, sig):
    assert hot.kill_cmd(ctx, argv) == 0
    assert calls == [("kill", ("web", int(sig)), {"all_processes": False})]


@pytest.mark.parametrize("flag", ["--all", "-a", "-all"])
def test_kill_all(ctx, calls, flag):
    hot.kill_cmd(ctx, [flag, "web", "KILL"])
    assert calls[0][2] == {"all_processes": True}


def test_kill_unknown_signal(ctx, calls):
    with pytest.raises(UsageError, match="unknown signal 'SIGNOPE'"):
        hot.kill_cmd(ctx, ["web", "SIGNOPE"])
    assert calls == []


@pytest.mark.parametrize("argv,force", [(["web"], False), (["--force", "web"], True),
                                        (["-f", "web"], True), (["-force", "web"], True)])
def test_delete(ctx, calls, argv, force):
    assert hot.delete_cmd(ctx, argv) == 0
    assert calls == [("delete", ("web",), {"force": force})]


@pytest.mark.parametrize("cmd", ["create_cmd", "start_cmd", "run_cmd", "exec_cmd", "state_cmd",
                                 "kill_cmd", "delete_cmd"])
def test_every_command_needs_an_id(ctx, calls, cmd):
    with pytest.raises(UsageError, match="CONTAINER_ID"):
        getattr(hot, cmd)(ctx, [])


def test_kill_takes_at_most_a_signal(ctx, calls):
    with pytest.raises(UsageError, match="expected CONTAINER_ID"):
        hot.kill_cmd(ctx, ["web", "9", "extra"])


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_exits_zero(ctx, calls, capsys, flag):
    with pytest.raises(SystemExit) as info:
        hot.create_cmd(ctx, [flag])
    assert info.value.code == 0
    out = capsys.readouterr().out
    # runc's (urfave/cli) layout, which runc's help.bats reads.
    assert out.startswith("NAME:\n   migrate create - create a container (as runc create)\n")
    assert "\nUSAGE:\n   migrate create [command options] <container-id>\n" in out
    assert "--bundle value, -b value" in out
    assert calls == []
