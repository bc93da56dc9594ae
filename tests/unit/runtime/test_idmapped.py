"""The runtime's half of idmapped mounts: detached trees made before the
init starts, checked on FakeSyscalls (the user namespace is a stub)."""

import errno
import os

import pytest

from migrate.errors import MountError, UsageError
from migrate.oci import IdMapping, Linux, Mount as OciMount
from migrate.runtime.idmapped import close_trees, open_idmapped_trees, wants_idmap
from migrate.runtime.mounts import MOUNT_ATTR
from migrate.testing import FakeSyscalls, MountSetattr, OpenTree

MAP = (IdMapping(container_id=0, host_id=100000, size=65536),)
OTHER = (IdMapping(container_id=0, host_id=200000, size=1000),)


class Namespaces:
    """make_userns stub: a real fd (so closing it can be checked) per call."""

    def __init__(self):
        self.made = []

    def __call__(self, sys, uid_map, gid_map, proc_root):
        r, w = os.pipe()
        os.close(w)
        self.made.append((uid_map, gid_map, r))
        return r

    def closed(self) -> bool:
        for *_, fd in self.made:
            try:
                os.fstat(fd)
                return False
            except OSError:
                pass
        return True


def _mount(dest, options, uids=MAP, gids=MAP, source="/src"):
    return OciMount(destination=dest, type="bind", source=source, options=options,
                    uid_mappings=uids, gid_mappings=gids)


@pytest.fixture
def src(tmp_path):
    (tmp_path / "src").mkdir()
    return str(tmp_path / "src")


def test_wants_idmap():
    assert wants_idmap(_mount("/a", ("bind", "idmap")))
    assert wants_idmap(OciMount(destination="/a", options=("rbind", "ridmap")))
    assert wants_idmap(_mount("/a", ("bind",)))           # mappings alone: refused later
    assert not wants_idmap(OciMount(destination="/a", options=("bind",)))


def test_one_tree_per_idmapped_mount_one_namespace_per_mapping(src):
    sys = FakeSyscalls()
    ns = Namespaces()
    mounts = (OciMount(destination="/plain", source=src, options=("bind",)),
              _mount("/a", ("bind", "idmap"), source=src),
              _mount("/b", ("rbind", "ridmap"), source=src),
              _mount("/c", ("rbind", "idmap"), OTHER, OTHER, source=src))
    trees = open_idmapped_trees(sys, mounts, Linux(), "/bundle", container_userns=False,
                                make_userns=ns)
    assert [i for i, _ in trees] == [1, 2, 3]
    fds = [fd for _, fd in trees]
    assert [(m[0], m[1]) for m in ns.made] == [(((0, 100000, 65536),),) * 2,
                                               (((0, 200000, 1000),),) * 2]
    userns = [m[2] for m in ns.made]
    assert sys.calls == [
        OpenTree(src, False),
        MountSetattr(fds[0], MOUNT_ATTR.IDMAP, 0, 0, False, userns[0]),
        OpenTree(src, True),
        MountSetattr(fds[1], MOUNT_ATTR.IDMAP, 0, 0, True, userns[0]),   # ridmap: the tree
        OpenTree(src, True),
        MountSetattr(fds[2], MOUNT_ATTR.IDMAP, 0, 0, False, userns[1]),  # idmap: the top
    ]
    assert ns.closed()                         # the trees keep what they need


def test_container_mappings_when_the_mount_has_none(src):
    sys = FakeSyscalls()
    ns = Namespaces()
    linux = Linux(uid_mappings=MAP, gid_mappings=OTHER)
    open_idmapped_trees(sys, (_mount("/a", ("bind", "idmap"), (), (), source=src),), linux,
                        "/b", container_userns=True, make_userns=ns)
    assert ns.made[0][:2] == (((0, 100000, 65536),), ((0, 200000, 1000),))


def test_relative_source_is_from_the_bundle(tmp_path):
    (tmp_path / "vol").mkdir()
    sys = FakeSyscalls()
    open_idmapped_trees(sys, (_mount("/a", ("bind", "idmap"), source="vol"),), Linux(),
                        str(tmp_path), container_userns=False, make_userns=Namespaces())
    assert sys.calls[0] == OpenTree(str(tmp_path / "vol"), False)


def test_unsupported_file_system_names_mount_and_reason(src):
    sys = FakeSyscalls()
    sys.fail_on(MountSetattr, errno=errno.EINVAL)
    ns = Namespaces()
    with pytest.raises(MountError) as info:
        open_idmapped_trees(sys, (_mount("/a", ("bind", "idmap"), source=src),), Linux(), "/b",
                            container_userns=False, make_userns=ns)
    err = info.value
    assert (err.op, err.target, err.flags, err.errno) == ("mount_setattr", "/a", "idmap",
                                                          errno.EINVAL)
    assert "does not support idmapped mounts" in str(err)
    assert ns.closed()


def test_missing_source(tmp_path):
    with pytest.raises(MountError, match=r"open_tree .*/nope on /a \(ridmap\): No such file"):
        open_idmapped_trees(FakeSyscalls(), (_mount("/a", ("rbind", "ridmap"),
                                                    source=str(tmp_path / "nope")),),
                            Linux(), "/b", container_userns=False, make_userns=Namespaces())


def test_usage_errors():
    ns = Namespaces()
    with pytest.raises(UsageError, match="mount /t: idmap and ridmap need a bind mount"):
        open_idmapped_trees(FakeSyscalls(), (OciMount(destination="/t", type="tmpfs",
                                                      options=("idmap",), uid_mappings=MAP,
                                                      gid_mappings=MAP),),
                            Linux(), "/b", container_userns=False, make_userns=ns)
    with pytest.raises(UsageError, match="idmap without uidMappings/gidMappings needs"):
        open_idmapped_trees(FakeSyscalls(), (_mount("/a", ("bind", "idmap"), (), ()),),
                            Linux(), "/b", container_userns=False, make_userns=ns)
    assert ns.made == []


def test_close_trees_tolerates_closed_fds():
    r, w = os.pipe()
    os.close(w)
    close_trees(((0, r), (1, r)))
    with pytest.raises(OSError):
        os.fstat(r)
