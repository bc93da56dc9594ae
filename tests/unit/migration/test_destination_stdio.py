"""The destination's stand-ins for the source's stdio (destination._stdio):
the same kind of file, and for a host file CRIU checks the size of, a file
of the size it had at the dump (CRIU restores it onto no other)."""

import os
import stat

import pytest

from migrate.checkpoint.externals import Descriptor
from migrate.checkpoint.metadata import CheckpointMeta, save_meta
from migrate.migration.destination import _stdio

REG = stat.S_IFREG | 0o640
KEY_A, KEY_B = "file[1b:3e9]", "file[1b:3ea]"


def _files_img(images, sizes: dict[str, int]) -> None:
    from pycriu import images as pimages

    entries = [{"type": "REG", "id": i + 1,
                "reg": {"id": i + 1, "flags": "O_WRONLY", "pos": size,
                        "fown": {"uid": 0, "euid": 0, "signum": 0, "pid_type": 0, "pid": 0},
                        "name": key, "ext": True, "size": size, "mode": REG}}
               for i, (key, size) in enumerate(sizes.items())]
    with open(os.path.join(images, "files.img"), "wb") as f:
        pimages.dump({"magic": "FILES", "entries": entries}, f)


def _workdir(tmp_path, descriptors, sizes=None):
    images = tmp_path / "images"
    images.mkdir()
    save_meta(str(images), CheckpointMeta(container_id="c", bundle="/b",
                                          descriptors=tuple(descriptors)))
    if sizes is not None:
        _files_img(str(images), sizes)
    return str(tmp_path)


def _sizes_and_names(fds):
    try:
        return [(os.fstat(fd).st_size, os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
                for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


def test_one_file_for_out_and_err_is_made_its_size(tmp_path):
    pytest.importorskip("pycriu")
    work = _workdir(tmp_path, [
        Descriptor(fd=0, path="/dev/null", external=None, mode=stat.S_IFCHR | 0o666),
        Descriptor(fd=1, path="/h/out.log", external=KEY_A, mode=REG),
        Descriptor(fd=2, path="/h/out.log", external=KEY_A, mode=REG)], {KEY_A: 21})
    assert _sizes_and_names(_stdio(work)) == [(0, "null"), (21, "container.log"),
                                               (21, "container.log")]
    assert stat.S_IMODE(os.stat(os.path.join(work, "container.log")).st_mode) == 0o640


def test_two_files_of_other_sizes_get_a_stand_in_each(tmp_path):
    pytest.importorskip("pycriu")
    work = _workdir(tmp_path, [
        Descriptor(fd=0, path="/dev/null", external=None, mode=stat.S_IFCHR | 0o666),
        Descriptor(fd=1, path="/h/out.log", external=KEY_A, mode=REG),
        Descriptor(fd=2, path="/h/err.log", external=KEY_B, mode=REG)], {KEY_A: 21, KEY_B: 5})
    assert _sizes_and_names(_stdio(work)) == [(0, "null"), (21, "container.log"),
                                               (5, "container.2.log")]


def test_before_the_dump_and_for_pipes_nothing_is_sized(tmp_path):
    """restore_prepare runs before the dump wrote files.img; pipes have no size."""
    work = _workdir(tmp_path, [
        Descriptor(fd=0, path="pipe:[7]", external="pipe:[7]", mode=stat.S_IFIFO | 0o600),
        Descriptor(fd=1, path="/h/out.log", external=KEY_A, mode=REG),
        Descriptor(fd=2, path="pipe:[8]", external="pipe:[8]", mode=stat.S_IFIFO | 0o600)])
    assert _sizes_and_names(_stdio(work)) == [(0, "container.log")] * 3
