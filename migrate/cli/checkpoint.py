"""checkpoint and restore, with runc's flags.

Parsed with getopt like the other commands engines call (cli/hot.py):
Podman runs `checkpoint` and `restore` for every container it moves, and
click costs ~30 ms of start-up on top of CRIU's own time.
"""

from __future__ import annotations

import sys

from migrate.cli.hot import Flag, _int_flag, parse

__all__ = ["checkpoint_cmd", "restore_cmd"]

# runc's spellings -> CRIU's (criu_cg_mode, criu_network_lock_method and
# the namespace names of empty_ns); parsed here once, the library sees only
# CRIU's values. runc says "network" for --empty-ns; CRIU's own name, "net",
# is accepted too.
CGROUP_MODES = {"soft": "SOFT", "full": "FULL", "strict": "STRICT", "ignore": "IGNORE"}
NETWORK_LOCKS = {"iptables": "IPTABLES", "nftables": "NFTABLES", "skip": "SKIP"}
EMPTY_NS = {"network": "net", "net": "net"}

CHECKPOINT_FLAGS = [
    Flag("image-path", value=True, default="checkpoint", help="where images go"),
    Flag("work-path", value=True, help="CRIU's log and work files (default: image path)"),
    Flag("parent-path", value=True, help="a previous pre-dump, relative to the image path"),
    Flag("leave-running", help="keep the container running"),
    Flag("tcp-established", help="dump open TCP connections"),
    Flag("tcp-skip-in-flight", help="skip in-flight TCP connections"),
    Flag("link-remap", help="allow linked-but-deleted files"),
    Flag("ext-unix-sk", help="allow external unix sockets"),
    Flag("shell-job", help="the container is a shell job"),
    Flag("lazy-pages", help="leave memory to be pulled (post-copy)"),
    Flag("status-fd", value=True, help="fd that gets \\0 when the lazy page server is ready"),
    Flag("page-server", value=True, help="ADDRESS:PORT of a CRIU page server"),
    Flag("file-locks", help="dump file locks"),
    Flag("pre-dump", help="dump memory only, keep running"),
    Flag("manage-cgroups-mode", value=True, help="soft, full, strict or ignore"),
    Flag("empty-ns", value=True, repeat=True, help="namespace to leave empty (network)"),
    Flag("auto-dedup", help="deduplicate parent images"),
    Flag("network-lock", value=True, help="iptables, nftables or skip"),
    Flag("recreate-masked", help="leave the empty read-only tmpfs mounts over masked paths "
         "out of the images and recreate them on restore (faster; runc cannot restore these)"),
    Flag("print-stats", help="print CRIU's dump statistics"),
    Flag("format", value=True, default="table", help="table or json, for --print-stats"),
]

RESTORE_FLAGS = [
    Flag("image-path", value=True, default="checkpoint", help="where the images are"),
    Flag("work-path", value=True, help="CRIU's log and work files"),
    Flag("bundle", "b", value=True, default=".", help="bundle of the restored container"),
    Flag("detach", "d", help="do not wait for the container"),
    Flag("pid-file", value=True, help="write the init's pid here"),
    Flag("console-socket", value=True, help="AF_UNIX socket that receives the pty master"),
    Flag("no-subreaper", help="accepted for runc compatibility"),
    Flag("no-pivot", help="accepted for runc compatibility"),
    Flag("tcp-established", help="restore TCP connections"),
    Flag("tcp-close", help="restore TCP connections closed"),
    Flag("ext-unix-sk", help="allow external unix sockets"),
    Flag("shell-job", help="the container is a shell job"),
    Flag("file-locks", help="restore file locks"),
    Flag("manage-cgroups-mode", value=True, help="soft, full, strict or ignore"),
    Flag("empty-ns", value=True, repeat=True, help="namespace left empty at dump"),
    Flag("auto-dedup", help="deduplicate parent images"),
    Flag("lazy-pages", help="pages come later from a page server"),
    Flag("page-server", value=True, help="with --lazy-pages: ADDRESS:PORT of the source's "
                                         "page server; migrate starts `criu lazy-pages`"),
    Flag("lsm-profile", value=True, help="TYPE:NAME, e.g. selinux:label"),
    Flag("lsm-mount-context", value=True, help="SELinux mount context"),
]


