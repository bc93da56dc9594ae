"""Load pycriu's generated ``rpc_pb2`` without the rest of pycriu.

``import pycriu.rpc_pb2`` runs ``pycriu/__init__.py``, which also builds every
image message (``pycriu.images``): about 125 ms here, against about 35 ms for
protobuf plus ``rpc_pb2`` alone. ``rpc_pb2`` imports nothing from pycriu, so
it is loaded from its file under its own name; a later ``import pycriu``
finds it in ``sys.modules`` and does not register ``rpc.proto`` twice.
Import this module only inside functions: it imports protobuf.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from migrate.errors import UnsupportedError

_NAME = "pycriu.rpc_pb2"


def _load() -> ModuleType:
    module = sys.modules.get(_NAME)
    if module is not None:
        return module
    package = importlib.util.find_spec("pycriu")  # finds, does not execute
    if package is None or not package.submodule_search_locations:
        raise UnsupportedError("pycriu is not installed (run scripts/install-deps.sh)")
    for location in package.submodule_search_locations:
        spec = importlib.util.spec_from_file_location(_NAME, f"{location}/rpc_pb2.py")
        if spec is None or spec.loader is None:
            continue
        try:
            module = importlib.util.module_from_spec(spec)
            sys.modules[_NAME] = module
            spec.loader.exec_module(module)
        except FileNotFoundError:
            sys.modules.pop(_NAME, None)
            continue
        except BaseException:
            sys.modules.pop(_NAME, None)
            raise
        return module
    raise UnsupportedError("pycriu has no rpc_pb2 module (its Makefile was not run)")


rpc = _load()
