"""CRIU ``swrk`` RPC client: typed options, requests, notifications.

``Client`` runs one request per ``criu swrk``; ``Session`` carries several
(a pre-dump chain ending in a dump, a page server and ``wait_pid``).
Nothing here imports protobuf: messages are encoded by ``_wire`` from the
tables in ``_messages`` (``_wire``'s docstring says why).
"""

from migrate.criu_rpc._swrk import SwrkOptions
from migrate.criu_rpc.client import Client
from migrate.criu_rpc.features import Features, Version
from migrate.criu_rpc.notify import NOTIFICATIONS, Callback, Callbacks, Notification
from migrate.criu_rpc.options import (
    CgroupMode,
    CgroupRoot,
    CriuOptions,
    ExtMount,
    InheritFd,
    JoinNamespace,
    LogLevel,
    NetworkLock,
    PageServer,
    PreDumpMode,
    Tls,
    check_request,
    to_criu_opts,
)
from migrate.criu_rpc.session import PageServerInfo, RestoreResult, Session, plan_pre_dump_chain

__all__ = [
    "Client",
    "Session",
    "SwrkOptions",
    "CriuOptions",
    "PageServer",
    "Tls",
    "ExtMount",
    "InheritFd",
    "JoinNamespace",
    "CgroupRoot",
    "CgroupMode",
    "NetworkLock",
    "PreDumpMode",
    "LogLevel",
    "check_request",
    "to_criu_opts",
    "plan_pre_dump_chain",
    "Notification",
    "Callback",
    "Callbacks",
    "NOTIFICATIONS",
    "Features",
    "Version",
    "RestoreResult",
    "PageServerInfo",
    "LazyPages",
    "LazyPagesOptions",
    "lazy_pages_argv",
    "start_lazy_pages",
    "check_lazy_dump_limits",
    "raised_pipe_max_size",
    "LAZY_DUMP_PIPE_SIZE",
    "uffd_noncoop",
]

# Loaded when first named: checkpoint and restore without --lazy-pages never
# need them (~1 ms of every such command).
_LAZY = {name: "lazy_pages" for name in (
    "LAZY_DUMP_PIPE_SIZE", "LazyPages", "LazyPagesOptions", "check_lazy_dump_limits",
    "raised_pipe_max_size", "lazy_pages_argv", "start_lazy_pages", "uffd_noncoop")}


from migrate._light import lazy_exports as _lazy_exports  # noqa: E402

__getattr__, __dir__ = _lazy_exports(__name__, _LAZY, globals(), __all__)
del _lazy_exports
