"""migrate (the source side) and receive (the destination agent)."""

from __future__ import annotations

import os

import click

from migrate.migration.strategy import AUTO, Strategy

__all__ = ["migrate_cmd", "receive", "parse_hostport", "read_token"]

TOKEN_ENV = "MIGRATE_TOKEN"
# --strategy's spellings, from the enum (parse_strategy turns one into it).
STRATEGY_NAMES = [AUTO, *(s.value for s in Strategy)]


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    """"host:port" or "[v6 address]:port". Raises ``UsageError``."""
    from migrate.errors import UsageError

    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f'{what}: "{text}" is not HOST:PORT')
    return host, int(port)


def read_token(token: str | None, token_file: str | None) -> bytes:
    """--token, else --token-file, else $MIGRATE_TOKEN. Raises ``UsageError``."""
    from migrate.errors import UsageError

    if token:
        return token.encode()
    if token_file:
        try:
            with open(token_file, "rb") as f:
                data = f.read().strip()
        except OSError as err:
            raise UsageError(f"cannot read the token file {token_file}: {err.strerror}") from err
        if not data:
            raise UsageError(f"the token file {token_file} is empty")
        return data
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env.encode()
    raise UsageError(f"a shared token is needed: --token, --token-file or ${TOKEN_ENV}")


def _tls(cert, key, ca, server_name=None):
    from migrate.migration import TlsConfig

    if not (cert or key or ca):
        return None
    return TlsConfig(cert=cert, key=key, ca=ca, server_name=server_name)


def _policy(value: str):
    from migrate.migration import CriuPolicy

    return CriuPolicy(value)


_token_options = [
    click.option("--token", help=f"shared secret (visible in ps: prefer --token-file or ${TOKEN_ENV})"),
    click.option("--token-file", type=click.Path(dir_okay=False), help="file holding the shared secret"),
    click.option("--tls-cert", type=click.Path(dir_okay=False), help="TLS certificate (PEM)"),
    click.option("--tls-key", type=click.Path(dir_okay=False), help="key of --tls-cert (PEM)"),
    click.option("--tls-ca", type=click.Path(dir_okay=False),
                 help="CA that signs the peer's certificate"),
    click.option("--criu-policy", type=click.Choice(["not-older", "same", "any"]),
                 default="not-older", show_default=True,
                 help="which CRIU versions may meet (destination's vs source's)"),
]


def _with_token_options(f):
    for option in reversed(_token_options):
        f = option(f)
    return f


@click.command("migrate", help="Move a running container to another host, where "
               "`migrate receive` runs.")
@click.argument("container_id")
@click.option("--to", "to", required=True, metavar="HOST:PORT", help="the destination agent")
@click.option("--strategy", type=click.Choice(STRATEGY_NAMES), default=AUTO, show_default=True)
@click.option("--rootfs", type=click.Choice(["shared", "copy"]), default="shared",
              show_default=True, help="the destination sees the same path, or gets a copy")
@click.option("--compress/--no-compress", default=True, show_default=True,
              help="zstd on the wire, if both hosts have it")
@click.option("--keep-source", is_flag=True, help="leave the source container running too")
@click.option("--tcp-established", is_flag=True, help="move established TCP connections")
@click.option("--file-locks", is_flag=True, help="move file locks")
@click.option("--max-iterations", type=int, default=8, show_default=True,
              help="pre-copy: at most this many pre-dump rounds")
@click.option("--min-pages", type=int, default=64, show_default=True,
              help="pre-copy: stop when a round writes fewer pages")
@click.option("--min-shrink", type=int, default=10, show_default=True,
              help="pre-copy: stop when a round shrinks by less than this percentage")
@click.option("--min-iterations", type=int, default=1, show_default=True,
              help="pre-copy: at least this many rounds, whatever the stop rules say")
@click.option("--raise-pipe-max-size", is_flag=True,
              help="raise fs.pipe-max-size to 4 MiB while migrating, so post-copy's lazy dump "
                   "works without CAP_SYS_RESOURCE; put back after (meanwhile any process may "
                   "grow its pipes that far)")
