"""Entry point: global flags, then dispatch by command name.

The commands an engine runs for every container (create, start, state,
kill, delete, exec, run) are parsed with getopt in ``cli/hot.py``: click
and rich cost ~50 ms of imports, more than `runc run` takes in all. Every
other command is a click command, imported only when it is asked for.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main", "program", "COMMANDS"]

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
    "update": "migrate.cli.update:update_cmd",
    "events": "migrate.cli.events:events_cmd",
}
COMMANDS = {**HOT, **CLICK}

# Commands whose --log/--debug records migrate/_log.py writes without the
# `logging` package (engines pass --log on every call); the others log
# through `logging` (cli/logformat.py), in the same shapes.
_LIGHT_LOG = {"create", "start", "run", "exec", "state", "kill", "delete"}

# Global flags that take a value (runc's, plus --criu for the CRIU binary).
_VALUED = {"root", "log", "log-format", "rootless", "criu"}
_BOOL = {"debug", "systemd-cgroup"}

# (names, help) of the global options, for the help page.
GLOBAL_OPTIONS = [
    ("--debug", "enable debug logging"),
    ("--log value", "log file (default stderr)"),
    ("--log-format value", "log format: text (default) or json"),
    ("--root value", "state directory (default /run/migrate)"),
    ("--criu value", "CRIU binary (default: criu on PATH)"),
    ("--systemd-cgroup", "use the systemd cgroup driver (not supported)"),
    ("--rootless value", "true, false or auto: tolerate cgroup errors (default: auto)"),
    ("--help, -h", "show help"),
    ("--version, -v", "print the version"),
]


def version_text() -> str:
    """runc's three-line shape; the runc line says whose command line we speak."""
    import platform

    from migrate import __version__
    from migrate.oci.defaults import DEFAULT_OCI_VERSION

    return (f"migrate version {__version__} (command line of runc version 1.1.5)\n"
            f"commit: migrate-{__version__}\n"
            f"spec: {DEFAULT_OCI_VERSION}\n"
            f"python: {platform.python_version()}\n")


def _wants_help(argv: list[str]) -> bool:
    """-h/--help among the flags before the first argument (after it, they are
    the container's: `exec ID sh -h`)."""
    for arg in argv:
        if arg in ("-h", "--help", "-help"):
            return True
        if arg == "--" or not arg.startswith("-"):
            return False
    return False


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
    if root is not None:
        _check_root(root)
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


# Commands whose forks join a container: they run from an interpreter the
# container cannot write (runtime/exe_guard.py).
_JOINING = {"create", "run", "exec"}


def _protect_executable() -> None:
    """Run from a protected interpreter (runtime/exe_guard.py): the `migrate`
    launcher (nsexec/launcher.c) already execs one and says so in MARK;
    otherwise (the `migrate-py` script run directly, a launcher that could
    not) re-execute from one, once (``MIGRATE_EXE_GUARD=memfd`` skips the
    overlay, for tests of the fallback). A mark is believed only when
    /proc/self/exe really is read-only or sealed.

    The second start skips ``site`` (-S): its .pth processing is most of an
    interpreter's start-up here (an editable install's finder alone imports
    pathlib and urllib); the path it computed is handed over in PYTHONPATH,
    and the caller's own PYTHONPATH is put back at once.
    """
    from migrate.runtime.exe_guard import MARK, exe_is_protected, import_path, reexec_protected

    mark = os.environ.pop(MARK, None)
    saved = os.environ.pop(MARK + "_PYTHONPATH", None)
    if saved is not None:       # our own re-execution below
        if saved:
            os.environ["PYTHONPATH"] = saved[1:]
        else:
            os.environ.pop("PYTHONPATH", None)
    if mark and (saved is not None or exe_is_protected()):
        return      # the marks go no further
    env = dict(os.environ)
    old = os.environ.get("PYTHONPATH")
    env[MARK + "_PYTHONPATH"] = "" if old is None else "=" + old
    env["PYTHONPATH"] = import_path()
    # argv[0] as an absolute path: the new interpreter finds its prefix (the
    # virtualenv) from it, and /proc/self/exe would only name the overlay.
    reexec_protected([sys.executable, "-S", *sys.orig_argv[1:]], env,
                     allow_overlay=os.environ.get("MIGRATE_EXE_GUARD") != "memfd")


