"""The JSON bodies of the control messages the source and the agent share.

Each has ``to_header()`` (what the sender puts in the frame) and
``from_header()`` (what the receiver accepts; a wrong type raises
``ProtocolError``)::

    PREPARE   PrepareRequest     source -> agent   what is coming, for the checks
    READY     Ready              agent -> source   checks passed
    CONTROL   Control            source -> agent   a strategy's request to a hook
    REPLY     (the request's ``Reply``)            its answer
    RESTORE   RestoreRequest     source -> agent   restore now
    RESTORED  Restored           agent -> source   restored (held until DONE)

A strategy's CONTROL requests are records with ``OP`` (the agent's hook)
and ``Reply`` (the answer's record): ``PageServerStart`` and
``PageServerWait`` here; a strategy module may define its own the same way.
Unknown keys of PREPARE and RESTORE are kept in ``extra`` for strategies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from migrate.errors import ProtocolError

__all__ = ["PrepareRequest", "SharedMarker", "Ready", "Control", "PageServerStart",
           "PageServerAddress", "PageServerWait", "PageServerExit", "LazySource",
           "RestoreRequest", "RestorePrepare", "RestorePrepared", "Restored", "ROOTFS_MODES"]

ROOTFS_MODES = ("shared", "copy")


def _int(header: Mapping[str, Any], key: str, phase: str) -> int:
    value = header.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(phase, f"{key} is not a byte count: {value!r}")
    return value


def _port(header: Mapping[str, Any], what: str, phase: str) -> int:
    value = header.get("port")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ProtocolError(phase, f"{what} port is not a port number: {value!r}")
    return value


def _str(header: Mapping[str, Any], key: str, what: str, phase: str, *,
         optional: bool = False) -> str | None:
    value = header.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError(phase, f"{what} has no {key}: {value!r}")
    return value


def _secret(header: Mapping[str, Any], what: str, phase: str, *,
            optional: bool = False) -> str | None:
    """A stream secret (criu_rpc/page_stream.py): 64 hex digits."""
    value = _str(header, "secret", what, phase, optional=optional)
    if value is not None:
        try:
            ok = len(bytes.fromhex(value)) == 32
        except ValueError:
            ok = False
        if not ok:
            raise ProtocolError(phase, f"{what} has a malformed secret")
    return value


def _flag(header: Mapping[str, Any], key: str, what: str, phase: str,
          default: bool = False) -> bool:
    value = header.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(phase, f"{what} {key} is not true or false: {value!r}")
    return value


def _object(header: Mapping[str, Any], key: str, what: str, phase: str) -> dict[str, Any]:
    value = header.get(key, {})
    if not isinstance(value, dict):
        raise ProtocolError(phase, f"{what} {key} is not a JSON object")
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
class Ready:
    """READY: the agent's checks passed. ``workdir`` is the name of the
    migration's work directory there, ``free_bytes`` the room it has."""

    workdir: str
    free_bytes: int = 0

    def to_header(self) -> dict[str, Any]:
        return {"workdir": self.workdir, "free_bytes": self.free_bytes}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, phase: str = "checks") -> "Ready":
        return cls(workdir=_str(header, "workdir", "READY", phase),
                   free_bytes=_int(header, "free_bytes", phase))


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    """CONTROL as the agent reads it: ``op`` names the hook (the agent's
    ``controls``), ``args`` the rest, which the hook decodes with its own
    request record (``PageServerStart.from_control``...)."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_header(self) -> dict[str, Any]:
        return {**self.args, "op": self.op}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, phase: str = "control") -> "Control":
        op = _str(header, "op", "CONTROL", phase)
        return cls(op=op, args={k: v for k, v in header.items() if k != "op"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PageServerAddress:
    """REPLY to ``PageServerStart``: where the page server listens."""

    address: str
    port: int

    def to_header(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *,
                    phase: str = "memory") -> "PageServerAddress":
        return cls(address=_str(header, "address", "the page server", phase),
                   port=_port(header, "the page server", phase))


@dataclass(frozen=True, slots=True, kw_only=True)
class PageServerStart:
    """CONTROL ``page_server``: start a CRIU page server that writes the
    pages it receives under ``dir`` (a path in the work directory), with
    ``parent`` (relative to it) as the parent images of a pre-dump chain."""

    OP: ClassVar[str] = "page_server"
    Reply: ClassVar[type] = PageServerAddress

    dir: str = "images"
    parent: str | None = None
    # The stream secret (criu_rpc/page_stream.py): the agent listens and
    # hands CRIU the socket of the peer that sends it first.
    secret: str | None = None

    def to_header(self) -> dict[str, Any]:
        return {"op": self.OP, "dir": self.dir, "parent": self.parent, "secret": self.secret}

    @classmethod
    def from_control(cls, control: Control, *, phase: str = "memory") -> "PageServerStart":
        return cls(dir=_str(control.args, "dir", "page_server", phase, optional=True) or "images",
                   parent=_str(control.args, "parent", "page_server", phase, optional=True),
                   secret=_secret(control.args, "page_server", phase))


@dataclass(frozen=True, slots=True, kw_only=True)
class PageServerExit:
    """REPLY to ``PageServerWait``: how the page server exited (0)."""

    exit: int

    def to_header(self) -> dict[str, Any]:
        return {"exit": self.exit}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, phase: str = "memory") -> "PageServerExit":
        return cls(exit=_int(header, "exit", phase))


@dataclass(frozen=True, slots=True, kw_only=True)
class PageServerWait:
    """CONTROL ``page_server_wait``: wait until the page server started
    last has received everything (it exits after one dump)."""

    OP: ClassVar[str] = "page_server_wait"
    Reply: ClassVar[type] = PageServerExit

    def to_header(self) -> dict[str, Any]:
        return {"op": self.OP}

    @classmethod
    def from_control(cls, control: Control, *, phase: str = "memory") -> "PageServerWait":
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class LazySource:
    """Where the destination's lazy-pages daemon pulls pages from (post-copy)."""

    address: str
    port: int
    # The stream secret the destination opens the connection with
    # (criu_rpc/page_stream.py): the source's relay takes no other peer.
    secret: str

    def to_header(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port, "secret": self.secret}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, phase: str = "restore") -> "LazySource":
        return cls(address=_str(header, "address", "RESTORE lazy", phase),
                   port=_port(header, "RESTORE lazy", phase),
                   secret=_secret(header, "RESTORE lazy", phase))


