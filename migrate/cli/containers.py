"""list, ps, pause, resume."""

from __future__ import annotations

import json

import click

__all__ = ["list_cmd", "ps", "pause", "resume"]


@click.command("list", help="List containers.")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--quiet", "-q", is_flag=True, help="only IDs")
@click.pass_obj
def list_cmd(ctx, fmt: str, quiet: bool) -> int:
    from migrate.runtime.lifecycle.query import list_containers

    items = list_containers(ctx)
    if quiet:
        for c in items:
            click.echo(c.id)
        return 0
    if fmt == "json":
        # runc's containerState, as Go's json.Encoder writes it: compact, this
        # key order, annotations left out when empty, and "null" for no containers.
        docs = []
        for c in items:
            doc = {"ociVersion": c.oci_version or "1.0.2", "id": c.id, "pid": c.pid,
                   "status": c.status, "bundle": c.bundle, "rootfs": c.rootfs,
                   "created": c.created}
            if c.annotations:
                doc["annotations"] = c.annotations
            doc["owner"] = c.owner
            docs.append(doc)
        click.echo(json.dumps(docs or None, separators=(",", ":"), ensure_ascii=False))
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(c.id, str(c.pid), c.status, c.bundle, c.created, c.owner) for c in items]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


@click.command(help="Show the processes of a container (ps arguments after the ID).",
               context_settings={"ignore_unknown_options": True})
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("container_id")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def ps(ctx, fmt: str, container_id: str, ps_args: tuple[str, ...]) -> int:
    from migrate.runtime.lifecycle.query import container_pids, ps as run_ps

    if fmt == "json":
        # Go encodes runc's empty (nil) pid list as null.
        click.echo(json.dumps(container_pids(ctx, container_id) or None))
        return 0
    click.echo(run_ps(ctx, container_id, list(ps_args)))
    return 0


@click.command(help="Freeze every process of a container.")
@click.argument("container_id")
@click.pass_obj
def pause(ctx, container_id: str) -> int:
    from migrate.runtime.lifecycle.pause import pause as do_pause

    do_pause(ctx, container_id)
    return 0


@click.command(help="Thaw a paused container.")
@click.argument("container_id")
@click.pass_obj
def resume(ctx, container_id: str) -> int:
    from migrate.runtime.lifecycle.pause import resume as do_resume

    do_resume(ctx, container_id)
    return 0
