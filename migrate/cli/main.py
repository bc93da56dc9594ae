"""Entry point: global flags, then dispatch by command name.

The commands an engine runs for every container (create, start, state,
kill, delete, exec, run) are parsed with getopt in ``cli/hot.py``: click
and rich cost ~50 ms of imports, more than `runc run` takes in all. Every
other command is a click command, imported only when it is asked for.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main", "COMMANDS"]

# name -> "module:function". Hot commands take (ctx, argv) and return an exit code.
HOT = {
    "create": "migrate.cli.hot:create_cmd",
    "start": "migrate.cli.hot:start_cmd",
    "run": "migrate.cli.hot:run_cmd",
    "exec": "migrate.cli.hot:exec_cmd",
    "state": "migrate.cli.hot:state_cmd",
    "kill": "migrate.cli.hot:kill_cmd",
    "delete": "migrate.cli.hot:delete_cmd",
    "checkpoint": "migrate.cli.checkpoint:checkpoint_cmd",
    "restore": "migrate.cli.checkpoint:restore_cmd",
}
CLICK = {
    "spec": "migrate.cli.spec:spec",
    "features": "migrate.cli.spec:features",
    "list": "migrate.cli.containers:list_cmd",
    "ps": "migrate.cli.containers:ps",
    "pause": "migrate.cli.containers:pause",
    "resume": "migrate.cli.containers:resume",
    "inspect": "migrate.cli.inspect:inspect",
    "migrate": "migrate.cli.migration:migrate_cmd",
    "receive": "migrate.cli.migration:receive",
}
COMMANDS = {**HOT, **CLICK}

# Global flags that take a value (runc's, plus --criu for the CRIU binary).
_VALUED = {"root", "log", "log-format", "rootless", "criu"}
_BOOL = {"debug", "systemd-cgroup"}

USAGE = """usage: migrate [global options] COMMAND [options] [args]

A container runtime built for checkpoint/restore and live migration
(runc-compatible command line).

global options:
  --root DIR            state directory (default /run/migrate)
  --log FILE            log file (default stderr)
  --log-format FMT      text or json
  --debug               verbose logging, tracebacks for internal errors
  --systemd-cgroup      use the systemd cgroup driver (not supported)
  --rootless VALUE      true, false or auto: tolerate cgroup errors
  --criu PATH           CRIU binary (default: criu on PATH)

commands:
  spec create start run exec state list kill delete ps pause resume
  features checkpoint restore inspect migrate receive
"""


class _Usage(Exception):
    pass


def parse_globals(argv: list[str]) -> tuple[dict, list[str]]:
    """Split ``argv`` into global options and the command's own argv."""
    opts: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            opts["help"] = True
        elif name in ("v", "version"):
            opts["version"] = True
        elif name in _BOOL:
            opts[name] = value.lower() not in ("false", "0") if eq else True
        elif name in _VALUED:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise _Usage(f"flag needs an argument: --{name}")
                value = argv[i]
            opts[name] = value
        else:
            raise _Usage(f"flag provided but not defined: {arg}")
        i += 1
    return opts, argv[i:]


# Commands that never touch the state directory: they must work for a user
# who has none (`spec --rootless` is the first thing a rootless user runs).
_STATELESS = {"spec", "features"}


def _context(opts: dict, command: str = ""):
    from migrate.runtime.context import DEFAULT_ROOT, RuntimeContext

    rootless = opts.get("rootless", "auto").lower()
    if rootless not in ("auto", "true", "false"):
        raise _Usage(f'invalid --rootless value "{opts["rootless"]}": use true, false or auto')
    fmt = opts.get("log-format", "text")
    if fmt not in ("text", "json"):
        raise _Usage(f'invalid --log-format "{fmt}": use text or json')
    root = opts.get("root")
    if root is None and command in _STATELESS:
        root = DEFAULT_ROOT
    elif root is None:
        from migrate.runtime.rootdir import prepare_root
        from migrate.runtime.rootless import decide, in_user_namespace

        root = decide(rootless, euid=os.geteuid(), in_userns=in_user_namespace(),
                      environ=os.environ).root
        # Made here, once, with the right mode: 0700 and sticky under
        # XDG_RUNTIME_DIR (see rootdir.py); a clear error if impossible.
        prepare_root(root, private=root != DEFAULT_ROOT)
    return RuntimeContext(root=os.path.abspath(root), log=opts.get("log"), log_format=fmt,
                          debug=bool(opts.get("debug")),
                          systemd_cgroup=bool(opts.get("systemd-cgroup")),
                          rootless=rootless, criu=opts.get("criu", "criu"),
                          notify_socket=os.environ.get("NOTIFY_SOCKET") or None)


def _load(ref: str):
    import importlib

    module, _, func = ref.partition(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log_path = None
    debug = False
    try:
        opts, rest = parse_globals(argv)
        if opts.get("version"):
            from migrate import __version__

            print(f"migrate version {__version__}\nspec: 1.2.0")
            return 0
        if not rest or opts.get("help"):
            (sys.stdout if opts.get("help") else sys.stderr).write(USAGE)
            return 0 if opts.get("help") else 2
        # Logging first, so every later error also reaches --log (an engine
        # reads its last line) and is printed once, not twice.
        log_path = opts.get("log")
        debug = bool(opts.get("debug"))
        if log_path or debug:
            from migrate.cli.logs import setup_logging

            fmt = opts.get("log-format", "text")
            setup_logging(log_path, fmt if fmt in ("text", "json") else "text", debug)
        name, cmd_argv = rest[0], rest[1:]
        if name not in COMMANDS:
            raise _Usage(f'unknown command "{name}"; run `migrate --help`')
        ctx = _context(opts, name)
        if name in HOT:
            return _load(HOT[name])(ctx, cmd_argv)
        from migrate.cli.clickapp import run_click

        return run_click(name, _load(CLICK[name]), ctx, cmd_argv)
    except _Usage as err:
        from migrate.cli.logs import report_error

        report_error(str(err), log_path)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - the one place errors are rendered
        return render_error(err, log_path, debug)


def render_error(err: BaseException, log_path: str | None, debug: bool) -> int:
    from migrate.cli.logs import report_error
    from migrate.errors import MigrateError

    if isinstance(err, MigrateError):
        message = str(err)
        notes = getattr(err, "__notes__", None)
        if notes:
            message += " (" + "; ".join(notes) + ")"
        _quote_criu_log(err, debug)
        report_error(message, log_path)
        if debug:
            import traceback

            traceback.print_exception(err)
        return err.exit_code
    report_error(f"internal error: {type(err).__name__}: {err} "
                 f"(this is a bug: please report it, with --debug output)", log_path)
    if debug:
        import traceback

        traceback.print_exception(err)
    return 70


def _quote_criu_log(err, debug: bool) -> None:
    """Before a CRIU failure's one line: the log lines around CRIU's errors
    (as runc quotes them), and with --debug the log's tail and path too."""
    lines = getattr(err, "error_lines", ())
    tail = getattr(err, "log_tail", ()) if debug else ()
    if not (lines or tail):
        return
    where = getattr(err, "log_path", None) or "CRIU's output"
    out = []
    if lines:
        out.append(f"migrate: errors in {where}:")
        out.extend(f"  {line}" for line in lines)
    if tail:
        out.append(f"migrate: last lines of {where}:")
        out.extend(f"  {line}" for line in tail)
    sys.stderr.write("\n".join(out) + "\n")


if __name__ == "__main__":
    sys.exit(main())
