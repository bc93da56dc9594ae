"""Every package's ``__init__.py`` defines ``__all__``, and every name in it
resolves (lazy ``__getattr__`` exports count)."""

from __future__ import annotations

import ast
import importlib
import os

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "migrate")


def _packages() -> list[tuple[str, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(PACKAGE_DIR):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        if "__init__.py" in filenames:
            rel = os.path.relpath(dirpath, os.path.dirname(PACKAGE_DIR))
            out.append((rel.replace(os.sep, "."), os.path.join(dirpath, "__init__.py")))
    return sorted(out)


PACKAGES = _packages()


def test_packages_are_found():
    names = {name for name, _ in PACKAGES}
    assert {"migrate", "migrate.cli", "migrate.runtime", "migrate.oci", "migrate.testing",
            "migrate.criu_rpc", "migrate.runtime.lifecycle"} <= names


def _defines_all(path: str) -> bool:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign))
                   else [])
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


@pytest.mark.parametrize("name,path", PACKAGES, ids=[n for n, _ in PACKAGES])
def test_init_defines_all(name, path):
    assert _defines_all(path), f"{path} must define __all__"


@pytest.mark.parametrize("name,path", PACKAGES, ids=[n for n, _ in PACKAGES])
def test_every_exported_name_resolves(name, path):
    module = importlib.import_module(name)
    exported = module.__all__
    assert all(isinstance(n, str) for n in exported), exported
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("name,path", PACKAGES, ids=[n for n, _ in PACKAGES])
def test_star_import(name, path):
    namespace: dict = {}
    exec(f"from {name} import *", namespace)
    assert set(importlib.import_module(name).__all__) <= set(namespace)
