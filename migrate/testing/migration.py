"""Doubles for the migration package: a host that answers CRIU questions
without CRIU, and a restore function that records what it was asked.

``FakeHostFacts`` writes a ``cpuinfo.img`` that names a CPU model, and its
check accepts the models in ``runs``; ``FakeRestore`` can fail its Nth call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import CriuError, MigrateError
from migrate.migration.hostfacts import CPUINFO_IMAGE
from migrate.migration.messages import RestoreRequest, Restored

__all__ = ["FakeHostFacts", "FakeRestore"]


@dataclass
class FakeHostFacts:
    criu: str | None = "4.2.1"
    facts: dict[str, Any] = field(default_factory=lambda: {"mem_track": False, "lazy_pages": True})
    cpu: str = "cpu-a"
    runs: frozenset[str] = frozenset({"cpu-a"})
    calls: list[tuple[str, str]] = field(default_factory=list)

    def criu_version(self) -> str | None:
        return self.criu

    def features(self) -> dict[str, Any]:
        return dict(self.facts)

    def cpuinfo_dump(self, images_dir: str) -> None:
        self.calls.append(("cpuinfo_dump", images_dir))
        with open(os.path.join(images_dir, CPUINFO_IMAGE), "w") as f:
            f.write(self.cpu)

    def cpuinfo_check(self, images_dir: str) -> None:
        self.calls.append(("cpuinfo_check", images_dir))
        with open(os.path.join(images_dir, CPUINFO_IMAGE)) as f:
            model = f.read()
        if model not in self.runs:
            raise CriuError("cpuinfo-check", "cpu: CPU instruction capabilities do not match "
                            f"run time (image from {model!r})")


@dataclass
class FakeRestore:
    """``restore_fn`` for the agent: records (workdir, request, listing of
    workdir); raises ``error`` on the calls numbered in ``fail_on`` (1-based)."""

    fail_on: frozenset[int] = frozenset()
    error: MigrateError = field(default_factory=lambda: CriuError("restore", "fake restore failed"))
    calls: list[tuple[str, RestoreRequest, list[str]]] = field(default_factory=list)
    committed: int = 0
    aborted: int = 0

    def __call__(self, workdir: str, request: RestoreRequest) -> Restored:
        listing = sorted(os.path.relpath(os.path.join(d, n), workdir)
                         for d, dirs, files in os.walk(workdir) for n in dirs + files)
        self.calls.append((workdir, request, listing))
        if len(self.calls) in self.fail_on:
            raise self.error
        return Restored(info={"pid": 4242, "call": len(self.calls)},
                        commit=self._commit, abort=self._abort)

    def _commit(self) -> None:
        self.committed += 1

    def _abort(self) -> None:
        self.aborted += 1
