"""Shared pieces of the ``arena`` command's modules: consoles, the --config option, config loading."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from arena_ops.config import ArenaConfig

console = Console()
err_console = Console(stderr=True)

# The global option reads $ARENA_CONFIG; a command's own --config does not: an environment variable must never
# override a --config given on the command line (`arena --config b.yaml data testset` with ARENA_CONFIG=a.yaml set by
# `arena stack env` runs on b.yaml).
GlobalConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", metavar="PATH", help="Config YAML (default: $ARENA_CONFIG).", envvar="ARENA_CONFIG"),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", metavar="PATH", help="Config YAML (default: the global --config, $ARENA_CONFIG)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a key: --set battle.sample_limit=8 (repeatable; value parsed as YAML).",
    ),
]


def load(ctx: typer.Context, path: Path | None = None) -> ArenaConfig:
    from arena_ops.config import load_config, parse_override

    path = path or ctx.obj["config"]
    if path is None:
        raise typer.BadParameter("no config given: pass --config PATH (or set ARENA_CONFIG)")
    overrides = dict(parse_override(s) for s in ctx.obj["set"])
    return load_config(path, overrides)


def short_path(path: str | Path) -> str:
    """A path as the user may type it from here (relative to the working directory when it lies under it)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
