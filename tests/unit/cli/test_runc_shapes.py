"""Help pages, version and log lines in the shapes runc's tests and engines read."""

import json
import re

import pytest

from migrate.cli.events import parse_duration
from migrate.cli.main import main
from migrate.cli.update import parse_bytes, resources_from_flags, resources_from_json
from migrate.errors import UsageError

# The commands runc 1.1.5's help.bats asks for, and one of ours.
RUNC_COMMANDS = ["checkpoint", "delete", "events", "exec", "kill", "list", "pause", "restore",
                 "resume", "spec", "start", "run", "state", "update", "create", "ps"]


@pytest.mark.parametrize("command", RUNC_COMMANDS + ["migrate", "inspect"])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_has_a_help_page(capsys, command, flag):
    with pytest.raises(SystemExit) if command in ("create", "run", "exec", "kill", "delete",
                                                  "start", "state", "checkpoint",
                                                  "restore") else _nothing():
        assert main([command, flag]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l]
    assert lines[0] == "NAME:"
    assert lines[1].startswith(f"   migrate {command} - ")
    if command in RUNC_COMMANDS:
        assert f"runc {command}" in lines[1]
    assert "USAGE:" in lines


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_help_after_the_container_id_belongs_to_the_container(capsys):
    # `exec ID sh -h`: the -h is sh's; here the container does not exist.
    code = main(["--root", "/nonexistent-migrate-root", "update", "ghost", "-h"])
    assert code != 0


def test_unknown_command_help_says_no_help_topic(capsys):
    assert main(["foo", "-h"]) == 3
    assert "No help topic for 'foo'" in capsys.readouterr().err


def test_help_command(capsys):
    with pytest.raises(SystemExit):
        main(["help", "state"])
    assert "migrate state - " in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["-v"], ["--version"], ["version"]])
def test_version_shape(capsys, argv):
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.search(r"runc version [0-9]+\.[0-9]+\.[0-9]+", lines[0])
    assert lines[0].startswith("migrate version ")
    assert lines[1].startswith("commit:")
    assert re.fullmatch(r"spec: [0-9]+\.[0-9]+\.[0-9]+", lines[2])


def test_json_log_is_compact_like_logrus(tmp_path, capsys):
    log = tmp_path / "log.json"
    assert main(["--log", str(log), "--log-format", "json", "--root", str(tmp_path),
                 "kill", "ghost", "KILL"]) == 1
    line = log.read_text().splitlines()[-1]
    assert line.startswith('{"level":"error","msg":"container \\"ghost\\" does not exist"')
    assert json.loads(line)["time"].endswith("Z")


@pytest.mark.parametrize("text,value", [("67108864", 67108864), ("50M", 52428800),
                                        ("50m", 52428800), ("1g", 1 << 30), ("2KiB", 2048),
                                        ("30MB", 30 << 20), ("-1", -1), ("1.5k", 1536)])
def test_memory_sizes_as_runc_reads_them(text, value):
    assert parse_bytes(text, "--memory") == value


@pytest.mark.parametrize("text", ["abc", "-2", "10X", ""])
def test_bad_memory_sizes(text):
    with pytest.raises(UsageError):
        parse_bytes(text, "--memory")


def test_flags_zero_means_unchanged():
    patch = resources_from_flags({"memory": "50M", "cpu-quota": "-1", "cpu-share": "0",
                                  "pids-limit": 0, "blkio-weight": 0, "cpuset-cpus": ""})
    assert patch.memory.limit == 52428800 and patch.memory.swap is None
    assert patch.cpu.quota == -1 and patch.cpu.shares is None and patch.cpu.cpus is None
    assert patch.pids is None and patch.block_io is None


def test_bad_cpu_flag_is_a_usage_error():
    with pytest.raises(UsageError, match="cpu-period"):
        resources_from_flags({"cpu-period": "-5"})


def test_json_patch_keys_match_in_any_case():
    patch = resources_from_json('{"CPU": {"Cpus": "1", "shares": 0}, "Memory": {"Limit": 1024},'
                                ' "pids": {"limit": 20}, "unified": {"pids.max": "10"}}', "stdin")
    assert patch.cpu.cpus == "1" and patch.cpu.shares is None
    assert patch.memory.limit == 1024
    assert patch.pids.limit == 20
    assert patch.unified == {"pids.max": "10"}


@pytest.mark.parametrize("text", ["{", "[1]", '{"memory": {"limit": "x"}}'])
def test_bad_json_patch(text):
    with pytest.raises(UsageError):
        resources_from_json(text, "stdin")


@pytest.mark.parametrize("text,seconds", [("5s", 5.0), ("100ms", 0.1), ("1m30s", 90.0),
                                          ("1.5h", 5400.0), ("250us", 0.00025), ("0", 0.0)])
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "s", "1x", ""])
def test_bad_durations(text):
    with pytest.raises(UsageError):
        parse_duration(text)
