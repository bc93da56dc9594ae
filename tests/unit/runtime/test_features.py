"""`features` output that the mount code backs."""

from migrate.runtime.features import runtime_features
from migrate.runtime.mounts import parse_options


def test_every_listed_mount_option_is_understood():
    words = runtime_features()["mountOptions"]
    assert {"idmap", "ridmap", "rro", "rnoatime", "nosymfollow"} <= set(words)
    for word in words:
        # none of them is passed on to the file system as data
        assert parse_options([word]).data == "", word


def test_idmap_extension_is_enabled():
    assert runtime_features()["linux"]["mountExtensions"] == {"idmap": {"enabled": True}}
