"""OCI hooks: each gets the container's state JSON on stdin.

prestart/createRuntime/createContainer run from the runtime just before
pivot_root, startContainer inside the container before execve, poststart
after start, poststop after delete (where a failure only warns, as the spec
says).
"""

from __future__ import annotations

import json
import subprocess

from migrate._log import getLogger
from migrate.errors import MigrateError

__all__ = ["HookError", "run_hooks"]

log = getLogger(__name__)


class HookError(MigrateError):
    pass


def run_hooks(hooks, *, state: dict | None, name: str, warn_only: bool = False) -> None:
    """Run ``hooks`` in order. Raises HookError unless ``warn_only``."""
    data = json.dumps(state or {}).encode()
    for i, hook in enumerate(hooks):
        # runc's wording ("error running hook #N"), which engines and
        # runc's tests match, plus which hook it was.
        what = f"error running hook #{i} ({name} {hook.path})"
        argv = list(hook.args) or [hook.path]
        env = dict(e.split("=", 1) for e in hook.env if "=" in e)
        try:
            res = subprocess.run(argv, executable=hook.path, input=data, env=env,
                                 capture_output=True, timeout=hook.timeout or None)
            if res.returncode != 0:
                err = res.stderr.decode(errors="replace").strip().splitlines()
                how = (f"exited with {res.returncode}" if res.returncode > 0 else
                       f"signal: {_signal_name(-res.returncode)}")
                raise HookError(f"{what}: {how}" + (f": {err[-1]}" if err else ""))
        except subprocess.TimeoutExpired:
            problem = HookError(f"{what}: timed out after {hook.timeout}s")
        except OSError as err:
            problem = HookError(f"{what}: {err.strerror}")
        except HookError as err:
            problem = err
        else:
            continue
        if not warn_only:
            raise problem
        log.warning("%s", problem)


def _signal_name(sig: int) -> str:
    import signal

    try:
        return (signal.strsignal(sig) or f"signal {sig}").lower()
    except ValueError:
        return f"signal {sig}"
