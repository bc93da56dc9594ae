"""The hot-path commands, parsed with getopt (see cli/main.py for why: argparse
alone costs ~8 ms per call, click ~50 ms).

Each parses its flags into an options dataclass, makes one library call
and renders the result.
"""

from __future__ import annotations

import sys

__all__ = ["create_cmd", "start_cmd", "run_cmd", "exec_cmd", "state_cmd", "kill_cmd",
           "delete_cmd"]


class Flag:
    """One command-line flag: long name, short letter, whether it takes a value."""

    __slots__ = ("name", "short", "value", "repeat", "help", "default")

    def __init__(self, name: str, short: str = "", *, value: bool = False, repeat: bool = False,
                 default=None, help: str = ""):
        self.name, self.short, self.value, self.repeat = name, short, value, repeat
        self.help = help
        self.default = default if default is not None else ([] if repeat else (None if value else False))

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


class Args:
    """Parsed flags as attributes, plus ``positional``."""

    def __init__(self, values: dict, positional: list[str]):
        self.__dict__.update(values)
        self.positional = positional


def parse(command: str, flags: list[Flag], argv: list[str], *, positional: str,
          min_args: int = 1, max_args: int | None = 1) -> Args:
    """getopt with urfave/cli's conventions (what runc and its callers use):
    flags before positional arguments, ``--flag=value`` or ``--flag value``,
    ``-flag`` as a long flag, repeated flags. Raises UsageError."""
    from migrate.errors import UsageError

    takes_value = {f"--{f.name}" for f in flags if f.value} | \
        {f"-{f.short}" for f in flags if f.short and f.value}
    fixed = []
    value_next = False
    for i, a in enumerate(argv):
        if value_next:              # the value of the flag before: never a flag itself
            fixed.append(a)
            value_next = False
            continue
        if a == "--" or not a.startswith("-"):
            fixed += argv[i:]
            break
        # Go-style single-dash long flags (-bundle) as urfave/cli accepts them.
        if not a.startswith("--") and len(a.split("=")[0]) > 2:
            a = "-" + a
        value_next = a in takes_value
        fixed.append(a)
    shorts = "".join(f.short + (":" if f.value else "") for f in flags if f.short)
    longs = [f.name + ("=" if f.value else "") for f in flags] + ["help"]
    try:
        opts, rest = _getopt(fixed, shorts + "h", longs)
    except _GetoptError as err:
        if "requires argument" in err.msg:
            raise UsageError(f"migrate {command}: flag needs an argument: --{err.opt}") from None
        raise UsageError(f"migrate {command}: {err.msg}") from None
    by_name = {f"--{f.name}": f for f in flags} | {f"-{f.short}": f for f in flags if f.short}
    values = {f.dest: (list(f.default) if f.repeat else f.default) for f in flags}
    for opt, val in opts:
        if opt in ("--help", "-h"):
            sys.stdout.write(usage(command, flags, positional) + "\n")
            raise SystemExit(0)
        f = by_name[opt]
        if f.repeat:
            values[f.dest].append(val)
        elif f.value:
            values[f.dest] = val
        else:
            values[f.dest] = True
    if len(rest) < min_args or (max_args is not None and len(rest) > max_args):
        raise UsageError(f"migrate {command}: expected {positional}, got "
                         f"{' '.join(rest) or 'nothing'}")
    return Args(values, rest)


class _GetoptError(Exception):
    def __init__(self, msg: str, opt: str):
        super().__init__(msg)
        self.msg, self.opt = msg, opt


def _getopt(args: list[str], shortopts: str, longopts: list[str]):
    """``getopt.getopt``, same results and messages, without its import:
    getopt loads gettext, which loads re and enum (~5 ms per command,
    migrate/_light.py)."""
    opts = []
    while args and args[0].startswith("-") and args[0] != "-":
        if args[0] == "--":
            args = args[1:]
            break
        if args[0].startswith("--"):
            opt, eq, optarg = args[0][2:].partition("=")
            args = args[1:]
            has_arg, opt = _long_has_args(opt, longopts)
            if has_arg:
                if not eq:
                    if not args:
                        raise _GetoptError(f"option --{opt} requires argument", opt)
                    optarg, args = args[0], args[1:]
            elif eq:
                raise _GetoptError(f"option --{opt} must not have an argument", opt)
            opts.append(("--" + opt, optarg))
            continue
        optstring, args = args[0][1:], args[1:]
        while optstring:
            opt, optstring = optstring[0], optstring[1:]
            i = shortopts.find(opt)
            if opt == ":" or i < 0:
                raise _GetoptError(f"option -{opt} not recognized", opt)
            if shortopts.startswith(":", i + 1):
                if not optstring:
                    if not args:
                        raise _GetoptError(f"option -{opt} requires argument", opt)
                    optstring, args = args[0], args[1:]
                optarg, optstring = optstring, ""
            else:
                optarg = ""
            opts.append(("-" + opt, optarg))
    return opts, args


