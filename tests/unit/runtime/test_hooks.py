"""OCI hooks: state on stdin, the hook's own args and env, failures and timeouts."""

import json
import logging
import os

import pytest

from migrate.oci import Hook
from migrate.runtime.hooks import HookError, run_hooks


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_hook_gets_state_args_and_env(tmp_path):
    out = tmp_path / "out"
    hook = Hook(path=_script(tmp_path, "h", f'cat > {out}.stdin\necho "$# $1 $FOO" > {out}\n'),
                args=("argv0", "one"), env=("FOO=bar", "IGNORED"))
    run_hooks([hook], state={"id": "web", "status": "creating"}, name="prestart")
    assert json.loads((tmp_path / "out.stdin").read_text()) == {"id": "web", "status": "creating"}
    # args[0] is argv[0] (a script's $0 is its path, so check the rest).
    assert out.read_text() == "1 one bar\n"


def test_hooks_run_in_order(tmp_path):
    log = tmp_path / "log"
    hooks = [Hook(path=_script(tmp_path, f"h{i}", f"echo {i} >> {log}\n")) for i in range(3)]
    run_hooks(hooks, state=None, name="poststart")
    assert log.read_text() == "0\n1\n2\n"


def test_failure_names_the_hook_and_quotes_stderr(tmp_path):
    path = _script(tmp_path, "bad", "echo first >&2\necho 'no network' >&2\nexit 3\n")
    with pytest.raises(HookError) as info:
        run_hooks([Hook(path=path)], state={}, name="createRuntime")
    assert str(info.value) == (f"error running hook #0 (createRuntime {path}): "
                               f"exited with 3: no network")


def test_a_failure_stops_the_list(tmp_path):
    marker = tmp_path / "ran"
    hooks = [Hook(path=_script(tmp_path, "bad", "exit 1\n")),
             Hook(path=_script(tmp_path, "next", f"touch {marker}\n"))]
    with pytest.raises(HookError):
        run_hooks(hooks, state={}, name="prestart")
    assert not marker.exists()


def test_timeout(tmp_path):
    path = _script(tmp_path, "slow", "exec sleep 5\n")
    with pytest.raises(HookError, match=f"prestart {path}\\): timed out after 1s"):
        run_hooks([Hook(path=path, timeout=1)], state={}, name="prestart")


def test_missing_hook(tmp_path):
    path = str(tmp_path / "nope")
    with pytest.raises(HookError, match=f"error running hook #0 \\(poststart {path}\\): No such file or directory"):
        run_hooks([Hook(path=path)], state={}, name="poststart")


def test_warn_only_logs_and_goes_on(tmp_path, caplog):
    marker = tmp_path / "ran"
    hooks = [Hook(path=_script(tmp_path, "bad", "exit 2\n")),
             Hook(path=_script(tmp_path, "next", f"touch {marker}\n"))]
    with caplog.at_level(logging.WARNING, logger="migrate.runtime.hooks"):
        run_hooks(hooks, state={}, name="poststop", warn_only=True)
    assert marker.exists()
    assert "error running hook #0 (poststop" in caplog.text and "exited with 2" in caplog.text


def test_a_signal_is_named_as_runc_does(tmp_path):
    path = _script(tmp_path, "killed", "kill -SYS $$\n")
    with pytest.raises(HookError, match=r"signal: bad system call"):
        run_hooks([Hook(path=path)], state={}, name="startContainer")


def test_hooks_are_errors_of_the_tree():
    from migrate.errors import MigrateError

    assert issubclass(HookError, MigrateError)
    assert os.path.exists("/bin/sh")
