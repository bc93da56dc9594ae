"""Start-up-cheap stand-ins for a few stdlib helpers, for the hot path (issue 16).

`run` of `true` must stay near runc's ~30 ms, and the interpreter alone is
~10 ms. Measured here (Python 3.11, 2 cores, medians of 30 interleaved
starts), importing ``json``, ``contextlib``, ``socket``, ``signal``,
``selectors``, ``getopt`` and the ``re``/``enum``/``functools``/
``collections`` family they pull in costs ~15-20 ms of CPU per command,
mostly module bodies that build enums and compile regexes. What the hot
path needs from them is small:

- ``loads``/``dumps``: JSON through the stdlib's own C accelerator
  (``_json``: the same scanner and encoder ``json`` uses); anything the
  fast path does not handle (an error to report, ``indent``, bytes that are
  not UTF-8) goes to ``json`` itself, so results and error messages are
  the stdlib's.
- ``suppress`` and ``contextmanager``: contextlib's two, same semantics.
- ``in_background``: a function run in a thread of its own, its result or
  error handed back later (``_thread``, not ``threading``: ~1 ms of imports).

The sockets and signals come from ``_socket`` and ``_signal`` (the C
modules under ``socket`` and ``signal``, already loaded by the
interpreter); ``tests/unit/test_import_budget.py`` keeps the heavy
modules out of the hot commands.
"""

from __future__ import annotations

__all__ = ["loads", "dumps", "suppress", "contextmanager", "lazy_exports", "in_background"]

try:
    import _json
except ImportError:     # an interpreter without the accelerator: use json itself
    _json = None

_WS = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """What ``_json.make_scanner`` reads from a JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _json.make_scanner(_Context()) if _json is not None else None


def loads(data: str | bytes | bytearray):
    """``json.loads``: same values, same exceptions (json.JSONDecodeError)."""
    if _scan is not None:
        try:
            text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and not text.startswith("\ufeff"):
            start = len(text) - len(text.lstrip(_WS))
            try:
                value, end = _scan(text, start)
            except StopIteration:
                pass
            except ValueError:      # JSONDecodeError: let json word it
                pass
            else:
                if end == len(text) or not text[end:].strip(_WS):
                    return value
    import json

    return json.loads(data)


def _default(obj):
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


def dumps(obj, *, sort_keys: bool = False, indent: int | None = None) -> str:
    """``json.dumps`` with its default separators (or ``indent``)."""
    if _json is None or indent is not None:
        import json

        return json.dumps(obj, sort_keys=sort_keys, indent=indent)
    encode = _json.make_encoder({}, _default, _json.encode_basestring_ascii, None,
                                ": ", ", ", sort_keys, False, True)
    return "".join(encode(obj, 0))


class suppress:
    """``contextlib.suppress``."""

    __slots__ = ("_exceptions",)

    def __init__(self, *exceptions):
        self._exceptions = exceptions

    def __enter__(self):
        return None

    def __exit__(self, exctype, excinst, exctb):
        return exctype is not None and issubclass(exctype, self._exceptions)


class _GeneratorContext:
    __slots__ = ("_gen",)

    def __init__(self, gen):
        self._gen = gen

    def __enter__(self):
        try:
            return next(self._gen)
        except StopIteration:
            raise RuntimeError("generator didn't yield") from None

    def __exit__(self, typ, value, tb):
        if typ is None:
            try:
                next(self._gen)
            except StopIteration:
                return False
            raise RuntimeError("generator didn't stop")
        if value is None:
            value = typ()
        try:
            self._gen.throw(value)
        except StopIteration as exc:
            return exc is not value
        except BaseException as exc:
            if exc is value:
                return False
            raise
        raise RuntimeError("generator didn't stop after throw()")


def contextmanager(func):
    """``contextlib.contextmanager`` for the plain ``try: yield / finally`` case."""

    def helper(*args, **kwargs):
        return _GeneratorContext(func(*args, **kwargs))

    helper.__name__ = func.__name__
    helper.__qualname__ = func.__qualname__
    helper.__doc__ = func.__doc__
    helper.__wrapped__ = func
    return helper


def lazy_exports(package: str, where: dict[str, str], namespace: dict, exported):
    """A package's ``__getattr__`` and ``__dir__`` for names (``where``: name
    -> submodule) imported only when first used; each is then kept in
    ``namespace`` (the package's globals), so later look-ups skip the hook."""

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        # __import__, not importlib (its import costs start-up time): with a
        # fromlist it returns the submodule itself.
        value = getattr(__import__(f"{package}.{module}", fromlist=[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exported})

    return __getattr__, __dir__


def in_background(fn):
    """``fn()`` started in a thread of its own; returns a function that
    waits for its result (at once if it is there), re-raising what it raised."""
    import _thread

    box: list = []
    done = _thread.allocate_lock()
    done.acquire()

    def run() -> None:
        try:
            box.append((fn(), None))
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            box.append((None, err))
        finally:
            done.release()

    _thread.start_new_thread(run, ())

    def answer():
        done.acquire()
        done.release()
        result, err = box[0]
        if err is not None:
            raise err
        return result

    return answer
