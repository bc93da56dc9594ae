"""migrate migrate / migrate receive: flags, token sources, early errors."""

from __future__ import annotations

import pytest

from migrate.cli.main import main
from migrate.cli.migration import parse_hostport, read_token
from migrate.errors import UsageError


@pytest.mark.parametrize("text,parsed", [
    ("10.250.0.2:7000", ("10.250.0.2", 7000)), ("host:0", ("host", 0)),
    ("[fd00::2]:7000", ("fd00::2", 7000)),
])
def test_hostport(text, parsed):
    assert parse_hostport(text, "--to") == parsed


@pytest.mark.parametrize("text", ["host", ":7000", "host:port", "host:70000", ""])
def test_bad_hostport(text):
    with pytest.raises(UsageError, match="is not HOST:PORT"):
        parse_hostport(text, "--to")


def test_token_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGRATE_TOKEN", "from-env")
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert read_token("flag", str(f)) == b"flag"
    assert read_token(None, str(f)) == b"from-file"
    assert read_token(None, None) == b"from-env"
    monkeypatch.delenv("MIGRATE_TOKEN")
    with pytest.raises(UsageError, match="--token, --token-file or \\$MIGRATE_TOKEN"):
        read_token(None, None)
    f.write_text("")
    with pytest.raises(UsageError, match="is empty"):
        read_token(None, str(f))
    with pytest.raises(UsageError, match="cannot read the token file"):
        read_token(None, str(tmp_path / "missing"))


def test_migrate_unknown_container(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MIGRATE_TOKEN", "t")
    rc = main(["--root", str(tmp_path), "migrate", "nope", "--to", "127.0.0.1:9"])
    assert rc == 1
    assert capsys.readouterr().err == 'migrate: container "nope" does not exist\n'


def test_migrate_needs_a_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MIGRATE_TOKEN", raising=False)
    rc = main(["--root", str(tmp_path), "migrate", "c", "--to", "127.0.0.1:9"])
    assert rc == 2 and "a shared token is needed" in capsys.readouterr().err


def test_receive_flags(capsys):
    assert main(["receive", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--listen", "--token-file", "--tls-cert", "--tls-ca", "--root", "--once"):
        assert flag in out
    assert main(["receive", "--listen", "nowhere", "--token", "t"]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err


def test_receive_tls_needs_a_certificate(capsys, tmp_path):
    rc = main(["receive", "--listen", "127.0.0.1:0", "--token", "t", "--tls-ca", str(tmp_path / "ca")])
    assert rc == 2 and "--tls-cert and --tls-key" in capsys.readouterr().err