# ``empty_ns`` on the wire -> CRIU's name; "network" is what sources send
# (and agents of before the flags were typed understand).
_EMPTY_NS = {"net": "net", "network": "net"}


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreRequest:
    """RESTORE: restore the container now, from what was sent.

    ``bundle`` is the shared bundle path (``None``: the copy sent under
    ``bundle/``); ``lazy``: post-copy, pages come from there;
    ``lazy_local``: pages come lazily from the images sent (a lazy-pages
    daemon of the destination serves them: content pre-copy's store);
    ``empty_ns``: CRIU's names of namespaces to create empty instead of
    restoring (``{"net"}``); ``leave_stopped``: restore it stopped, to be
    resumed on DONE.
    """

    container_id: str
    bundle: str | None = None
    lazy: LazySource | None = None
    lazy_local: bool = False
    tcp_established: bool = False
    file_locks: bool = False
    ext_unix_sk: bool = False
    leave_stopped: bool = True
    empty_ns: frozenset[str] = frozenset()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_header(self) -> dict[str, Any]:
        request = {**self.extra, "container_id": self.container_id, "bundle": self.bundle,
                   "lazy": self.lazy.to_header() if self.lazy else None,
                   "tcp_established": self.tcp_established, "file_locks": self.file_locks,
                   "ext_unix_sk": self.ext_unix_sk, "leave_stopped": self.leave_stopped,
                   "empty_ns": ["network" for ns in sorted(self.empty_ns) if ns == "net"]}
        if self.lazy_local:
            # only when set: the JSON of every other restore stays as it was
            request["lazy_local"] = True
        return {"request": request}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *,
                    phase: str = "restore") -> "RestoreRequest":
        request = header.get("request")
        if not isinstance(request, dict):
            raise ProtocolError(phase, "RESTORE request is not a JSON object")
        what = "RESTORE"
        lazy = request.get("lazy")
        if lazy is not None and not isinstance(lazy, dict):
            raise ProtocolError(phase, "RESTORE lazy is not a JSON object")
        empty = request.get("empty_ns") or []
        if not isinstance(empty, list) or not all(ns in _EMPTY_NS for ns in empty):
            raise ProtocolError(phase, f"RESTORE empty_ns is not a list of namespaces "
                                       f"({', '.join(_EMPTY_NS)}): {empty!r}")
        known = {"container_id", "bundle", "lazy", "lazy_local", "tcp_established", "file_locks",
                 "ext_unix_sk", "leave_stopped", "empty_ns"}
        return cls(container_id=_str(request, "container_id", what, phase),
                   bundle=_str(request, "bundle", what, phase, optional=True),
                   lazy=LazySource.from_header(lazy, phase=phase) if lazy is not None else None,
                   lazy_local=_flag(request, "lazy_local", what, phase),
                   tcp_established=_flag(request, "tcp_established", what, phase),
                   file_locks=_flag(request, "file_locks", what, phase),
                   ext_unix_sk=_flag(request, "ext_unix_sk", what, phase),
                   leave_stopped=_flag(request, "leave_stopped", what, phase, default=True),
                   empty_ns=frozenset(_EMPTY_NS[ns] for ns in empty),
                   extra={k: v for k, v in request.items() if k not in known})


