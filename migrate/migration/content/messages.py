"""Content pre-copy's CONTROL requests and their replies (the records
``migration/messages.py`` asks a strategy to define for its own hooks)::

    ContentPages {label}   + a "pages" stream  ->  PagesStored {pages, zero_pages, held}
    ContentCompact                             ->  Compacted {pages}
    ContentBuild {dir, lazy}                   ->  Built {copied, in_parent, lazy, in_memory}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from migrate.errors import ProtocolError

__all__ = ["ContentPages", "PagesStored", "ContentCompact", "Compacted", "ContentBuild",
           "Built"]


def _count(header: Mapping[str, Any], key: str, phase: str) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(phase, f"content pre-copy: {key} is {value!r}, not a count")
    return value


def _text(args: Mapping[str, Any], key: str, default: str, phase: str) -> str:
    value = args.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise ProtocolError(phase, f"content pre-copy: {key} is {value!r}, not a name")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class PagesStored:
    pages: int
    zero_pages: int
    held: int           # pages the store holds now, all processes

    def to_header(self) -> dict[str, Any]:
        return {"pages": self.pages, "zero_pages": self.zero_pages, "held": self.held}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, phase: str = "memory") -> "PagesStored":
        return cls(pages=_count(header, "pages", phase),
                   zero_pages=_count(header, "zero_pages", phase),
                   held=_count(header, "held", phase))


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentPages:
    """CONTROL ``content_pages``: a ``pages`` stream of page records
    (records.py) follows at once; the agent stores them, then replies."""

    OP: ClassVar[str] = "content_pages"
    Reply: ClassVar[type] = PagesStored

    label: str = "pages"

    def to_header(self) -> dict[str, Any]:
        return {"op": self.OP, "label": self.label}

    @classmethod
    def from_control(cls, control, *, phase: str = "memory") -> "ContentPages":
        return cls(label=_text(control.args, "label", "pages", phase))


@dataclass(frozen=True, slots=True, kw_only=True)
class Compacted:
    pages: int          # pages rewritten (0: the store was in order already)

    def to_header(self) -> dict[str, Any]:
        return {"pages": self.pages}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, phase: str = "memory") -> "Compacted":
        return cls(pages=_count(header, "pages", phase))


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentCompact:
    """CONTROL ``content_compact``: lay the store out in vaddr order (after
    the last live round, while the container runs)."""

    OP: ClassVar[str] = "content_compact"
    Reply: ClassVar[type] = Compacted

    def to_header(self) -> dict[str, Any]:
        return {"op": self.OP}

    @classmethod
    def from_control(cls, control, *, phase: str = "memory") -> "ContentCompact":
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class Built:
    copied: int         # pages copied into the final pages images (frozen)
    in_parent: int      # pages left in the store, the images' parent
    # pages the store's own files serve to a local lazy-pages daemon (the
    # restore then runs with lazy pages from these images); 0: none
    lazy: int = 0
    in_memory: bool = False     # the store was on a tmpfs, not the work directory's disk

    def to_header(self) -> dict[str, Any]:
        return {"copied": self.copied, "in_parent": self.in_parent, "lazy": self.lazy,
                "in_memory": self.in_memory}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, phase: str = "memory") -> "Built":
        return cls(copied=_count(header, "copied", phase),
                   in_parent=_count(header, "in_parent", phase),
                   # an agent of before lazy builds does not say
                   lazy=_count(header, "lazy", phase) if "lazy" in header else 0,
                   in_memory=header.get("in_memory") is True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentBuild:
    """CONTROL ``content_build``: make the images under ``dir`` (the final
    dump's, without process pages) restorable from the store; ``lazy``:
    the destination can restore with lazy pages (userfaultfd), so the
    store's files may be served to it as they are (``Built.lazy``)."""

    OP: ClassVar[str] = "content_build"
    Reply: ClassVar[type] = Built

    dir: str = "images"
    lazy: bool = False

    def to_header(self) -> dict[str, Any]:
        return {"op": self.OP, "dir": self.dir, "lazy": self.lazy}

    @classmethod
    def from_control(cls, control, *, phase: str = "memory") -> "ContentBuild":
        lazy = control.args.get("lazy", False)
        if not isinstance(lazy, bool):
            raise ProtocolError(phase, f"content pre-copy: lazy is {lazy!r}, not a boolean")
        return cls(dir=_text(control.args, "dir", "images", phase), lazy=lazy)
