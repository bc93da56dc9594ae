"""The default --root, by runc's rules."""

import pytest

from migrate.errors import UsageError
from migrate.runtime.rootdir import DEFAULT_ROOT, default_root


def test_root_ignores_xdg_runtime_dir():
    env = {"XDG_RUNTIME_DIR": "/run/user/0", "USER": "root"}
    assert default_root(env, euid=0, in_userns=False) == DEFAULT_ROOT == "/run/migrate"


def test_non_root_uses_xdg_runtime_dir():
    assert default_root({"XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000, in_userns=False) == \
        "/run/user/1000/migrate"


def test_non_root_without_xdg_runtime_dir():
    with pytest.raises(UsageError, match="XDG_RUNTIME_DIR is not set"):
        default_root({}, euid=1000, in_userns=False)


@pytest.mark.parametrize("env,want", [
    ({"XDG_RUNTIME_DIR": "/run/user/1000", "USER": "alice"}, "/run/user/1000/migrate"),
    ({"XDG_RUNTIME_DIR": "/run/user/1000", "USER": "root"}, DEFAULT_ROOT),
    ({"XDG_RUNTIME_DIR": "/run/user/1000"}, DEFAULT_ROOT),
    ({"USER": "alice"}, DEFAULT_ROOT),
])
def test_root_in_a_user_namespace(env, want):
    assert default_root(env, euid=0, in_userns=True) == want