def _check_root(root: str) -> None:
    """--root must be a directory or not exist yet (create makes it); a file
    anywhere on the way is a usage error, not an OSError later."""
    import stat

    try:
        st = os.stat(root)
    except FileNotFoundError:
        return
    except OSError as err:
        raise _Usage(f"--root {root}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _Usage(f"--root {root}: not a directory")


def _load(ref: str):
    module, _, func = ref.partition(":")
    # __import__ with a fromlist returns the module itself (no importlib import)
    return getattr(__import__(module, fromlist=[func]), func)


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else argv
    log_path = None
    debug = False
    try:
        opts, rest = parse_globals(argv)
        if opts.get("version") or rest[:1] == ["version"]:
            sys.stdout.write(version_text())
            return 0
        if rest[:1] == ["help"] or (rest[:1] == ["h"] and len(rest) <= 2):
            rest = rest[1:2] + ["--help"] if len(rest) > 1 else []
            opts["help"] = True
        if not rest or (opts.get("help") and not rest[1:]):
            from migrate.cli.help import main_page

            (sys.stdout if opts.get("help") else sys.stderr).write(main_page(GLOBAL_OPTIONS))
            return 0 if opts.get("help") else 2
        if rest[0] not in COMMANDS and (opts.get("help") or _wants_help(rest[1:])):
            from migrate.cli.help import no_help_topic

            sys.stderr.write(no_help_topic(rest[0]) + "\n")
            return 3
        if rest[0] in CLICK and _wants_help(rest[1:]):
            from migrate.cli.clickapp import help_page

            sys.stdout.write(help_page(rest[0], _load(CLICK[rest[0]])))
            return 0
        # Logging first, so every later error also reaches --log (an engine
        # reads its last line) and is printed once, not twice.
        log_path = opts.get("log")
        debug = bool(opts.get("debug"))
        if log_path or debug:
            fmt = opts.get("log-format", "text")
            fmt = fmt if fmt in ("text", "json") else "text"
            try:
                if rest[0] in _LIGHT_LOG:
                    from migrate._log import setup   # same lines, without `logging`

                    setup(log_path, fmt, debug)
                else:
                    from migrate.cli.logs import setup_logging

                    setup_logging(log_path, fmt, debug)
            except OSError as err:      # nothing was set up: the one line goes to stderr
                path, log_path = log_path, None
                raise _Usage(f"cannot open --log {path}: {err.strerror}") from None
        name, cmd_argv = rest[0], rest[1:]
        if name not in COMMANDS:
            from migrate.cli.help import no_help_topic

            raise _Usage(f'unknown command "{name}" ({no_help_topic(name)}); run `migrate --help`')
        if name in _JOINING and from_command_line:
            _protect_executable()
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
        # No traceback even with --debug: a user error is not a bug (runc's
        # --debug adds log lines, not stacks); --debug quotes CRIU's log above.
        return err.exit_code
    report_error(f"internal error: {type(err).__name__}: {err} "
                 f"(this is a bug: please report it, with --debug output)", log_path)
    if debug:
        import traceback

        traceback.print_exception(err)
    return 70


def program() -> None:
    """The `migrate` executable: ``main()``, then ``os._exit``.

    A normal exit finalizes the interpreter (tears down every imported
    module, runs the GC): 5-10 ms of CPU, measured, that an engine would pay
    on every command, after the work is done. Nothing here needs it: state
    and pid files are written with os.write (no buffer), log handlers flush
    each record. So flush what is buffered and leave, unless a thread that
    is not a daemon still runs (its work must finish) or flushing fails
    (then the interpreter reports it as usual).
    """
    try:
        code = main()
    except SystemExit as exc:   # --help of a hot command
        code = exc.code
    if "_MIGRATE_ATTACH_WARMUP" in os.environ or "migrate.runtime.cgroups.warmup" in sys.modules:
        from migrate.runtime.cgroups.warmup import reap_launcher_warmup

        reap_launcher_warmup()     # the `migrate` launcher's child (cgroups/warmup.py)
    if code is None:
        code = 0
    if not isinstance(code, int):
        sys.exit(code)
    threading = sys.modules.get("threading")
    if threading is not None and any(not t.daemon for t in threading.enumerate()
                                     if t is not threading.main_thread()):
        sys.exit(code)
    logging = sys.modules.get("logging")
    try:
        if logging is not None:
            logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - e.g. EPIPE: let the normal exit report it
        sys.exit(code)
    os._exit(code)


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
    program()