def _long_has_args(opt: str, longopts: list[str]) -> tuple[bool, str]:
    possibilities = [o for o in longopts if o.startswith(opt)]
    if not possibilities:
        raise _GetoptError(f"option --{opt} not recognized", opt)
    if opt in possibilities:
        return False, opt
    if opt + "=" in possibilities:
        return True, opt
    if len(possibilities) > 1:
        raise _GetoptError(f"option --{opt} not a unique prefix", opt)
    match = possibilities[0]
    return (True, match[:-1]) if match.endswith("=") else (False, match)


def usage(command: str, flags: list[Flag], positional: str = "") -> str:
    """The command's help page, in runc's layout (see cli/help.py)."""
    from migrate.cli.help import command_page

    opts = []
    for f in flags:
        suffix = " value" if f.value else ""
        names = f"--{f.name}{suffix}" + (f", -{f.short}{suffix}" if f.short else "")
        opts.append((names, f.help))
    return command_page(command, opts).rstrip("\n")


def _int_flag(value: str, name: str) -> int:
    from migrate.errors import UsageError

    try:
        return int(value)
    except ValueError:
        raise UsageError(f"invalid value {value!r} for --{name}: must be a number") from None


CREATE_FLAGS = [
    Flag("bundle", "b", value=True, default=".", help="path to the OCI bundle"),
    Flag("pid-file", value=True, help="write the init's pid here"),
    Flag("console-socket", value=True, help="AF_UNIX socket that receives the pty master"),
    Flag("no-pivot", help="MS_MOVE + chroot instead of pivot_root"),
    Flag("no-new-keyring", help="keep the session keyring"),
    Flag("preserve-fds", value=True, default="0", help="pass fds 3..3+N-1 to the container"),
]


def _create_options(a: Args, warmup=None):
    from migrate.runtime.lifecycle.create import CreateOptions

    return CreateOptions(id=a.positional[0], bundle=a.bundle, pid_file=a.pid_file,
                         console_socket=a.console_socket, no_pivot=a.no_pivot,
                         no_new_keyring=a.no_new_keyring,
                         preserve_fds=_int_flag(a.preserve_fds, "preserve-fds"),
                         attach_warmup=warmup)


def _attach_warmup(ctx):
    """Started before the imports, which it overlaps (runtime/cgroups/warmup.py)."""
    return ctx.syscalls.warm_cgroup_attach(ctx.cgroup_root, ctx.proc_root)


def create_cmd(ctx, argv: list[str]) -> int:
    warmup = _attach_warmup(ctx)
    from migrate.runtime.lifecycle.create import create

    a = parse("create", CREATE_FLAGS, argv, positional="CONTAINER_ID")
    create(ctx, _create_options(a, warmup))
    return 0


def start_cmd(ctx, argv: list[str]) -> int:
    from migrate.runtime.lifecycle.start import start

    start(ctx, parse("start", [], argv, positional="CONTAINER_ID").positional[0])
    return 0


RUN_FLAGS = [Flag("detach", "d", help="do not wait for the container"),
             Flag("keep", help="keep the stopped container for a later delete")] + CREATE_FLAGS


def run_cmd(ctx, argv: list[str]) -> int:
    warmup = _attach_warmup(ctx)
    from migrate.runtime.lifecycle.run import run

    a = parse("run", RUN_FLAGS, argv, positional="CONTAINER_ID")
    return run(ctx, _create_options(a, warmup), detach=a.detach, keep=a.keep)