def _choice(value, name: str, allowed) -> str | None:
    from migrate.errors import UsageError

    if value is not None and value not in allowed:
        raise UsageError(f"invalid --{name} {value!r}: use {', '.join(allowed)}")
    return value


def cgroup_mode(value: str | None):
    """--manage-cgroups-mode VALUE -> CgroupMode (None when not given). Raises UsageError."""
    from migrate.criu_rpc.options import CgroupMode

    if value is None:
        return None
    return CgroupMode[CGROUP_MODES[_choice(value, "manage-cgroups-mode", tuple(CGROUP_MODES))]]


def network_lock(value: str | None):
    """--network-lock VALUE -> NetworkLock (None when not given). Raises UsageError."""
    from migrate.criu_rpc.options import NetworkLock

    if value is None:
        return None
    return NetworkLock[NETWORK_LOCKS[_choice(value, "network-lock", tuple(NETWORK_LOCKS))]]


def empty_ns(values: list[str]) -> frozenset[str]:
    """--empty-ns network (repeatable) -> CRIU's names. Raises UsageError."""
    from migrate.errors import UsageError

    out = set()
    for value in values:
        if value not in EMPTY_NS:
            raise UsageError(f"invalid --empty-ns {value!r}: only network is supported (as in runc)")
        out.add(EMPTY_NS[value])
    return frozenset(out)


def checkpoint_cmd(ctx, argv: list[str]) -> int:
    from migrate.checkpoint.dump import checkpoint
    from migrate.checkpoint.options import CheckpointOptions

    a = parse("checkpoint", CHECKPOINT_FLAGS, argv, positional="CONTAINER_ID")
    images_dir = checkpoint(ctx, CheckpointOptions(
        id=a.positional[0], image_path=a.image_path, work_path=a.work_path,
        parent_path=a.parent_path, leave_running=a.leave_running,
        tcp_established=a.tcp_established, tcp_skip_in_flight=a.tcp_skip_in_flight,
        link_remap=a.link_remap, ext_unix_sk=a.ext_unix_sk, shell_job=a.shell_job,
        lazy_pages=a.lazy_pages,
        status_fd=_int_flag(a.status_fd, "status-fd") if a.status_fd is not None else None,
        page_server=a.page_server, file_locks=a.file_locks, pre_dump=a.pre_dump,
        manage_cgroups_mode=cgroup_mode(a.manage_cgroups_mode),
        empty_ns=empty_ns(a.empty_ns), skip_plain_netns=True,
        skip_masked_tmpfs=a.recreate_masked, auto_dedup=a.auto_dedup,
        network_lock=network_lock(a.network_lock)))
    if a.print_stats:
        from migrate.checkpoint.dump import read_dump_stats

        _print_stats(read_dump_stats(images_dir), _choice(a.format, "format", ("table", "json")))
    return 0


def _print_stats(stats: dict, fmt: str) -> None:
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(stats, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="CRIU dump statistics")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        shown = f"{value / 1000:.1f} ms" if key.endswith("_time") else str(value)
        table.add_row(key, shown)
    Console().print(table)



def restore_cmd(ctx, argv: list[str]) -> int:
    from migrate.checkpoint.options import RestoreOptions
    from migrate.checkpoint.restore import restore

    a = parse("restore", RESTORE_FLAGS, argv, positional="CONTAINER_ID")
    return restore(ctx, RestoreOptions(
        id=a.positional[0], image_path=a.image_path, work_path=a.work_path, bundle=a.bundle,
        detach=a.detach, pid_file=a.pid_file, console_socket=a.console_socket,
        no_subreaper=a.no_subreaper, no_pivot=a.no_pivot,
        tcp_established=a.tcp_established, tcp_close=a.tcp_close,
        ext_unix_sk=a.ext_unix_sk, shell_job=a.shell_job, file_locks=a.file_locks,
        manage_cgroups_mode=cgroup_mode(a.manage_cgroups_mode),
        empty_ns=empty_ns(a.empty_ns), auto_dedup=a.auto_dedup, lazy_pages=a.lazy_pages,
        page_server=a.page_server, lsm_profile=a.lsm_profile,
        lsm_mount_context=a.lsm_mount_context))
