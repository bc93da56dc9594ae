"""checkpoint, restore, inspect."""

from __future__ import annotations

import json

import click

__all__ = ["checkpoint", "restore", "inspect"]

_CG_MODES = click.Choice(["soft", "full", "strict", "ignore"])


@click.command(help="Checkpoint a running container with CRIU.")
@click.option("--image-path", default="checkpoint", show_default=True, help="where images go")
@click.option("--work-path", help="where CRIU's log and work files go (default: image path)")
@click.option("--parent-path", help="a previous pre-dump, relative to the image path")
@click.option("--leave-running", is_flag=True, multiple=True, help="keep the container running")
@click.option("--tcp-established", is_flag=True, multiple=True, help="dump open TCP connections")
@click.option("--tcp-skip-in-flight", is_flag=True, help="skip in-flight TCP connections")
@click.option("--link-remap", is_flag=True, help="allow linked-but-deleted files")
@click.option("--ext-unix-sk", is_flag=True, multiple=True, help="allow external unix sockets")
@click.option("--shell-job", is_flag=True, help="the container is a shell job")
@click.option("--lazy-pages", is_flag=True, help="leave memory to be pulled (post-copy)")
@click.option("--status-fd", type=int, help="fd that gets \\0 when the lazy page server is ready")
@click.option("--page-server", help="ADDRESS:PORT of a CRIU page server")
@click.option("--file-locks", is_flag=True, multiple=True, help="dump file locks")
@click.option("--pre-dump", is_flag=True, help="dump memory only, keep running")
@click.option("--manage-cgroups-mode", type=_CG_MODES, help="CRIU cgroup mode")
@click.option("--empty-ns", multiple=True, help="namespace to leave empty (network)")
@click.option("--auto-dedup", is_flag=True, help="deduplicate parent images")
@click.option("--network-lock", type=click.Choice(["iptables", "nftables", "skip"]),
              help="how CRIU locks the network during the dump")
@click.option("--print-stats", is_flag=True, help="print CRIU's dump statistics")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              help="format of --print-stats")
@click.argument("container_id")
@click.pass_obj
def checkpoint(ctx, container_id, image_path, work_path, parent_path, leave_running,
               tcp_established, tcp_skip_in_flight, link_remap, ext_unix_sk, shell_job,
               lazy_pages, status_fd, page_server, file_locks, pre_dump, manage_cgroups_mode,
               empty_ns, auto_dedup, network_lock, print_stats, fmt) -> int:
    from migrate.checkpoint.dump import checkpoint as do_checkpoint
    from migrate.checkpoint.options import CheckpointOptions

    images_dir = do_checkpoint(ctx, CheckpointOptions(
        id=container_id, image_path=image_path, work_path=work_path, parent_path=parent_path,
        leave_running=bool(leave_running), tcp_established=bool(tcp_established),
        tcp_skip_in_flight=tcp_skip_in_flight, link_remap=link_remap,
        ext_unix_sk=bool(ext_unix_sk), shell_job=shell_job, lazy_pages=lazy_pages,
        status_fd=status_fd, page_server=page_server, file_locks=bool(file_locks),
        pre_dump=pre_dump, manage_cgroups_mode=manage_cgroups_mode, empty_ns=tuple(empty_ns),
        auto_dedup=auto_dedup, network_lock=network_lock))
    if print_stats:
        from migrate.checkpoint.dump import read_dump_stats

        _print_stats(read_dump_stats(images_dir), fmt)
    return 0


def _print_stats(stats: dict, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(stats, indent=2))
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


@click.command(help="Restore a container from a checkpoint.")
@click.option("--image-path", default="checkpoint", show_default=True)
@click.option("--work-path")
@click.option("--bundle", "-b", default=".", help="bundle of the restored container")
@click.option("--detach", "-d", is_flag=True, help="do not wait for the container")
@click.option("--pid-file")
@click.option("--console-socket")
@click.option("--no-subreaper", is_flag=True)
@click.option("--no-pivot", is_flag=True)
@click.option("--tcp-established", is_flag=True, multiple=True)
@click.option("--tcp-close", is_flag=True)
@click.option("--ext-unix-sk", is_flag=True, multiple=True)
@click.option("--shell-job", is_flag=True)
@click.option("--file-locks", is_flag=True, multiple=True)
@click.option("--manage-cgroups-mode", type=_CG_MODES)
@click.option("--empty-ns", multiple=True)
@click.option("--auto-dedup", is_flag=True)
@click.option("--lazy-pages", is_flag=True, help="pages come later from a page server")
@click.option("--page-server", help="with --lazy-pages: ADDRESS:PORT of the source's page "
                                    "server; migrate starts `criu lazy-pages` itself")
