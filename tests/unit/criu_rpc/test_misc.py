"""Log reading, callbacks, lazy-pages command line, import weight, __all__."""

import subprocess
import sys

import pytest

import migrate.criu_rpc as criu_rpc
from migrate.criu_rpc import (
    LAZY_DUMP_PIPE_SIZE,
    LazyPagesOptions,
    LogLevel,
    PageServer,
    Tls,
    check_lazy_dump_limits,
    lazy_pages_argv,
)
from migrate.criu_rpc._log import first_error, read_tail
from migrate.criu_rpc.notify import NOTIFICATIONS, check_callbacks
from migrate.errors import UnsupportedError, UsageError

LOG = """\
(00.010000) Version: 4.2.1
(00.020000) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.030000) Warn  (compel/src/lib/infect.c:132): Unable to interrupt task: 999 (No such process)
(00.040000) Error (compel/src/lib/infect.c:417): Unable to detach from 999: No such process
""" + "".join(f"(00.05{i:04d}) cleanup line {i}\n" for i in range(30)) + \
    "(00.090000) Error (criu/cr-dump.c:1975): Dumping FAILED.\n"


def test_first_error_skips_harmless_lines(tmp_path):
    log = tmp_path / "criu.log"
    log.write_text(LOG)
    assert first_error(str(log)) == "Unable to detach from 999: No such process"


def test_tail_keeps_early_errors(tmp_path):
    log = tmp_path / "criu.log"
    log.write_text(LOG)
    tail = read_tail(str(log), lines=5)
    assert tail[0].endswith("Unable to detach from 999: No such process")
    assert tail[1] == "..."
    assert tail[-1].endswith("Dumping FAILED.")
    assert len(tail) == 7
    assert not any("RLIMIT" in line for line in tail)


def test_tail_of_missing_or_short_log(tmp_path):
    assert read_tail(str(tmp_path / "none")) == ()
    assert read_tail(None) == ()
    short = tmp_path / "short.log"
    short.write_text("a\n\nb\n")
    assert read_tail(str(short)) == ("a", "b")


def test_callbacks_checked():
    assert check_callbacks(None) == {}
    assert set(NOTIFICATIONS) >= {"pre-dump", "post-dump", "pre-restore", "post-restore",
                                  "setup-namespaces", "post-setup-namespaces", "network-lock",
                                  "network-unlock", "pre-resume", "post-resume",
                                  "status-ready", "orphan-pts-master"}
    with pytest.raises(UsageError, match="not callable"):
        check_callbacks({"post-dump": True})


def test_lazy_pages_argv():
    opts = LazyPagesOptions(images_dir="/img", work_dir="/work", log_level=LogLevel.INFO,
                            page_server=PageServer(address="10.0.0.1", port=27000),
                            tls=Tls(cert="/c", key="/k", no_cn_verify=True))
    assert lazy_pages_argv(opts, criu="/sbin/criu", status_fd=5) == [
        "/sbin/criu", "lazy-pages", "--images-dir", "/img", "--work-dir", "/work",
        "--log-file", "lazy-pages.log", "-v3", "--status-fd", "5",
        "--page-server", "--address", "10.0.0.1", "--port", "27000",
        "--tls", "--tls-cert", "/c", "--tls-key", "/k", "--tls-no-cn-verify"]
    assert lazy_pages_argv(LazyPagesOptions(images_dir="/i")) == [
        "criu", "lazy-pages", "--images-dir", "/i", "--log-file", "lazy-pages.log", "-v4"]


@pytest.mark.parametrize("kwargs", [
    {"images_dir": ""},
    {"images_dir": "/i", "log_file": "a/b"},
    {"images_dir": "/i", "page_server": PageServer(port=1)},
    {"images_dir": "/i", "page_server": PageServer(address="127.0.0.1")},
    {"images_dir": "/i", "tls": Tls()},
])
def test_lazy_pages_bad_options(kwargs):
    with pytest.raises(UsageError):
        LazyPagesOptions(**kwargs)


def _proc(tmp_path, size, cap_eff):
    (tmp_path / "sys/fs").mkdir(parents=True)
    (tmp_path / "self").mkdir()
    (tmp_path / "sys/fs/pipe-max-size").write_text(f"{size}\n")
    (tmp_path / "self/status").write_text(f"Name:\tx\nCapEff:\t{cap_eff:016x}\n")
    return str(tmp_path)


def test_lazy_dump_limits(tmp_path):
    root = _proc(tmp_path, 1 << 20, 0x1ffffffffff & ~(1 << 24))
    with pytest.raises(UnsupportedError, match=f"sysctl fs.pipe-max-size={LAZY_DUMP_PIPE_SIZE}"):
        check_lazy_dump_limits(proc_root=root)


@pytest.mark.parametrize("size, cap", [(4 << 20, 0), (1 << 20, 1 << 24)])
def test_lazy_dump_limits_met(tmp_path, size, cap):
    check_lazy_dump_limits(proc_root=_proc(tmp_path, size, cap))


def test_import_does_not_load_protobuf():
    code = ("import sys, migrate.criu_rpc; "
            "bad = [m for m in sys.modules if m.startswith(('google', 'pycriu'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_all_names_exist():
    assert sorted(criu_rpc.__all__) == sorted(set(criu_rpc.__all__))
    for name in criu_rpc.__all__:
        assert hasattr(criu_rpc, name), name


def _fake_lazy_pages(tmp_path, body: str):
    """A `criu lazy-pages` stand-in: says ready on --status-fd, then ``body``."""
    fake = tmp_path / "criu-lazy"
    fake.write_text(
        "#!/bin/bash\n"    # dash cannot redirect to an fd above 9
        "while [ $# -gt 0 ]; do case $1 in --status-fd) fd=$2; shift;; "
        "--work-dir) work=$2; shift;; --log-file) log=$2; shift;; esac; shift; done\n"
        "printf '\\0' >&$fd\n" + body)
    fake.chmod(0o755)
    return str(fake)


def test_lazy_pages_daemon_killed_when_its_log_runs_away(tmp_path):
    import time

    from migrate.criu_rpc import start_lazy_pages
    from migrate.errors import CriuError

    criu = _fake_lazy_pages(tmp_path, 'while :; do head -c 65536 /dev/zero >> "$work/$log"; '
                                      'sleep 0.01; done\n')
    daemon = start_lazy_pages(LazyPagesOptions(images_dir=str(tmp_path), work_dir=str(tmp_path)),
                              criu=criu, max_log_bytes=1 << 20)
    try:
        with pytest.raises(CriuError) as err:
            daemon.wait(timeout=20)
        assert "its log grew past 1 MiB" in str(err.value)
        assert err.value.log_path == str(tmp_path / "lazy-pages.log")
        size = (tmp_path / "lazy-pages.log").stat().st_size
        time.sleep(0.2)
        assert (tmp_path / "lazy-pages.log").stat().st_size == size
    finally:
        daemon.close()


def test_lazy_pages_daemon_killed_at_its_deadline(tmp_path):
    from migrate.criu_rpc import start_lazy_pages
    from migrate.errors import CriuError

    criu = _fake_lazy_pages(tmp_path, "exec sleep 60\n")
    daemon = start_lazy_pages(LazyPagesOptions(images_dir=str(tmp_path), work_dir=str(tmp_path)),
                              criu=criu, deadline=0.5)
    try:
        with pytest.raises(CriuError, match="still running after 0.5 s: killed"):
            daemon.wait(timeout=20)
    finally:
        daemon.close()
