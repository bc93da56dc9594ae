"""spec and features."""

from __future__ import annotations

import json
import os

import click

__all__ = ["spec", "features"]


@click.command(help="Write a starting config.json into the bundle.")
@click.option("--bundle", "-b", default=".", help="bundle directory")
@click.option("--rootless", is_flag=True, help="a config for a non-root user")
@click.pass_obj
def spec(ctx, bundle: str, rootless: bool) -> int:
    from migrate.errors import ExistsError, NotFoundError
    from migrate.oci import default_spec
    from migrate.runtime.state import atomic_write

    if not os.path.isdir(bundle):
        raise NotFoundError(f"bundle {bundle} does not exist")
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise ExistsError(f"{path} already exists: remove it first")
    # A cgroup namespace only on a pure cgroup v2 host, as runc 1.1 and 1.2
    # do: on v1 or hybrid hosts tools add one themselves (runc's own tests
    # do, and a duplicate namespace is an error).
    pure_v2 = os.path.exists(os.path.join(ctx.cgroup_root, "cgroup.controllers"))
    data = default_spec(rootless=rootless, cgroup_namespace=pure_v2)
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode(), 0o644)
    return 0


@click.command(help="Print what this runtime supports, as JSON (like `runc features`).")
@click.pass_obj
def features(ctx) -> int:
    from migrate.runtime.features import runtime_features

    click.echo(json.dumps(runtime_features(), indent=2))
    return 0
