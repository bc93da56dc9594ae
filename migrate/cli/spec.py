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
    # As runc: a cgroup namespace only where the host is pure cgroup v2. On
    # v1/hybrid hosts tools (and runc's tests) read the host's cgroup paths
    # from /proc/self/cgroup inside the container, and add cgroupns themselves.
    data = default_spec(rootless=rootless,
                        cgroup_namespace=os.path.exists("/sys/fs/cgroup/cgroup.controllers"))
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode(), 0o644)
    return 0


@click.command(help="Print what this runtime supports, as JSON (like `runc features`).")
@click.pass_obj
def features(ctx) -> int:
    from migrate.runtime.features import runtime_features

    click.echo(json.dumps(runtime_features(), indent=2))
    return 0
