"""The hot-path commands, parsed with argparse (see cli/main.py for why).

Each parses its flags into an options dataclass, makes one library call
and renders the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["create_cmd", "start_cmd", "run_cmd", "exec_cmd", "state_cmd", "kill_cmd",
           "delete_cmd"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        from migrate.errors import UsageError

        raise UsageError(f"{self.prog}: {message}")


def _parser(name: str, description: str) -> _Parser:
    return _Parser(prog=f"migrate {name}", description=description, allow_abbrev=False)


def _parse(parser: _Parser, argv: list[str]) -> argparse.Namespace:
    # Go-style single-dash long flags (-bundle) as urfave/cli accepts them.
    fixed = [("-" + a if a.startswith("-") and not a.startswith("--") and len(a.split("=")[0]) > 2
              else a) for a in argv]
    return parser.parse_args(fixed)


def _create_flags(p: _Parser) -> None:
    p.add_argument("--bundle", "-b", default=".", help="path to the OCI bundle")
    p.add_argument("--pid-file", help="write the init's pid here")
    p.add_argument("--console-socket", help="AF_UNIX socket that receives the pty master")
    p.add_argument("--no-pivot", action="store_true", help="MS_MOVE + chroot instead of pivot_root")
    p.add_argument("--no-new-keyring", action="store_true", help="keep the session keyring")
    p.add_argument("--preserve-fds", type=int, default=0, help="pass fds 3..3+N-1 to the container")
    p.add_argument("id", metavar="CONTAINER_ID")


def _create_options(a: argparse.Namespace):
    from migrate.runtime.lifecycle.create import CreateOptions

    return CreateOptions(id=a.id, bundle=a.bundle, pid_file=a.pid_file,
                         console_socket=a.console_socket, no_pivot=a.no_pivot,
                         no_new_keyring=a.no_new_keyring, preserve_fds=a.preserve_fds)


def create_cmd(ctx, argv: list[str]) -> int:
    p = _parser("create", "create a container, its init waits for `start`")
    _create_flags(p)
    from migrate.runtime.lifecycle.create import create

    create(ctx, _create_options(_parse(p, argv)))
    return 0


def start_cmd(ctx, argv: list[str]) -> int:
    p = _parser("start", "start a created container")
    p.add_argument("id", metavar="CONTAINER_ID")
    from migrate.runtime.lifecycle.start import start

    start(ctx, _parse(p, argv).id)
    return 0


def run_cmd(ctx, argv: list[str]) -> int:
    p = _parser("run", "create and start a container")
    p.add_argument("--detach", "-d", action="store_true", help="do not wait for the container")
    p.add_argument("--keep", action="store_true", help="accepted for runc compatibility")
    _create_flags(p)
    a = _parse(p, argv)
    from migrate.runtime.lifecycle.run import run

    return run(ctx, _create_options(a), detach=a.detach)


def exec_cmd(ctx, argv: list[str]) -> int:
    p = _parser("exec", "run a process in a running container")
    p.add_argument("--env", "-e", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--cwd", help="working directory")
    p.add_argument("--user", "-u", help="uid[:gid]")
    p.add_argument("--additional-gids", "-g", action="append", default=[], help="extra gid")
    p.add_argument("--cap", "-c", action="append", default=[], help="add a capability")
    p.add_argument("--tty", "-t", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("--console-socket", help="AF_UNIX socket that receives the pty master")
    p.add_argument("--detach", "-d", action="store_true", help="do not wait for the process")
    p.add_argument("--pid-file", help="write the process's pid here")
    p.add_argument("--process", "-p", help="process.json with the whole OCI process")
    p.add_argument("--no-new-privs", action="store_true", help="set no_new_privs")
    p.add_argument("--preserve-fds", type=int, default=0)
    p.add_argument("--apparmor", help="accepted for runc compatibility")
    p.add_argument("--process-label", help="accepted for runc compatibility")
    p.add_argument("--cgroup", help="accepted for runc compatibility")
    p.add_argument("id", metavar="CONTAINER_ID")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = _parse(p, argv)
    from migrate.runtime.lifecycle.exec import ExecOptions, exec_process

    opts = ExecOptions(id=a.id, args=tuple(a.args), env=tuple(a.env), cwd=a.cwd, user=a.user,
                       additional_gids=tuple(a.additional_gids), caps=tuple(a.cap), tty=a.tty,
                       console_socket=a.console_socket, detach=a.detach, pid_file=a.pid_file,
                       process_file=a.process, no_new_privs=a.no_new_privs,
                       preserve_fds=a.preserve_fds)
    return exec_process(ctx, opts)


def state_cmd(ctx, argv: list[str]) -> int:
    p = _parser("state", "print the OCI state of a container")
    p.add_argument("id", metavar="CONTAINER_ID")
    from migrate.runtime.lifecycle.query import state

    sys.stdout.write(json.dumps(state(ctx, _parse(p, argv).id), indent=2) + "\n")
    return 0


def kill_cmd(ctx, argv: list[str]) -> int:
    p = _parser("kill", "send a signal to a container (default SIGTERM)")
    p.add_argument("--all", "-a", action="store_true", help="signal every process")
    p.add_argument("id", metavar="CONTAINER_ID")
    p.add_argument("signal", nargs="?", default="SIGTERM")
    a = _parse(p, argv)
    from migrate.runtime.lifecycle.kill import kill
    from migrate.runtime.signals import parse_signal

    kill(ctx, a.id, parse_signal(a.signal), all_processes=a.all)
    return 0


def delete_cmd(ctx, argv: list[str]) -> int:
    p = _parser("delete", "delete a container")
    p.add_argument("--force", "-f", action="store_true", help="kill it first if running")
    p.add_argument("id", metavar="CONTAINER_ID")
    a = _parse(p, argv)
    from migrate.runtime.lifecycle.delete import delete

    delete(ctx, a.id, force=a.force)
    return 0


