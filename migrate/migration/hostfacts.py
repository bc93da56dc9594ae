"""What one host can do for a migration, and the CRIU checks behind it.

``HostFacts`` is the seam between the migration code and CRIU: the
handshake announces ``criu_version()`` and ``features()``; the source
describes its CPU with ``cpuinfo_dump`` and the agent checks that
description with ``cpuinfo_check`` before anything is frozen.
``CriuHostFacts`` asks the real CRIU over RPC (VERSION, FEATURE_CHECK,
CPUINFO_DUMP, CPUINFO_CHECK); tests pass a fake
(``migrate.testing.migration.FakeHostFacts``).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["HostFacts", "CriuHostFacts", "CPUINFO_IMAGE"]

CPUINFO_IMAGE = "cpuinfo.img"


class HostFacts(Protocol):
    def criu_version(self) -> str | None:
        """"4.2.1", or None when CRIU is not usable here."""

    def features(self) -> dict[str, Any]:
        """JSON-able facts for the handshake: ``mem_track``, ``lazy_pages``,
        ``pidfd_store`` (CRIU's FEATURE_CHECK), ``lazy_dump_ok`` and
        ``why_lazy_dump_not_ok`` (pipes can grow for a lazy dump),
        ``nftables_lock`` (CRIU can lock the network with libnftables),
        ``compression``; a strategy chooser reads its own and the peer's."""

    def cpuinfo_dump(self, images_dir: str) -> None:
        """Write ``cpuinfo.img`` describing this CPU. Raises ``MigrateError``."""

    def cpuinfo_check(self, images_dir: str) -> None:
        """Raise ``MigrateError`` unless a tree dumped on the CPU described in
        ``images_dir/cpuinfo.img`` can run here."""


class CriuHostFacts:
    """Facts from the real CRIU (``criu`` binary), asked once and kept."""

    def __init__(self, criu: str = "criu", *, timeout: float = 30.0) -> None:
        self.criu = criu
        self.timeout = timeout
        self._version: str | None = None
        self._features: dict[str, Any] | None = None

    def _client(self):
        from migrate.criu_rpc import Client, SwrkOptions

        return Client(SwrkOptions(criu=self.criu, timeout=self.timeout))

    def criu_version(self) -> str | None:
        if self._version is None:
            from migrate.errors import MigrateError

            try:
                self._version = str(self._client().version())
            except MigrateError:
                return None
        return self._version

    def features(self) -> dict[str, Any]:
        if self._features is None:
            from migrate.errors import MigrateError
            from migrate.migration.transport import available_compression

            facts: dict[str, Any] = {"compression": list(available_compression())}
            # `criu check` runs beside FEATURE_CHECK: each probes the kernel
            # (~40-70 ms here), and both come before the connection.
            nft = _nftables_lock_started(self.criu)
            try:
                f = self._client().feature_check()
                facts.update(mem_track=bool(f.mem_track), lazy_pages=bool(f.lazy_pages),
                             pidfd_store=bool(f.pidfd_store))
            except MigrateError as err:
                facts["criu_error"] = str(err)
            facts.update(_lazy_dump())
            facts["nftables_lock"] = _nftables_lock_result(nft, self.timeout)
            self._features = facts
        return dict(self._features)

    def cpuinfo_dump(self, images_dir: str) -> None:
        from migrate.criu_rpc import CriuOptions

        self._client().cpuinfo_dump(CriuOptions(images_dir=images_dir, log_file="cpuinfo-dump.log"))

    def cpuinfo_check(self, images_dir: str) -> None:
        from migrate.criu_rpc import CriuOptions

        self._client().cpuinfo_check(CriuOptions(images_dir=images_dir,
                                                 log_file="cpuinfo-check.log"))


def _lazy_dump() -> dict[str, Any]:
    # Post-copy's lazy dump needs pipes larger than the default 1 MiB
    # (DESIGN.md); the strategy choice must know before anything is frozen.
    from migrate.criu_rpc import check_lazy_dump_limits
    from migrate.errors import MigrateError

    try:
        check_lazy_dump_limits()
    except MigrateError as err:
        return {"lazy_dump_ok": False, "why_lazy_dump_not_ok": str(err)}
    return {"lazy_dump_ok": True, "why_lazy_dump_not_ok": ""}


def _nftables_lock(criu: str, timeout: float) -> bool:
    """Whether this CRIU can lock the network with nftables (libnftables,
    in-process), which unlocks in milliseconds where the iptables method
    runs iptables-restore twice while the container is frozen (~0.1 s
    here). Not in FEATURE_CHECK: asked of ``criu check``."""
    return _nftables_lock_result(_nftables_lock_started(criu), timeout)


def _nftables_lock_started(criu: str):
    """``criu check --feature network_lock_nftables`` started (None: it cannot)."""
    import subprocess

    try:
        return subprocess.Popen([criu, "check", "--feature", "network_lock_nftables"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None


def _nftables_lock_result(proc, timeout: float) -> bool:
    import threading

    if proc is None:
        return False
    # A blocking wait with a watchdog: wait(timeout=) polls with sleeps of
    # up to 50 ms, which would round the answer up.
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        return proc.wait() == 0
    finally:
        watchdog.cancel()
