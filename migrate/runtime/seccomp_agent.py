"""Handing a seccomp listener fd to the seccomp agent at ``listenerPath``.

runtime-spec "Seccomp notify" (config-linux.md, runtime.md "container
process state"): the runtime connects to the agent's UNIX socket and sends,
in one message, the container process state as JSON with the fd attached
(SCM_RIGHTS); ``fds`` names each attached fd. runc sends the same for a new
container (status "creating", before start) and for an exec'd process
(status "running").
"""

from __future__ import annotations

import json
import os
import socket

from migrate.errors import NotFoundError

__all__ = ["SECCOMP_FD_NAME", "process_state", "send_listener"]

SECCOMP_FD_NAME = "seccompFd"


def process_state(*, oci_version: str, pid: int, metadata: str, state: dict) -> dict:
    """The runtime-spec ContainerProcessState for one listener fd; ``pid``
    is the filtered process as the runtime sees it, ``state`` the
    container's state (``state`` command shape)."""
    keep = ("ociVersion", "id", "status", "pid", "bundle", "annotations")
    out = {"ociVersion": oci_version, "fds": [SECCOMP_FD_NAME], "pid": pid,
           "state": {k: v for k, v in state.items() if k in keep and v not in (None, {})}}
    if metadata:
        out["metadata"] = metadata
    return out


def send_listener(listener_path: str, message: dict, fd: int) -> None:
    """Connect to the agent and send ``message`` with ``fd``. Raises
    NotFoundError naming the socket when the agent cannot be reached."""
    # One message, as runc sends it; compact, since agents read it into a
    # fixed buffer (runc's example agent: 4096 bytes).
    data = json.dumps(message, separators=(",", ":")).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(listener_path)
        except OSError as err:
            raise NotFoundError(f"failed to connect with seccomp agent specified in the seccomp "
                                f"profile: {listener_path}: {os.strerror(err.errno or 0)}") from None
        try:
            socket.send_fds(s, [data], [fd])
        except OSError as err:
            raise NotFoundError(f"cannot send seccomp fd to {listener_path}: "
                                f"{os.strerror(err.errno or 0)}") from None
