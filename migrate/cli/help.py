"""``-h``/``--help`` pages, laid out as runc's (urfave/cli) pages are.

Tools and tests read runc's layout: a ``NAME:`` line, then
``   <program> <command> - <summary>``, ``USAGE:`` and ``OPTIONS:``. The
pages say which runc command each one stands in for, so a reader of
either tool's manual finds the other. Light: no click, no typing.
"""

from __future__ import annotations

__all__ = ["SUMMARIES", "command_page", "main_page", "no_help_topic"]

# command -> (summary, arguments)
SUMMARIES = {
    "checkpoint": ("checkpoint a running container", "<container-id>"),
    "restore": ("restore a container from a checkpoint", "<container-id>"),
    "create": ("create a container", "<container-id>"),
    "start": ("run the user process of a created container", "<container-id>"),
    "run": ("create and start a container", "<container-id>"),
    "exec": ("run a new process inside the container",
             "<container-id> <command> [command options]  || -p process.json <container-id>"),
    "kill": ("send a signal (default SIGTERM) to the container's init",
             "<container-id> [signal]"),
    "delete": ("delete a container and what it holds", "<container-id>"),
    "state": ("print the state of a container", "<container-id>"),
    "list": ("list the containers under --root", ""),
    "ps": ("show the processes of a container", "<container-id> [ps options]"),
    "pause": ("freeze every process of a container", "<container-id>"),
    "resume": ("thaw a paused container", "<container-id>"),
    "spec": ("write a starting config.json", ""),
    "features": ("print what this runtime supports, as JSON", ""),
    "events": ("print container events: OOM notifications and resource statistics",
               "<container-id>"),
    "update": ("change the resource limits of a container", "<container-id>"),
    "version": ("print the version", ""),
    "inspect": ("show what a checkpoint holds", "<image-path>"),
    "migrate": ("move a running container to another host", "<container-id> <destination>"),
    "receive": ("receive containers migrated from another host", ""),
}

# Commands that runc has too: their pages name the runc command they mirror.
_RUNC_ALSO = {"checkpoint", "restore", "create", "start", "run", "exec", "kill", "delete",
              "state", "list", "ps", "pause", "resume", "spec", "features", "events", "update"}


def _options(options: list[tuple[str, str]]) -> list[str]:
    if not options:
        return []
    width = max(len(names) for names, _ in options)
    lines = ["", "OPTIONS:"]
    for names, text in options:
        lines.append(f"   {names.ljust(width)}  {text}".rstrip())
    return lines


def command_page(command: str, options: list[tuple[str, str]]) -> str:
    """The help page of one command; ``options`` are ("--flag value, -f value", help)."""
    summary, args = SUMMARIES.get(command, ("", ""))
    also = f" (as runc {command})" if command in _RUNC_ALSO else ""
    lines = ["NAME:", f"   migrate {command} - {summary}{also}", "", "USAGE:",
             f"   migrate {command} [command options] {args}".rstrip()]
    return "\n".join(lines + _options(options)) + "\n"


def main_page(global_options: list[tuple[str, str]]) -> str:
    from migrate import __version__

    lines = ["NAME:",
             "   migrate - checkpoint/restore and live migration, on the command line of "
             "runc - Open Container Initiative runtime",
             "", "USAGE:", "   migrate [global options] command [command options] [arguments...]",
             "", "VERSION:", f"   {__version__}", "", "COMMANDS:"]
    width = max(len(n) for n in SUMMARIES)
    for name, (summary, _) in SUMMARIES.items():
        lines.append(f"   {name.ljust(width)}  {summary}")
    lines.append(f"   {'help, h'.ljust(width)}  show the commands, or one command's help")
    return "\n".join(lines + ["", "GLOBAL OPTIONS:"] + _options(global_options)[2:]) + "\n"


def no_help_topic(command: str) -> str:
    return f"No help topic for '{command}'"
