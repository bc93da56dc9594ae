"""Helpers of the migration unit tests: a thread runner, handshake configs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from migrate.migration._sockets import Timeouts
from migrate.migration.protocol import CriuPolicy, HandshakeConfig

FAST = Timeouts(connect=5, io=5, wait=5)


class Background:
    """Run ``fn`` in a thread; ``result()`` returns its value or raises its error."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn()
            except BaseException as err:  # noqa: BLE001 - handed to the test
                self._error = err

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self, timeout: float = 10) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "background call did not finish"
        if self._error is not None:
            raise self._error
        return self._value

    def error(self, timeout: float = 10) -> BaseException | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "background call did not finish"
        return self._error


def config(**kw: Any) -> HandshakeConfig:
    base = dict(token=b"s3cret", host="h", migrate_version="0.1.0", criu_version="4.2.1",
                features={"lazy_pages": True}, compression=("zstd",),
                criu_policy=CriuPolicy.NOT_OLDER)
    base.update(kw)
    return HandshakeConfig(**base)
