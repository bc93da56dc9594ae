"""The in-process copy of a writable tmpfs (checkpoint/tmpfs_copy.py), on
plain directories: what is copied, where the walk stops, what is refused."""

import json
import os
import tarfile

import pytest

from migrate.checkpoint.externals import TMPFS_COPY, ExternalMount
from migrate.checkpoint.tmpfs_copy import copy_name, load, save
from migrate.errors import UsageError


def _mount(mp="/dev", mountpoints=("pts",)):
    return ExternalMount(mountpoint=mp, kind=TMPFS_COPY, detail=json.dumps(
        {"options": "rw", "super": "rw", "mountpoints": list(mountpoints), "copy": 0}))


def test_copy_keeps_files_links_modes_and_stops_at_mount_points(tmp_path):
    root, images, dest = tmp_path / "root", tmp_path / "images", tmp_path / "dest"
    dev = root / "dev"
    (dev / "pts").mkdir(parents=True)
    (dev / "pts" / "0").write_text("hidden by the mount")      # below a mount point: left out
    (dev / "shm").mkdir()
    (dev / "shm" / "data").write_text("kept")
    os.chmod(dev / "shm" / "data", 0o640)
    (dev / "ptmx").symlink_to("pts/ptmx")
    os.link(dev / "shm" / "data", dev / "shm" / "again")
    images.mkdir()
    dest.mkdir()
    m = _mount()
    assert save([m], str(root), str(images)) == 1
    load([m], str(images), {m.detail: str(dest)})
    assert (dest / "pts").is_dir() and not (dest / "pts" / "0").exists()
    assert (dest / "shm" / "data").read_text() == "kept"
    assert (dest / "shm" / "data").stat().st_mode & 0o777 == 0o640
    assert (dest / "shm" / "again").stat().st_ino == (dest / "shm" / "data").stat().st_ino
    assert os.readlink(dest / "ptmx") == "pts/ptmx"


@pytest.mark.parametrize("member", ["../escape", "/abs", "link/below"])
def test_load_refuses_names_outside_the_tmpfs(tmp_path, member):
    images, dest = tmp_path / "images", tmp_path / "dest"
    images.mkdir()
    dest.mkdir()
    with tarfile.open(images / copy_name(0), "w") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
        tar.addfile(tarfile.TarInfo(member))
    m = _mount()
    with pytest.raises(UsageError):
        load([m], str(images), {m.detail: str(dest)})
    assert os.listdir(dest) == []


def test_load_without_the_copy_says_which_mount(tmp_path):
    m = _mount()
    with pytest.raises(UsageError, match="/dev"):
        load([m], str(tmp_path), {m.detail: str(tmp_path)})