EXEC_FLAGS = [
    Flag("env", "e", value=True, repeat=True, help="KEY=VALUE"),
    Flag("cwd", value=True, help="working directory"),
    Flag("user", "u", value=True, help="uid[:gid]"),
    Flag("additional-gids", "g", value=True, repeat=True, help="extra gid"),
    Flag("cap", "c", value=True, repeat=True, help="add a capability"),
    Flag("tty", "t", help="allocate a pseudo-terminal"),
    Flag("console-socket", value=True, help="AF_UNIX socket that receives the pty master"),
    Flag("detach", "d", help="do not wait for the process"),
    Flag("pid-file", value=True, help="write the process's pid here"),
    Flag("process", "p", value=True, help="process.json with the whole OCI process"),
    Flag("no-new-privs", help="set no_new_privs"),
    Flag("preserve-fds", value=True, default="0", help="pass fds 3..3+N-1"),
    Flag("apparmor", value=True, help="accepted for runc compatibility"),
    Flag("process-label", value=True, help="accepted for runc compatibility"),
    Flag("cgroup", value=True, repeat=True,
         help="run in a sub-cgroup: PATH, or CONTROLLER[,CONTROLLER]:PATH (repeatable)"),
    Flag("ignore-paused", help="exec in a paused container (runs once it is resumed)"),
]


def sub_cgroup_paths(args: list[str]) -> tuple[tuple[str, str], ...]:
    """``--cgroup`` values as (controller, path) pairs; "" means every controller.

    runc's rules: PATH alone only once; CONTROLLER[,CONTROLLER]:PATH otherwise.
    Raises UsageError.
    """
    from migrate.errors import UsageError

    out: dict[str, str] = {}
    for arg in args:
        parts = arg.split(":", 2)
        if len(parts) > 2:
            raise UsageError(f"invalid --cgroup argument: {arg}")
        if len(parts) == 1:
            if len(args) != 1:
                raise UsageError(f"invalid --cgroup argument: {arg} (missing <controller>: prefix)")
            out[""] = arg
        else:
            for ctrl in parts[0].split(","):
                out[ctrl] = parts[1]
    return tuple(out.items())


def exec_cmd(ctx, argv: list[str]) -> int:
    warmup = _attach_warmup(ctx)
    from migrate.runtime.lifecycle.exec import ExecOptions, exec_process

    a = parse("exec", EXEC_FLAGS, argv, positional="CONTAINER_ID [COMMAND [ARG...]]",
              max_args=None)
    opts = ExecOptions(id=a.positional[0], args=tuple(a.positional[1:]), env=tuple(a.env),
                       cwd=a.cwd, user=a.user, additional_gids=tuple(a.additional_gids),
                       caps=tuple(a.cap), tty=a.tty, console_socket=a.console_socket,
                       detach=a.detach, pid_file=a.pid_file, process_file=a.process,
                       no_new_privs=a.no_new_privs,
                       preserve_fds=_int_flag(a.preserve_fds, "preserve-fds"),
                       ignore_paused=a.ignore_paused, sub_cgroups=sub_cgroup_paths(a.cgroup),
                       attach_warmup=warmup)
    from migrate.errors import MigrateError

    try:
        return exec_process(ctx, opts)
    except MigrateError as err:
        # runc exits 255 whenever exec itself fails (exec.go fatalWithCode),
        # bad --pid-file or --user included, so that a caller (an engine, a
        # health check) can tell it from the process's own exit code 1-254.
        # Only malformed flags, refused before this, keep our usage code 2.
        err.exit_code = 255
        raise


def state_cmd(ctx, argv: list[str]) -> int:
    from migrate.runtime.lifecycle.query import state

    cid = parse("state", [], argv, positional="CONTAINER_ID").positional[0]
    result = state(ctx, cid)
    import json     # indent: the pure-Python encoder (migrate/_light.py)

    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


def kill_cmd(ctx, argv: list[str]) -> int:
    from migrate.runtime.lifecycle.kill import kill
    from migrate.runtime.signals import parse_signal

    a = parse("kill", [Flag("all", "a", help="signal every process")], argv,
              positional="CONTAINER_ID [SIGNAL]", max_args=2)
    sig = a.positional[1] if len(a.positional) > 1 else "SIGTERM"
    kill(ctx, a.positional[0], parse_signal(sig), all_processes=a.all)
    return 0


def delete_cmd(ctx, argv: list[str]) -> int:
    from migrate.runtime.lifecycle.delete import delete

    a = parse("delete", [Flag("force", "f", help="kill it first if running")], argv,
              positional="CONTAINER_ID")
    delete(ctx, a.positional[0], force=a.force)
    return 0
