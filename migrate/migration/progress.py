"""How a migration tells people how far it is, without printing.

The library calls a ``Progress``; it never prints. ``SilentProgress`` is the
default; the CLI passes ``RichProgress`` (bars on stderr, one per phase and
per pre-copy iteration, with bytes, rate and pages).

    progress.phase("rootfs", total=bytes_or_None)   a new bar
    progress.advance(n)                              n more bytes on it
    progress.iteration(i, pages)                     bar of pre-dump round i
    progress.done()                                  finish and stop drawing

Calls may come from any thread.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Progress", "SilentProgress", "RichProgress"]


class Progress(Protocol):
    def phase(self, name: str, total: int | None = None) -> None: ...

    def advance(self, n: int) -> None: ...

    def iteration(self, i: int, pages: int) -> None: ...

    def done(self) -> None: ...


class SilentProgress:
    """Reports nothing."""

    def phase(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def iteration(self, i: int, pages: int) -> None:
        pass

    def done(self) -> None:
        pass


class RichProgress:
    """Rich progress bars; ``console`` defaults to one on stderr. Imports
    rich when created (the CLI only creates it when people are watching)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress as RichBars,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self._bars = RichBars(TextColumn("{task.description:<14}"), BarColumn(),
                              DownloadColumn(binary_units=True), TransferSpeedColumn(),
                              TextColumn("{task.fields[pages]}"), TimeElapsedColumn(),
                              console=console or Console(stderr=True))
        self._task: Any = None
        self._running = False

    def _start(self) -> None:
        if not self._running:
            self._bars.start()
            self._running = True

    def _close_task(self) -> None:
        if self._task is not None:
            task = next(t for t in self._bars.tasks if t.id == self._task)
            # A phase without a known total shows as complete when it ends.
            self._bars.update(self._task, total=task.completed)
            self._bars.stop_task(self._task)
            self._task = None

    def phase(self, name: str, total: int | None = None) -> None:
        self._start()
        self._close_task()
        self._task = self._bars.add_task(name, total=total, pages="")

    def advance(self, n: int) -> None:
        if self._task is None:
            self.phase("transfer")
        self._bars.advance(self._task, n)

    def iteration(self, i: int, pages: int) -> None:
        self._start()
        self._close_task()
        self._task = self._bars.add_task(f"iteration {i}", total=None, pages=f"{pages} pages")

    def done(self) -> None:
        self._close_task()
        if self._running:
            self._bars.stop()
            self._running = False
