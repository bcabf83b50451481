"""``arena stack``: start, inspect and stop the embedded default (see :mod:`arena_ops.local.stack`)."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Annotated

import typer
from rich.table import Table

from arena_ops.cli.common import ConfigOpt, console, err_console
from arena_ops.cli.common import load as _load
from arena_ops.cli.common import short_path as _short

stack_app = typer.Typer(
    help="The production stack's parts on this machine: PostgreSQL, an S3 server, a two-node Ray cluster and Airflow.",
    no_args_is_help=True,
)


def _stack(ctx: typer.Context, config):  # -> Stack
    """The stack of --config (or $ARENA_CONFIG); without one, the stack running here, saying which config it is."""
    from pathlib import Path

    from arena_ops.local.stack import Stack, StackError, running_config

    path = config or ctx.obj["config"]
    if path is None:
        try:
            path = running_config()
        except StackError as exc:
            raise typer.BadParameter(str(exc)) from None
        err_console.print(f"[dim]the running stack's config: {_short(path)}[/dim]")
    return Stack(_load(ctx, Path(path)), Path(path))


def _table(stack) -> Table:
    table = Table("component", "pid", "address", "healthy", caption=f"logs: {_short(stack.logs)}/<component>.log")
    for c in stack.status():
        ok = "[green]yes[/green]" if c.healthy else ("[yellow]not yet[/yellow]" if c.pid else "[red]no[/red]")
        table.add_row(c.name, str(c.pid or "-"), c.address, ok)
    return table


@stack_app.command("up")
def stack_up(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Start whatever is not running and wait until every component is healthy (idempotent)."""
    stack = _stack(ctx, config)
    t0 = time.monotonic()
    took = stack.up(progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    console.print(_table(stack))
    console.print(f"stack up in {time.monotonic() - t0:.0f} s ({', '.join(f'{k} {v}s' for k, v in took.items())})")
    console.print(
        f"Airflow UI: {stack.airflow_url}  (user {_user()}, password in {_short(stack.airflow_home)}/passwords.json)"
    )
    console.print(f'A shell that uses the stack: eval "$({_arena()} --config {_short(stack.config_path)} stack env)"')
    console.print(f"Stop it: {_arena()} --config {_short(stack.config_path)} stack down")


@stack_app.command("status")
def stack_status(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Each component's pid, address and health; exit 1 unless all are healthy."""
    stack = _stack(ctx, config)
    console.print(_table(stack))
    if not all(c.healthy for c in stack.status()):
        raise typer.Exit(1)


@stack_app.command("down")
def stack_down(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Stop every component; fails if any process of the stack is left."""
    stack = _stack(ctx, config)
    left = stack.down()
    if left:
        err_console.print(f"[red]processes of the stack still running[/red]: {left}")
        raise typer.Exit(1)
    console.print(f"stack down: no process left; data kept in {stack.dir} (delete it to start afresh)")


@stack_app.command("logs")
def stack_logs(
    ctx: typer.Context,
    component: Annotated[str, typer.Argument(help="postgres, s3, ray-head, ray-worker, api-server, scheduler, …")],
    config: ConfigOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Last N lines.")] = 50,
) -> None:
    """The last lines of a component's log (the path is printed first)."""
    stack = _stack(ctx, config)
    names = [*stack.components(), "airflow-setup"]
    if component not in names:
        raise typer.BadParameter(f"unknown component {component!r}; one of {', '.join(names)}")
    err_console.print(f"[dim]{stack.log_path(component)}[/dim]")
    sys.stdout.write(stack.tail(component, lines) + "\n")


@stack_app.command("env")
def stack_env(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Shell exports for using the stack from a terminal: eval "$(arena stack env)". Prints the S3 credentials."""
    stack = _stack(ctx, config)
    for key, value in stack.client_env().items():
        sys.stdout.write(f"export {key}={shlex.quote(value)}\n")
    sys.stdout.write(f'export PATH={shlex.quote(str(_venv_bin()))}:"$PATH"\n')


def _venv_bin():
    from pathlib import Path

    return Path(sys.executable).parent


def _arena() -> str:
    """This ``arena``, as the user may type it from here (``.venv/bin/arena`` in a checkout)."""
    from pathlib import Path

    local = Path(".venv/bin/arena")
    if local.exists() and local.resolve() == (_venv_bin() / "arena").resolve():
        return str(local)
    return str(_venv_bin() / "arena")


def _user() -> str:
    from arena_ops.local.stack import AIRFLOW_USER

    return AIRFLOW_USER
