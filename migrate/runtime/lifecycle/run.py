"""run: create and start in one go; in the foreground, wait and exit with
the container's code, then delete it (as runc does)."""

from __future__ import annotations

from migrate import _record

from migrate.runtime.context import RuntimeContext
from migrate.runtime.lifecycle.create import CreateOptions, create
from migrate.runtime.lifecycle.start import start

__all__ = ["run"]


def run(ctx: RuntimeContext, opts: CreateOptions, *, detach: bool, keep: bool = False) -> int:
    """Returns the exit code (0 when detached). ``keep``: leave the stopped
    container (state and cgroup) for a later ``delete``, as ``runc run --keep``.
    Raises what create raises."""
    if detach:
        create(ctx, _record.replace(opts, foreground=False))
        start(ctx, opts.id)
        return 0
    from migrate.runtime.foreground import Foreground
    from migrate.runtime.lifecycle.bringup import run_poststart, wait_and_delete

    fg = Foreground(ctx.syscalls)
    fg.install()
    try:
        container, launched = create(ctx, _record.replace(
            opts, foreground=True, wait_on_fifo=False))
        run_poststart(container.state)
    except BaseException:
        fg.restore()
        raise
    return wait_and_delete(ctx, opts.id, fg, launched.pid, launched.console_fd, launched.notify,
                           keep=keep)
