"""inspect: what a checkpoint holds, as a rich tree or JSON."""

from __future__ import annotations

import json

import click

__all__ = ["inspect"]


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
