"""Resolving paths inside an untrusted rootfs: nothing may lead outside it."""

import errno
import os

import pytest

from migrate.runtime.paths import ensure_mountpoint, mkdir_all_in_root, secure_join


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "usr" / "bin").mkdir(parents=True)
    return r


def test_plain_paths(root):
    assert secure_join(str(root), "/etc/passwd") == str(root / "etc" / "passwd")
    assert secure_join(str(root), "etc//./passwd") == str(root / "etc" / "passwd")
    assert secure_join(str(root), "/") == str(root)
    assert secure_join(str(root), "") == str(root)


def test_dotdot_cannot_climb_out(root):
    assert secure_join(str(root), "/../../etc/shadow") == str(root / "etc" / "shadow")
    assert secure_join(str(root), "usr/../../..") == str(root)


def test_absolute_symlink_resolves_inside(root):
    os.symlink("/etc", root / "link")
    assert secure_join(str(root), "/link/hosts") == str(root / "etc" / "hosts")


def test_relative_symlink_cannot_climb_out(root):
    os.symlink("../../../../../etc", root / "usr" / "bin" / "evil")
    assert secure_join(str(root), "/usr/bin/evil/passwd") == str(root / "etc" / "passwd")


def test_relative_symlink_from_its_directory(root):
    os.symlink("bin", root / "usr" / "sbin")
    assert secure_join(str(root), "/usr/sbin/ls") == str(root / "usr" / "bin" / "ls")


def test_missing_components_are_kept(root):
    assert secure_join(str(root), "/a/b/../c") == str(root / "a" / "c")


def test_symlink_loop_is_eloop(root):
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    with pytest.raises(OSError) as info:
        secure_join(str(root), "/a/x")
    assert info.value.errno == errno.ELOOP


def test_mkdir_all_follows_symlinks_inside_the_root(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root / "escape")       # absolute host path
    got = mkdir_all_in_root(str(root), "/escape/new/dir")
    assert got == str(root / str(outside).lstrip("/") / "new" / "dir")
    assert os.path.isdir(got)
    assert list(outside.iterdir()) == []


def test_mkdir_all_refuses_a_file_in_the_way(root):
    (root / "etc" / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        mkdir_all_in_root(str(root), "/etc/file/sub")


def test_mkdir_all_mode(root):
    path = mkdir_all_in_root(str(root), "/var/lib/x", 0o700)
    assert os.stat(path).st_mode & 0o777 == 0o700 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_ensure_mountpoint_dir(root):
    assert ensure_mountpoint(str(root), "/proc", is_file=False) == str(root / "proc")
    assert (root / "proc").is_dir()


def test_ensure_mountpoint_file(root):
    got = ensure_mountpoint(str(root), "/etc/resolv.conf", is_file=True)
    assert got == str(root / "etc" / "resolv.conf")
    assert os.path.isfile(got) and os.path.getsize(got) == 0


def test_ensure_mountpoint_file_creates_parents(root):
    got = ensure_mountpoint(str(root), "/run/secrets/token", is_file=True)
    assert got == str(root / "run" / "secrets" / "token") and os.path.isfile(got)


def test_ensure_mountpoint_keeps_an_existing_file(root):
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    ensure_mountpoint(str(root), "/etc/hosts", is_file=True)
    assert (root / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"


def test_ensure_mountpoint_file_through_absolute_symlink(root):
    # Like systemd images: /etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf.
    os.symlink("/run/systemd/resolve/stub-resolv.conf", root / "etc" / "resolv.conf")
    got = ensure_mountpoint(str(root), "/etc/resolv.conf", is_file=True)
    assert got == str(root / "run" / "systemd" / "resolve" / "stub-resolv.conf")
    assert os.path.isfile(got) and not os.path.islink(got)
    assert os.path.islink(root / "etc" / "resolv.conf")       # the link is left alone


def test_ensure_mountpoint_file_symlink_to_host_stays_inside(root, tmp_path):
    host_file = tmp_path / "host-secret"
    host_file.write_text("secret")
    os.symlink(str(host_file), root / "etc" / "secret")
    got = ensure_mountpoint(str(root), "/etc/secret", is_file=True)
    assert got.startswith(str(root) + "/")
    assert host_file.read_text() == "secret"


def test_mkdir_all_through_a_dangling_relative_symlink(root):
    os.symlink("opt/vendor/lib", root / "lib64")      # opt/ does not exist yet
    got = mkdir_all_in_root(str(root), "/lib64/modules")
    assert got == str(root / "opt" / "vendor" / "lib" / "modules")
    assert os.path.isdir(got)
