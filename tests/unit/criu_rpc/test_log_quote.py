"""Quoting CRIU's log on failure: each real error with the lines before it."""

from migrate.cli.main import render_error
from migrate.criu_rpc._log import quote_errors
from migrate.errors import CriuError


def _log(tmp_path, lines):
    path = tmp_path / "restore.log"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_errors_are_quoted_with_what_led_to_them(tmp_path):
    lines = [f"(00.0{i}) step {i}" for i in range(20)]
    lines[3] = "(00.03) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self"
    lines[12] = "(00.12) Error (criu/mount-v2.c:634): mnt-v2: Can't stat mountpoint /x/run"
    lines[14] = "(00.14) Error (criu/cr-restore.c:2331): Restoring FAILED."
    got = quote_errors(_log(tmp_path, lines), before=2)
    assert got == ("11:(00.010) step 10", "12:(00.011) step 11", "13:" + lines[12],
                   "14:(00.013) step 13", "15:" + lines[14])
    assert quote_errors(str(tmp_path / "missing")) == ()
    assert len(quote_errors(_log(tmp_path, [lines[12]] * 100), limit=7)) == 7


def test_gaps_are_marked(tmp_path):
    lines = ["a", "Error (x.c:1): one", "b", "c", "d", "e", "Error (x.c:2): two"]
    assert quote_errors(_log(tmp_path, lines), before=1) == (
        "1:a", "2:Error (x.c:1): one", "...", "6:e", "7:Error (x.c:2): two")


def test_cli_shows_the_quote_before_the_one_line(tmp_path, capsys):
    err = CriuError("restore", "mnt-v2: Can't stat mountpoint", log_path="/w/restore.log",
                    log_tail=("tail 1", "tail 2"), error_lines=("12:Error (m.c:1): boom",))
    assert render_error(err, None, debug=False) == 1
    out = capsys.readouterr().err.splitlines()
    assert out[0] == "migrate: errors in /w/restore.log:"
    assert out[1] == "  12:Error (m.c:1): boom"
    assert out[-1].startswith("migrate: criu restore failed: mnt-v2")
    assert "tail 1" not in "\n".join(out)
    render_error(err, None, debug=True)
    shown = capsys.readouterr().err
    assert "last lines of /w/restore.log" in shown and "  tail 2" in shown