@click.option("--lsm-profile", help="TYPE:NAME, e.g. selinux:label")
@click.option("--lsm-mount-context", help="SELinux mount context")
@click.argument("container_id")
@click.pass_obj
def restore(ctx, container_id, image_path, work_path, bundle, detach, pid_file, console_socket,
            no_subreaper, no_pivot, tcp_established, tcp_close, ext_unix_sk, shell_job,
            file_locks, manage_cgroups_mode, empty_ns, auto_dedup, lazy_pages, page_server,
            lsm_profile, lsm_mount_context) -> int:
    from migrate.checkpoint.options import RestoreOptions
    from migrate.checkpoint.restore import restore as do_restore

    return do_restore(ctx, RestoreOptions(
        id=container_id, image_path=image_path, work_path=work_path, bundle=bundle,
        detach=detach, pid_file=pid_file, console_socket=console_socket,
        no_subreaper=no_subreaper, no_pivot=no_pivot,
        tcp_established=bool(tcp_established), tcp_close=tcp_close,
        ext_unix_sk=bool(ext_unix_sk), shell_job=shell_job, file_locks=bool(file_locks),
        manage_cgroups_mode=manage_cgroups_mode, empty_ns=tuple(empty_ns),
        auto_dedup=auto_dedup, lazy_pages=lazy_pages, page_server=page_server,
        lsm_profile=lsm_profile, lsm_mount_context=lsm_mount_context))


@click.command(help="Show what a checkpoint holds.")
@click.option("--format", "fmt", type=click.Choice(["tree", "json"]), default="tree")
@click.argument("image_dir")
@click.pass_obj
def inspect(ctx, image_dir, fmt) -> int:
    from migrate.checkpoint.inspect import inspect_checkpoint

    info = inspect_checkpoint(image_dir)
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return 0
    from rich.console import Console

    Console().print(_tree(info))
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def _tree(info: dict):
    from rich.tree import Tree

    c = info.get("container") or {}
    root = Tree(f"[bold]checkpoint[/] {info['image_dir']}"
                + (f"  container [bold]{c['id']}[/]" if c.get("id") else ""))
    root.add(f"memory dumped {_size(info['memory_dumped'])}, images {_size(info['image_size'])}")
    procs = root.add("processes")
    children: dict[int, list] = {}
    for p in info["processes"]:
        children.setdefault(p["ppid"], []).append(p)
    pids = {p["pid"] for p in info["processes"]}

    def add(node, p):
        sub = node.add(f"{p['pid']} [bold]{p['comm']}[/] ({_size(p['memory_dumped'])} dumped, "
                       f"{p['threads']} thread(s))")
        for child in children.get(p["pid"], []):
            add(sub, child)

    for p in info["processes"]:
        if p["ppid"] not in pids:
            add(procs, p)
    if info["files"]:
        files = root.add(f"open files ({len(info['files'])})")
        for f in info["files"][:50]:
            files.add(str(f["path"]))
    if info["sockets"]:
        socks = root.add(f"sockets ({len(info['sockets'])})")
        for s in info["sockets"]:
            socks.add(f"{s['type']} {s.get('state') or ''} {s.get('src') or s.get('name') or ''}"
                      f"{':' + str(s['src_port']) if s.get('src_port') else ''}")
    if info["mounts"]:
        mounts = root.add(f"mounts ({len(info['mounts'])})")
        for m in info["mounts"]:
            ext = f" [dim](external {m['external']})[/]" if m.get("external") else ""
            mounts.add(f"{m['mountpoint']} {m['fstype']}{ext}")
    if info["stats"]:
        stats = root.add("CRIU statistics")
        for k, v in info["stats"].items():
            stats.add(f"{k}: {v}")
    return root
