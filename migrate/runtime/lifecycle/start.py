"""start: release a created container's init by reading its exec.fifo."""

from __future__ import annotations

import os
import select
import time

from migrate.errors import InvalidStateError, KernelError
from migrate.runtime.container import Container
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import StateStore

__all__ = ["start"]


def release_fifo(container: Container) -> None:
    """Open exec.fifo for reading (the init is blocked opening it for
    writing), read its byte, remove it. Raises InvalidStateError if the
    init died instead."""
    path = container.store.fifo_path(container.id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidStateError(container.id, "running", "start",
                                f'container "{container.id}" is already running') from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(100):
                try:
                    data = os.read(fd, 1)
                except BlockingIOError:
                    data = b""
                if data:
                    break
            if not container.is_alive():
                raise InvalidStateError(container.id, "stopped", "start",
                                        f'container "{container.id}" init exited before start')
            time.sleep(0.001)
    finally:
        os.close(fd)
    try:
        os.unlink(path)
    except OSError as err:
        raise KernelError.from_oserror("unlink", err, path) from err


def _wait_ready(container: Container, notify) -> None:
    """Like runc: `start` returns once the container said READY=1 (or died)."""
    while container.is_alive():
        if notify.forward_one(timeout=0.2):
            return


def start(ctx: RuntimeContext, container_id: str) -> Container:
    """Raises NotFoundError, InvalidStateError."""
    store = StateStore(ctx.root)
    with store.lock(container_id):
        container = Container.load(store, container_id, ctx.proc_root)
        container.require("start")
        notify = None
        if container.state.notify_socket:
            from migrate.runtime.notify import NotifyProxy

            notify = NotifyProxy(store.dir(container_id), container.state.notify_socket)
        try:
            release_fifo(container)
            if notify is not None:
                _wait_ready(container, notify)
        finally:
            if notify is not None:
                notify.close()
    from migrate.runtime.lifecycle.bringup import run_poststart

    run_poststart(container.state)
    return container
