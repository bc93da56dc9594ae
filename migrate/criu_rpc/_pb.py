"""Load pycriu's generated modules one at a time, without the rest of pycriu.

``import pycriu.rpc_pb2`` runs ``pycriu/__init__.py``, which also builds every
image message (``pycriu.images``): about 125 ms here, against about 35 ms for
protobuf plus ``rpc_pb2`` alone. ``rpc_pb2`` imports nothing from pycriu, so
it is loaded from its file under its own name; a later ``import pycriu``
finds it in ``sys.modules`` and does not register ``rpc.proto`` twice.

Image messages (``image_pb``) are loaded the same way, under the names
pycriu gives them: ``pycriu.images.mnt_pb2`` for the module asked for, and
the bare names (``opts_pb2``) for what it imports, as protoc wrote those
imports and pycriu.images puts its directory on ``sys.path`` to satisfy.
Import this module only inside functions: it imports protobuf.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from migrate.errors import UnsupportedError

_NAME = "pycriu.rpc_pb2"


def _locations() -> list[str]:
    package = importlib.util.find_spec("pycriu")  # finds, does not execute
    if package is None or not package.submodule_search_locations:
        raise UnsupportedError("pycriu is not installed (run scripts/install-deps.sh)")
    return list(package.submodule_search_locations)


def _exec(name: str, path: str) -> ModuleType | None:
    """The module in file ``path`` as ``sys.modules[name]``; None when the
    file does not exist."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except FileNotFoundError:
        sys.modules.pop(name, None)
        return None
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _load() -> ModuleType:
    module = sys.modules.get(_NAME)
    if module is not None:
        return module
    for location in _locations():
        module = _exec(_NAME, f"{location}/rpc_pb2.py")
        if module is not None:
            return module
    raise UnsupportedError("pycriu has no rpc_pb2 module (its Makefile was not run)")


def image_pb(stem: str) -> ModuleType:
    """pycriu's generated module for CRIU's ``images/<stem>.proto`` ("mnt"),
    with the modules it imports and nothing else of pycriu.

    Raises UnsupportedError when pycriu or that module is missing.
    """
    name = f"pycriu.images.{stem}_pb2"
    module = sys.modules.get(name)
    if module is not None:
        return module
    for location in _locations():
        module = _exec_with_deps(name, f"{location}/images", stem)
        if module is not None:
            return module
    raise UnsupportedError(f"pycriu has no images/{stem}_pb2 module (its Makefile was not run)")


def _exec_with_deps(name: str, directory: str, stem: str) -> ModuleType | None:
    """``_exec`` of ``directory/<stem>_pb2.py``; a dependency missing from
    sys.modules stops the module at its import line, before it registers
    anything in protobuf's pool: load that one (the same way), then retry."""
    while True:
        try:
            return _exec(name, f"{directory}/{stem}_pb2.py")
        except ModuleNotFoundError as err:
            dep = err.name or ""
            if not dep.endswith("_pb2") or "." in dep or dep in sys.modules or \
                    _exec_with_deps(dep, directory, dep[:-4]) is None:
                raise


rpc = _load()
