"""Imports follow DESIGN.md's arrow, and only the CLI talks to the terminal.

    cli -> checkpoint | migration -> runtime, criu_rpc -> oci

Every module may import the base: the ``migrate`` package itself,
``migrate.errors`` and private top-level helpers (``migrate._record``). Two
readings of the arrow that this test pins down: ``migration`` may use
``checkpoint`` (a pipeline checkpoints containers), never the reverse; and
``runtime`` and ``criu_rpc`` are siblings that do not import each other
(``checkpoint`` joins them). ``migrate.testing`` may import anything below
the CLI, and nothing in ``migrate`` imports it.

Imports inside functions count for the arrow (a lazy import is still a
dependency); the click/rich rules are about what a module costs to import.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "migrate")

BASE = "base"
RANK = {BASE: 0, "oci": 1, "runtime": 2, "criu_rpc": 2, "checkpoint": 3, "migration": 3,
        "cli": 4}
EXTRA_ALLOWED = {("migration", "checkpoint")}
TESTING = "testing"


def _modules() -> dict[str, str]:
    """module name -> file path, for every .py under migrate/."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(PACKAGE_DIR):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for fn in filenames:
            if not fn.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, fn), os.path.dirname(PACKAGE_DIR))
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = os.path.join(dirpath, fn)
    return out


MODULES = _modules()


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return BASE
    top = parts[1]
    if top == "__main__":
        return "cli"
    if top == TESTING:
        return TESTING
    if top in RANK:
        return top
    if top == "errors" or top.startswith("_"):
        return BASE
    raise AssertionError(f"{module}: unknown layer {top!r}: add it to tests/unit/test_layering.py")


def may_import(src: str, dst: str) -> bool:
    if dst == TESTING:
        return src == TESTING
    if src == TESTING:
        return dst != "cli"
    if src == dst or dst == BASE or (src, dst) in EXTRA_ALLOWED:
        return True
    return RANK[dst] < RANK[src]


