"""The JSON bodies of the control messages the source and the agent share.

Each has ``to_header()`` (what the sender puts in the frame) and
``from_header()`` (what the receiver accepts: unknown keys are kept in
``extra`` for strategies; a wrong type raises ``ProtocolError``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import ProtocolError

__all__ = ["PrepareRequest", "SharedMarker", "Restored", "ROOTFS_MODES"]

ROOTFS_MODES = ("shared", "copy")


def _int(header: Mapping[str, Any], key: str, phase: str) -> int:
    value = header.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(phase, f"{key} is not a byte count: {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedMarker:
    """A file the source just wrote under a path it says the destination
    shares (``--rootfs shared``): the agent must read the same content at
    the same path, or the path is not really shared."""

    path: str
    content: str

    def to_header(self) -> dict[str, str]:
        return {"path": self.path, "content": self.content}


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareRequest:
    """PREPARE: what the source is about to send, for the agent's checks.

    ``images_size`` and ``rootfs_size`` are the bytes the destination must
    have room for; ``cpuinfo``: a ``cpuinfo.img`` file stream follows.
    """

    container_id: str
    strategy: str = ""
    rootfs: str = "shared"
    images_size: int = 0
    rootfs_size: int = 0
    cpuinfo: bool = False
    shared_markers: tuple[SharedMarker, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_header(self) -> dict[str, Any]:
        return {**self.extra, "container_id": self.container_id, "strategy": self.strategy,
                "rootfs": self.rootfs, "images_size": self.images_size,
                "rootfs_size": self.rootfs_size, "cpuinfo": self.cpuinfo,
                "shared_markers": [m.to_header() for m in self.shared_markers]}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, phase: str = "prepare") -> "PrepareRequest":
        cid = header.get("container_id")
        if not isinstance(cid, str) or not cid:
            raise ProtocolError(phase, "PREPARE names no container")
        rootfs = header.get("rootfs", "shared")
        if rootfs not in ROOTFS_MODES:
            raise ProtocolError(phase, f"unknown rootfs mode {rootfs!r}")
        markers = header.get("shared_markers", [])
        if not isinstance(markers, list) or not all(
                isinstance(m, dict) and isinstance(m.get("path"), str)
                and isinstance(m.get("content"), str) for m in markers):
            raise ProtocolError(phase, "PREPARE shared_markers are malformed")
        known = {"container_id", "strategy", "rootfs", "images_size", "rootfs_size", "cpuinfo",
                 "shared_markers"}
        return cls(container_id=cid, strategy=str(header.get("strategy", "")), rootfs=rootfs,
                   images_size=_int(header, "images_size", phase),
                   rootfs_size=_int(header, "rootfs_size", phase),
                   cpuinfo=bool(header.get("cpuinfo", False)),
                   shared_markers=tuple(SharedMarker(path=m["path"], content=m["content"])
                                        for m in markers),
                   extra={k: v for k, v in header.items() if k not in known})


@dataclass(frozen=True, slots=True, kw_only=True)
class Restored:
    """What a ``restore_fn`` returns to the agent.

    ``info`` goes back to the source in RESTORED (JSON: pid, timings ...).
    ``commit`` runs when the source says DONE (e.g. resume a container that
    was restored stopped); ``abort`` when the source aborts or is lost
    before that (kill and delete what was restored). A plain dict returned
    by a ``restore_fn`` means ``Restored(info=that_dict)``.
    """

    info: dict[str, Any] = field(default_factory=dict)
    commit: Callable[[], None] | None = None
    abort: Callable[[], None] | None = None
