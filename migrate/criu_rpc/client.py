"""One-shot CRIU requests: each starts ``criu swrk``, sends one request,
services notifications until the final answer, and reaps swrk.

Use ``Client.session()`` for several requests on one swrk (a pre-dump chain,
a page server followed by ``wait_pid``); see ``session.py``.
"""

from __future__ import annotations

from migrate import _record

from migrate.criu_rpc._swrk import SwrkOptions
from migrate.criu_rpc.features import Features, Version
from migrate.criu_rpc.notify import Callbacks
from migrate.criu_rpc.options import CriuOptions
from migrate.criu_rpc.session import PageServerInfo, RestoreResult, Session

__all__ = ["Client"]

class Client:
    """Runs CRIU requests through ``criu swrk``.

    ``swrk`` says how to start CRIU (binary, working directory, inherited
    fds, timeout). Every method raises ``CriuError`` when CRIU fails, with
    CRIU's errno and message and the tail of its log; ``UsageError`` for
    options CRIU would refuse; or the exception a notification callback
    raised, after CRIU has cleaned up.
    """

    def __init__(self, swrk: SwrkOptions | None = None) -> None:
        self.swrk = swrk or SwrkOptions()

    def session(self, *, pass_fds: tuple[int, ...] = ()) -> Session:
        """A multi-request session; ``pass_fds`` adds to ``swrk.pass_fds``."""
        return Session(self._with_fds(pass_fds))

    def _one(self, options: CriuOptions | None = None) -> Session:
        return Session(self._with_fds(options.inherited_fds() if options else ()))

    def _with_fds(self, fds: tuple[int, ...]) -> SwrkOptions:
        extra = tuple(fd for fd in fds if fd not in self.swrk.pass_fds)
        if not extra:
            return self.swrk
        return _record.replace(self.swrk, pass_fds=self.swrk.pass_fds + extra)

    def check(self, options: CriuOptions | None = None) -> None:
        """CHECK: raises ``CriuError`` if CRIU cannot work on this kernel."""
        with self._one(options) as s:
            s.check(options)

    def version(self) -> Version:
        with self._one() as s:
            return s.version()

    def feature_check(self, *, mem_track: bool = True, lazy_pages: bool = True,
                      pidfd_store: bool = True) -> Features:
        with self._one() as s:
            return s.feature_check(mem_track=mem_track, lazy_pages=lazy_pages,
                                   pidfd_store=pidfd_store)

    def cpuinfo_dump(self, options: CriuOptions) -> None:
        """Write ``cpuinfo.img`` for this host's CPU into ``options.images_dir``."""
        with self._one(options) as s:
            s.cpuinfo_dump(options)

    def cpuinfo_check(self, options: CriuOptions) -> None:
        """Check ``options.images_dir/cpuinfo.img`` (from another host)
        against this host's CPU; raises ``CriuError`` if they differ."""
        with self._one(options) as s:
            s.cpuinfo_check(options)

    def dump(self, options: CriuOptions, callbacks: Callbacks | None = None) -> None:
        with self._one(options) as s:
            s.dump(options, callbacks)

    def pre_dump(self, options: CriuOptions, callbacks: Callbacks | None = None) -> None:
        """One pre-dump on its own (SINGLE_PRE_DUMP); for a chain ending in a
        dump use a ``session()``."""
        with self._one(options) as s:
            s.single_pre_dump(options, callbacks)

    def restore(self, options: CriuOptions, callbacks: Callbacks | None = None) -> RestoreResult:
        with self._one(options) as s:
            return s.restore(options, callbacks)

    def page_server(self, options: CriuOptions) -> PageServerInfo:
        """Start a page server that outlives this call: it exits by itself
        once one dump has connected and finished (kill ``pid`` if none comes).
        Use ``session().page_server`` + ``wait_pid`` to learn when it is done."""
        with self._one(options) as s:
            return s.page_server(options)
