"""run: create and start in one go; in the foreground, wait and exit with
the container's code, then delete it (as runc does)."""

from __future__ import annotations

import contextlib
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
    from migrate.runtime.lifecycle.delete import delete

    fg = Foreground(ctx.syscalls)
    fg.install()
    try:
        container, launched = create(ctx, _record.replace(
            opts, foreground=True, wait_on_fifo=False))
        _poststart(container)
        try:
            code = fg.wait(launched.pid, launched.console_fd, launched.notify)
        finally:
            if launched.notify is not None:
                launched.notify.close()
    finally:
        fg.restore()
    if keep:
        return code
    with contextlib.suppress(Exception):
        delete(ctx, opts.id, force=True)
    return code


def _poststart(container) -> None:
    if container.state.config.get("hooks", {}).get("poststart"):
        from migrate import oci
        from migrate.runtime.hooks import run_hooks
        from migrate.runtime.lifecycle.create import oci_state

        spec = oci.parse_config(container.state.config, bundle=container.state.bundle)
        run_hooks(spec.hooks.poststart, state=oci_state(container.state, "running"),
                  name="poststart", warn_only=True)