@dataclass(frozen=True, slots=True, kw_only=True)
class RestorePrepared:
    """REPLY to ``RestorePrepare``: the bring-up is ready for RESTORE."""

    def to_header(self) -> dict[str, Any]:
        return {"prepared": True}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *,
                    phase: str = "prepare") -> "RestorePrepared":
        if header.get("prepared") is not True:
            raise ProtocolError(phase, "the agent did not prepare the restore")
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class RestorePrepare:
    """CONTROL ``restore_prepare``: do now, while the source still runs,
    what the restore of ``request`` needs only the checkpoint's metadata
    (``images/migrate.json``, sent before) and the bundle for: the checks,
    the claim of the ID, cgroups, the --root bind. The RESTORE that follows
    names the same container; an abort or a lost source undoes it."""

    OP: ClassVar[str] = "restore_prepare"
    Reply: ClassVar[type] = RestorePrepared

    request: RestoreRequest

    def to_header(self) -> dict[str, Any]:
        return {"op": self.OP, **self.request.to_header()}

    @classmethod
    def from_control(cls, control: Control, *, phase: str = "prepare") -> "RestorePrepare":
        return cls(request=RestoreRequest.from_header(control.args, phase=phase))


@dataclass(frozen=True, slots=True, kw_only=True)
class Restored:
    """What a ``restore_fn`` returns to the agent.

    ``info`` goes back to the source in RESTORED (JSON: pid, timings ...).
    ``commit`` runs when the source says DONE (e.g. resume a container that
    was restored stopped); ``abort`` when the source aborts or is lost
    before that (kill and delete what was restored). ``after`` runs once
    the source has the answer to its DONE: clean-up nobody waits for (a
    gigabyte of images takes ~0.2 s to delete, which would otherwise count
    as downtime). A plain dict returned by a ``restore_fn`` means
    ``Restored(info=that_dict)``.
    """

    info: dict[str, Any] = field(default_factory=dict)
    commit: Callable[[], None] | None = None
    abort: Callable[[], None] | None = None
    after: Callable[[], None] | None = None

    def to_header(self) -> dict[str, Any]:
        """RESTORED's body: the info only (the hooks stay here)."""
        return {"info": self.info}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, phase: str = "restore") -> "Restored":
        return cls(info=_object(header, "info", "RESTORED", phase))
