"""The public names of migrate.oci, and what importing it costs."""

import subprocess
import sys

import migrate.oci as oci

# The names the runtime codes against; removing one breaks it.
REQUIRED = {
    "load_config", "parse_config", "parse_process", "spec_to_dict", "default_spec",
    "Spec", "Root", "Process", "User", "Capabilities", "Rlimit", "Mount", "IdMapping",
    "Hook", "Hooks", "Linux", "Namespace", "TimeOffset", "Device", "Resources", "Memory",
    "Cpu", "Pids", "BlockIO", "DeviceRule", "ConsoleSize",
    "CAPABILITIES", "CAP_NUMBERS", "RLIMITS", "NAMESPACE_TYPES",
}


def test_required_names_are_exported():
    assert REQUIRED <= set(oci.__all__)


def test_every_exported_name_resolves():
    for name in oci.__all__:
        assert getattr(oci, name) is not None, name
    assert len(set(oci.__all__)) == len(oci.__all__)


def test_unknown_name_is_an_attribute_error():
    import pytest
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        oci.nope  # noqa: B018


def test_star_import():
    namespace: dict = {}
    exec("from migrate.oci import *", namespace)
    assert "parse_config" in namespace and "Spec" in namespace


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         f"import sys; sys.path[:0] = {sys.path!r}; {code}; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_importing_the_package_defines_no_models():
    # Commands that never read a config should not pay for ~30 dataclasses.
    mods = _modules_after("import migrate.oci")
    assert "migrate.oci.model" not in mods
    assert "dataclasses" not in mods


def test_loading_a_config_imports_only_light_modules():
    mods = _modules_after("from migrate.oci import load_config, default_spec, Spec")
    assert "migrate.oci.model" in mods
    for heavy in ("typing", "click", "rich", "google.protobuf", "cffi", "pyroute2", "logging"):
        assert heavy not in mods, heavy