@click.option("--tls-server-name", help="name to verify in the agent's certificate")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="write the migration report (JSON) here")
@click.option("--quiet", "-q", is_flag=True, help="no progress bars or report table")
@_with_token_options
@click.pass_obj
def migrate_cmd(ctx, container_id, to, strategy, rootfs, compress, keep_source, tcp_established,
                file_locks, max_iterations, min_pages, min_shrink, min_iterations,
                raise_pipe_max_size,
                tls_server_name, report_path,
                quiet, token, token_file, tls_cert, tls_key, tls_ca, criu_policy) -> int:
    from migrate.migration.pipeline import MigrateOptions, migrate_container
    from migrate.migration.strategy import PreCopyPolicy, parse_strategy

    host, port = parse_hostport(to, "--to")
    opts = MigrateOptions(
        container_id=container_id, host=host, port=port, token=read_token(token, token_file),
        strategy=parse_strategy(strategy), rootfs=rootfs, compress=compress, keep_source=keep_source,
        tls=_tls(tls_cert, tls_key, tls_ca, tls_server_name), criu_policy=_policy(criu_policy),
        precopy=PreCopyPolicy(max_iterations=max_iterations, min_pages=min_pages,
                              min_shrink_percent=min_shrink, min_iterations=min_iterations),
        tcp_established=tcp_established, file_locks=file_locks,
        raise_pipe_max_size=raise_pipe_max_size)
    progress = None
    console = None
    if not quiet:
        from rich.console import Console

        from migrate.migration import RichProgress

        console = Console(stderr=True)
        progress = RichProgress(console)
    report = None
    try:
        report = migrate_container(ctx, opts, progress=progress)
    except Exception as err:
        if report_path:
            from migrate.migration import MigrationReport

            failed = MigrationReport(container_id=container_id, destination=to, strategy=strategy)
            failed.error = str(err)
            failed.write_json(report_path)
        raise
    if report_path:
        report.write_json(report_path)
    if console is not None:
        console.print(report.table())       # its strategy row says why
    return 0


@click.command(help="Receive migrated containers (the destination agent).")
@click.option("--listen", required=True, metavar="ADDR:PORT", help="address to listen on")
@click.option("--root", "state_root", help="state directory of restored containers "
              "(default: the global --root)")
@click.option("--work-dir", help="where incoming images and rootfs go "
              "(default /var/lib/migrate/incoming)")
@click.option("--once", is_flag=True, help="exit after one migration (that passed the handshake)")
@click.option("--compress/--no-compress", default=True, show_default=True,
              help="accept zstd from sources that offer it")
@_with_token_options
@click.pass_obj
def receive(ctx, listen, state_root, work_dir, once, compress, token, token_file, tls_cert,
            tls_key, tls_ca, criu_policy) -> int:
    import signal
    import threading

    from migrate.migration import Agent, CriuHostFacts

    addr, port = parse_hostport(listen, "--listen")
    secret = read_token(token, token_file)
    tls = _tls(tls_cert, tls_key, tls_ca)
    if tls is not None and tls.cert is None:
        from migrate.errors import UsageError

        raise UsageError("the agent's TLS needs --tls-cert and --tls-key")
    stop = threading.Event()

    def on_event(event) -> None:
        who = f" {event.container_id}" if event.container_id else ""
        click.echo(f"receive: {event.kind}{who} {event.peer} {event.message}".rstrip(), err=True)

    from migrate import _record
    from migrate.migration import destination

    dest_ctx = _record.replace(ctx, root=os.path.abspath(state_root)) if state_root else ctx
    destination.warm_up()
    agent = Agent(addr, port, secret, dest_ctx.root, restore_fn=_restore_fn(dest_ctx),
                  controls=destination.controls(dest_ctx),
                  work_root=work_dir, tls=tls, facts=CriuHostFacts(ctx.criu),
                  criu_policy=_policy(criu_policy), compression=None if compress else (),
                  on_event=on_event)
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        outcomes = agent.serve(stop=stop, max_migrations=1 if once else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
        agent.close()
        from migrate.checkpoint.restore import wait_for_lazy_pages

        # A post-copy container still pulls its memory: its watch (which
        # kills it should the pull fail) lives in this process.
        wait_for_lazy_pages()
    return 1 if once and outcomes and not outcomes[-1].succeeded else 0


def _restore_fn(ctx):
    import functools

    from migrate.migration.destination import restore_for_migration

    return functools.partial(restore_for_migration, ctx)
