"""Answers of CRIU's VERSION and FEATURE_CHECK requests."""

from __future__ import annotations

from migrate._record import record
TYPE_CHECKING = False   # typing costs ~3 ms to import; only checkers need it
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Version", "Features"]


@record
class Version:
    """``criu_version``; ``str()`` reads like ``criu --version`` (4.2.1)."""

    major_number: int
    minor_number: int
    sublevel: int | None = None
    extra: int | None = None
    gitid: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        text = f"{self.major_number}.{self.minor_number}"
        if self.sublevel is not None:
            text += f".{self.sublevel}"
        if self.extra is not None:
            text += f".{self.extra}"
        return text

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.major_number, self.minor_number, self.sublevel or 0)

    @classmethod
    def from_message(cls, msg: Any) -> "Version":
        return cls(
            major_number=msg.major_number,
            minor_number=msg.minor_number,
            sublevel=msg.sublevel if msg.has("sublevel") else None,
            extra=msg.extra if msg.has("extra") else None,
            gitid=msg.gitid if msg.has("gitid") else None,
            name=msg.name if msg.has("name") else None,
        )


@record
class Features:
    """``criu_features``: what this kernel and CRIU can do.

    ``mem_track``: soft-dirty memory tracking, needed by pre-dump (pre-copy).
    ``lazy_pages``: non-cooperative userfaultfd, needed by lazy restore
    (post-copy). ``pidfd_store``: pidfds kept between pre-dumps, to detect
    pid reuse. A feature that was not asked about is ``None``.
    """

    mem_track: bool | None = None
    lazy_pages: bool | None = None
    pidfd_store: bool | None = None

    @classmethod
    def from_message(cls, msg: Any, asked: "Features") -> "Features":
        def value(name: str) -> bool | None:
            if not getattr(asked, name):
                return None
            return bool(getattr(msg, name)) if msg.has(name) else False
        return cls(mem_track=value("mem_track"), lazy_pages=value("lazy_pages"),
                   pidfd_store=value("pidfd_store"))
