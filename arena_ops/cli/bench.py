"""``arena bench``: rate any set of the config's models on a test set or a prompt file (WizardArena as a benchmark)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from arena_ops.cli.common import ConfigOpt, console, err_console, load

bench_app = typer.Typer(
    help="Rate any set of the config's models on a test set or prompt file (WizardArena as a benchmark).",
    no_args_is_help=True,
)

JsonOpt = Annotated[
    bool,
    typer.Option("--json", help='Print the summary as JSON: {"models", "battles", "board": [{model, rating, …}], …}.'),
]
ReferenceOpt = Annotated[
    Path | None,
    typer.Option(help="A reference board (e.g. the LMSYS arena's CSV): also print the paper's Table 2 row."),
]
RenameOpt = Annotated[Path | None, typer.Option(help="JSON map: name in the reference board → the model's name here.")]


@bench_app.command("run")
def bench_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The benchmark's name (its folder in the store).")],
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated model names of the config (models.target, models.competitors); default: the "
            "config's benchmarks entry NAME."
        ),
    ] = None,
    config: ConfigOpt = None,
    prompts: Annotated[
        Path | None, typer.Option(help="A prompt file (JSONL/JSON/CSV/Parquet; MT-Bench, ShareGPT, Alpaca …).")
    ] = None,
    testset: Annotated[
        str | None, typer.Option(help="A committed test set of the flywheel: mix, diverse, hard.")
    ] = None,
    pairing: Annotated[
        str | None,
        typer.Option(help="all (every pair, the paper; the default), budget (pairs per prompt), anchor (each vs one)."),
    ] = None,
    pairs_per_prompt: Annotated[
        int | None, typer.Option(help="Pairs per prompt under --pairing budget (default battle.pairs_per_prompt).")
    ] = None,
    anchor_model: Annotated[
        str | None, typer.Option(help="The model everyone battles under --pairing anchor (default: the first).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use the first N prompts (by prompt id).", min=1)] = None,
    reference: ReferenceOpt = None,
    rename_reference: RenameOpt = None,
    as_json: JsonOpt = False,
    plots: Annotated[bool, typer.Option(help="Also write PNG plots of each board.")] = True,
) -> None:
    """Battle what is not stored yet (all pairs by default), rate, and print the board."""
    from arena_ops.bench import BenchRequest, run_bench
    from arena_ops.cli.stages import _progress

    cfg = load(ctx, config)
    req = BenchRequest.declared(
        cfg,
        name,
        models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
        testset=testset,
        prompts=str(prompts.resolve()) if prompts else None,
        pairing=pairing,
        pairs_per_prompt=pairs_per_prompt,
        anchor_model=anchor_model,
        limit=limit,
    )
    with _progress(err_console if as_json else None) as progress:
        summary = run_bench(cfg, req, progress, plots=plots)
    _print(cfg, summary, as_json, reference, rename_reference)


@bench_app.command("show")
def bench_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The benchmark's name.")],
    config: ConfigOpt = None,
    reference: ReferenceOpt = None,
    rename_reference: RenameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The benchmark's board, its Table 1 and (with --reference) its Table 2 row."""
    from arena_ops.bench import show
    from arena_ops.store import ArtifactStore

    cfg = load(ctx, config)
    _print(cfg, show(cfg, ArtifactStore.from_config(cfg.storage), name), as_json, reference, rename_reference)


@bench_app.command("list")
def bench_list(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """The flywheel's benchmarks: models, prompts, battles."""
    from arena_ops.bench import names, show
    from arena_ops.store import ArtifactStore

    cfg = load(ctx, config)
    store = ArtifactStore.from_config(cfg.storage)
    table = Table("benchmark", "source", "pairing", "models", "battles", title=f"benchmarks of {cfg.flywheel}")
    for n in names(store, cfg.flywheel):
        s = show(cfg, store, n)
        source = ", ".join(f"{k} {v}" for k, v in s["source"].items())
        table.add_row(n, source, s["pairing"], ", ".join(s["models"]), str(s["battles"]))
    console.print(table)


def _print(
    cfg: Any, summary: dict[str, Any], as_json: bool, reference: Path | None, rename_reference: Path | None
) -> None:
    if reference is not None:
        from arena_ops.bench import consistency_with
        from arena_ops.store import ArtifactStore

        store = ArtifactStore.from_config(cfg.storage)
        summary = {
            **summary,
            "consistency": consistency_with(cfg, store, summary["name"], str(reference), _name_map(rename_reference)),
        }
    if as_json:
        sys.stdout.write(json.dumps(_finite(summary), indent=2, allow_nan=False) + "\n")
        return
    run = summary.get("last_run") or {}
    what = (
        "nothing new: every battle was stored"
        if run.get("reused")
        else f"{run.get('generated', 0)} answers generated, {run.get('judged_games', 0)} games judged"
    )
    console.print(
        f"benchmark {summary['name']}: {summary['battles']} battles on {summary['prompts']} prompts, "
        f"{summary['invalid']} invalid; this run: {what}"
    )
    table = Table("rank", "model", "Elo", "95% CI", "W / L / T", "battles")
    for r in summary["board"]:
        table.add_row(
            str(r["rank"]),
            r["model"] + (" (provisional)" if r["provisional"] else ""),
            f"{r['rating']:.1f}",
            f"{r['ci_low']:.1f} – {r['ci_high']:.1f}",
            f"{r['wins']} / {r['losses']} / {r['ties']}",
            str(r["battles"]),
        )
    console.print(table)
    console.print("\nTable 1 (Elo, 95% CI):\n")
    sys.stdout.write(summary["table1"]["markdown"])
    for part, board in {**summary.get("boards", {}), **summary.get("categories", {})}.items():
        if isinstance(board, dict) and "error" in board:
            err_console.print(f"[yellow]{part}: not rated: {board['error']}[/yellow]")
    if "consistency" in summary:
        from arena_ops.rating.consistency import table2_header

        c = summary["consistency"]
        sys.stdout.write(f"\nTable 2 against {c['reference']} ({c['models']} shared models; paper's scale):\n\n")
        sys.stdout.write(table2_header() + "\n" + c["table2"]["paper"] + "\n")
        sys.stdout.write(f"\n(Arena-Hard notebook's scale:)\n\n{table2_header()}\n{c['table2']['arena-hard']}\n")
    scopes = ", ".join(summary["scopes"])
    console.print(f"\nboards in the Arena view as {scopes}; battles: {summary['battle_table']}")


def _name_map(p: Path | None) -> dict[str, str] | None:
    from arena_ops.errors import RatingError

    if p is None:
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RatingError(f"{p}: cannot read a name map: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise RatingError(f"{p}: a name map is a JSON object of strings, {{name in the file: shared name}}")
    return data


def _finite(obj: Any) -> Any:
    """Strict JSON: an undefined metric (NaN) is null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
