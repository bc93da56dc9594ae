"""CRIU notifications ("action scripts" sent over RPC) and their callbacks.

With ``notify_scripts`` set, CRIU stops at each step below, sends a NOTIFY
response naming it, and waits for a NOTIFY request with ``notify_success``
(criu/action-scripts.c, ``send_criu_rpc_script`` in criu/cr-service.c).
Answering failure aborts the step: at ``post-dump`` CRIU unlocks the network
and resumes the frozen tree (cr-dump.c, ``post_dump_ret``).

A callback gets a ``Notification`` and returns ``None``/``True`` to go on or
``False`` to answer failure; if it raises, failure is answered, the rest of
the request is serviced so CRIU can clean up, and the exception is re-raised
once CRIU has answered. A callback may take as long as it likes: CRIU waits
(the client's timeout does not count time spent in callbacks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from migrate._record import record

from migrate.errors import UsageError

__all__ = ["NOTIFICATIONS", "Notification", "Callback", "Callbacks", "check_callbacks"]

# action_names[] in criu/action-scripts.c, in the order CRIU may send them.
NOTIFICATIONS: tuple[str, ...] = (
    "pre-dump",
    "network-lock",
    "post-dump",
    "network-unlock",
    "pre-restore",
    "setup-namespaces",
    "post-setup-namespaces",
    "post-restore",
    "pre-resume",
    "post-resume",
    "status-ready",
    "orphan-pts-master",
    "query-ext-files",
    "pre-stream",
)


@record
class Notification:
    """One notification. ``pid`` is the root task's pid (setup-namespaces,
    post-restore). ``fd`` is the fd CRIU sent with it over SCM_RIGHTS
    (orphan-pts-master: the new pty master); it is open only during the
    callback, so ``os.dup()`` it to keep it."""

    name: str
    pid: int | None = None
    fd: int | None = None


Callback = Callable[[Notification], "bool | None"]
Callbacks = Mapping[str, Callback]


def check_callbacks(callbacks: Callbacks | None) -> dict[str, Callback]:
    """Check callback names; raises ``UsageError`` on an unknown name."""
    if not callbacks:
        return {}
    unknown = [name for name in callbacks if name not in NOTIFICATIONS]
    if unknown:
        raise UsageError(f"unknown CRIU notification {', '.join(sorted(unknown))}: "
                         f"expected one of {', '.join(NOTIFICATIONS)}")
    for name, callback in callbacks.items():
        if not callable(callback):
            raise UsageError(f'callback for CRIU notification "{name}" is not callable')
    return dict(callbacks)