@dataclass(frozen=True)
class Import:
    module: str         # the importing module
    target: str         # the imported module (absolute)
    line: int
    top_level: bool     # runs when the module is imported


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node, top: bool):
    """Yield (node, top_level) for every node; function bodies are not top level,
    nor is the body of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield child, top
            yield from _walk(child, False)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            yield child, top
            for stmt in child.body:
                yield stmt, False
                yield from _walk(stmt, False)
            for stmt in child.orelse:
                yield stmt, top
                yield from _walk(stmt, top)
        else:
            yield child, top
            yield from _walk(child, top)


def _parse(module: str):
    with open(MODULES[module]) as f:
        return ast.parse(f.read(), MODULES[module])


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[module].endswith("__init__.py")
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str):
    tree = _parse(module)
    for node, top in _walk(tree, True):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno, top)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield Import(module, sub if sub in MODULES else base, node.lineno, top)


ALL_IMPORTS = [imp for m in sorted(MODULES) for imp in imports_of(m)]


def _where(imp: Import) -> str:
    return f"{os.path.relpath(MODULES[imp.module], os.path.dirname(PACKAGE_DIR))}:{imp.line}"


def test_the_tree_is_found():
    assert {"migrate", "migrate.errors", "migrate.cli.main", "migrate.runtime.state",
            "migrate.oci"} <= set(MODULES)
    for module in MODULES:
        layer_of(module)


def test_imports_follow_the_arrow():
    bad = []
    for imp in ALL_IMPORTS:
        if not (imp.target == "migrate" or imp.target.startswith("migrate.")):
            continue
        src, dst = layer_of(imp.module), layer_of(imp.target)
        if not may_import(src, dst):
            bad.append(f"{_where(imp)}: {src} imports {imp.target} ({dst})")
    assert not bad, "imports against cli -> checkpoint|migration -> runtime, criu_rpc -> oci:\n" \
        + "\n".join(bad)


@pytest.mark.parametrize("src,dst,ok", [
    ("cli", "runtime", True), ("cli", "oci", True), ("migration", "checkpoint", True),
    ("checkpoint", "migration", False), ("runtime", "criu_rpc", False),
    ("criu_rpc", "runtime", False), ("oci", "runtime", False), ("runtime", "cli", False),
    ("oci", BASE, True), (BASE, "oci", False), ("runtime", TESTING, False),
    (TESTING, "runtime", True), (TESTING, "cli", False),
])
def test_the_rule_itself(src, dst, ok):
    assert may_import(src, dst) is ok


def _third_party(imp: Import, names: tuple[str, ...]) -> bool:
    return any(imp.target == n or imp.target.startswith(n + ".") for n in names)


def test_nothing_below_cli_imports_click_or_rich_at_top_level():
    bad = [f"{_where(imp)}: {imp.target}" for imp in ALL_IMPORTS
           if imp.top_level and layer_of(imp.module) != "cli"
           and _third_party(imp, ("click", "rich"))]
    assert not bad, "import these inside the functions that need them:\n" + "\n".join(bad)


def test_click_only_in_cli_and_rich_only_in_cli_and_migration():
    bad = []
    for imp in ALL_IMPORTS:
        layer = layer_of(imp.module)
        if _third_party(imp, ("click",)) and layer != "cli":
            bad.append(f"{_where(imp)}: click in {layer}")
        if _third_party(imp, ("rich",)) and layer not in ("cli", "migration"):
            bad.append(f"{_where(imp)}: rich in {layer}")
    assert not bad, "\n".join(bad)


def _terminal_calls(module: str):
    for node, _top in _walk(_parse(module), True):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in ("print", "exit", "quit"):
                yield node.lineno, f"{f.id}()"
            elif (isinstance(f, ast.Attribute) and f.attr == "exit"
                  and isinstance(f.value, ast.Name) and f.value.id == "sys"):
                yield node.lineno, "sys.exit()"
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(
                a.name == "exit" for a in node.names):
            yield node.lineno, "from sys import exit"
        elif isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "SystemExit":
                yield node.lineno, "raise SystemExit"


def test_nothing_below_cli_prints_or_exits():
    bad = []
    for module in sorted(MODULES):
        if layer_of(module) == "cli":
            continue
        for line, what in _terminal_calls(module):
            bad.append(f"{os.path.relpath(MODULES[module], os.path.dirname(PACKAGE_DIR))}"
                       f":{line}: {what}")
    assert not bad, "below cli, raise a MigrateError instead:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    src = tmp_path / "x.py"
    src.write_text("import os\n"
                   "TYPE_CHECKING = False\n"
                   "if TYPE_CHECKING:\n    import rich\n"
                   "def f():\n    import click\n    print('x')\n"
                   "from . import errors\n")
    monkeypatch.setitem(MODULES, "migrate.runtime.x", str(src))
    got = {(i.target, i.top_level) for i in imports_of("migrate.runtime.x")}
    assert got == {("os", True), ("rich", False), ("click", False),
                   ("migrate.runtime", True)}
    assert [what for _, what in _terminal_calls("migrate.runtime.x")] == ["print()"]


def _private_imports():
    """(importing module, module imported from, name, line) for every
    ``from X import _name`` (dunders aside)."""
    for module in sorted(MODULES):
        for node, _top in _walk(_parse(module), True):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(module, node)
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        yield module, base, alias.name, node.lineno


def test_no_private_name_crosses_a_package():
    """``_name`` is private to its package (STYLE.md): a module of another
    package must not import it. Private top-level modules (``migrate._record``)
    are the shared base and may be imported by anyone."""
    bad = []
    for module, base, name, line in _private_imports():
        target = f"{base}.{name}" if f"{base}.{name}" in MODULES else base
        if layer_of(target) == BASE:
            continue
        if layer_of(target) != layer_of(module):
            rel = os.path.relpath(MODULES[module], os.path.dirname(PACKAGE_DIR))
            bad.append(f"{rel}:{line}: {name} from {base}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            comp = []
            while True:
                top = stack.pop()
                comp.append(top)
                if top == node:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_even_through_lazy_imports():
    # A lazy import hides a cycle from the interpreter, not from the reader:
    # two modules that need each other are one module in two files.
    edges: dict[str, set[str]] = {}
    for imp in ALL_IMPORTS:
        if imp.target in MODULES and imp.target != imp.module:
            edges.setdefault(imp.module, set()).add(imp.target)
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
