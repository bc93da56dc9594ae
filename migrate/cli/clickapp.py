"""Running one click command with the already-parsed RuntimeContext."""

from __future__ import annotations

__all__ = ["run_click", "help_page"]


def run_click(name: str, command, ctx, argv: list[str]) -> int:
    import click

    try:
        rv = command.main(args=argv, prog_name=f"migrate {name}", obj=ctx,
                          standalone_mode=False)
    except click.exceptions.NoSuchOption as err:
        return _usage(err, ctx)
    except click.exceptions.BadOptionUsage as err:
        # urfave/cli's wording, which Podman probes for (restore --lsm-mount-context).
        if "requires an argument" in str(err.message):
            err.message = f"flag needs an argument: {err.option_name}"
        return _usage(err, ctx)
    except click.exceptions.Abort:
        return 130
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.ClickException as err:
        return _usage(err, ctx)
    return rv if isinstance(rv, int) else 0


def _usage(err, ctx) -> int:
    from migrate.cli.logs import report_error

    report_error(err.format_message(), ctx.log)
    return 2


def help_page(name: str, command) -> str:
    """The command's page in runc's layout (cli/help.py), from its click options."""
    from migrate.cli.help import command_page

    options = []
    for param in command.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        suffix = "" if param.is_flag else " value"
        names = ", ".join(n + suffix for n in sorted(param.opts, key=lambda n: -len(n)))
        options.append((names, param.help or ""))
    return command_page(name, options)
