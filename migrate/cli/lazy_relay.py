"""``python -m migrate.cli.lazy_relay``: a destination's lazy-pages relay
(criu_rpc/lazy_prefetch.py) in a process of its own.

Started by the restore (checkpoint/restore.py) with the daemon's end of
their connection and the stream from the source: should the agent that
started it die, the restored container's memory still comes in (the daemon
would otherwise lose its stream, and the container read the pages it
lacked as zeros).

    python -S -m migrate.cli.lazy_relay DAEMON_FD SOURCE_FD IMAGES_DIR
           [--control-fd FD] [--ready-fd FD] [--log PATH] [--log-format text|json]
           [--debug]

``--control-fd``: where the agent says when the container runs, and whether
the daemon exited 0 (see PrefetchRelay's ``control``). ``--ready-fd``: a byte is written there once
the relay runs (its start-up is ~40 ms of CPU: not while the source is
frozen).

Exits 0 once the daemon closed the stream after its last page, 1 if either
side failed first.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    import argparse
    import socket

    from migrate.cli.logformat import setup_logging
    from migrate.criu_rpc.lazy_prefetch import PrefetchRelay, lazy_ranges

    parser = argparse.ArgumentParser(prog="migrate-lazy-relay")
    parser.add_argument("daemon_fd", type=int)
    parser.add_argument("source_fd", type=int)
    parser.add_argument("images_dir")
    parser.add_argument("--control-fd", type=int)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--log")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.log, args.log_format, args.debug)
    daemon = socket.socket(fileno=args.daemon_fd)
    source = socket.socket(fileno=args.source_fd)
    relay = PrefetchRelay(daemon, source, lambda: lazy_ranges(args.images_dir),
                          control=args.control_fd).start()
    if args.ready_fd is not None:
        # What the first request needs, loaded now: the restore waits for
        # this byte, so that none of it runs while the container is frozen.
        import migrate.criu_rpc._messages  # noqa: F401
        import migrate.criu_rpc.images  # noqa: F401

        os.write(args.ready_fd, b"r")
        os.close(args.ready_fd)
    relay.join()
    return 0 if relay.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
