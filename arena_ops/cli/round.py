"""``arena round …``: whole rounds without Airflow, and what a round did."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from arena_ops.cli.common import ConfigOpt, console, load
from arena_ops.cli.stages import _overrides, _progress, _store

round_app = typer.Typer(
    help="Rounds: run a whole iteration (the DAG's tasks, in order), show one.", no_args_is_help=True
)


@round_app.command("run")
def round_run(
    ctx: typer.Context,
    config: ConfigOpt = None,
    iteration: Annotated[
        int | None, typer.Option("--iteration", "-i", help="Iteration; default: the unfinished or next one.")
    ] = None,
    steps: Annotated[
        str | None, typer.Option("--steps", help="Policy stages, comma-separated (sft,dpo,rl); default: the config's.")
    ] = None,
    iterations: Annotated[
        int, typer.Option("--iterations", "-n", help="Run this many iterations, one after another.")
    ] = 1,
) -> None:
    """Resolve and run a whole round: battles before every stage, training, evaluation on the test set, report.
    Resumable: a rerun does only what is missing. Serves what it needs (and says so)."""
    from arena_ops.flywheel import run_round

    path = str(config or ctx.obj["config"] or "")
    if not path:
        raise typer.BadParameter("no config given: pass --config PATH (or set ARENA_CONFIG)")
    policies = [s.strip() for s in steps.split(",") if s.strip()] if steps else None
    for n in range(iterations):
        it = None if iteration is None else iteration + n
        with _progress() as progress:
            out = run_round(path, it, policies, say=console.print, progress=progress, overrides=_overrides(ctx))
        console.print(f"round {out['iteration']} done in {out['wall_s']:.0f}s; report: {out['uri']}/report.md")
        _show(ctx, config, out["iteration"], as_json=False)
    console.print(f"The models stay served for the next round; stop them with: arena --config {path} serve down")


@round_app.command("show")
def round_show(
    ctx: typer.Context,
    iteration: Annotated[int, typer.Argument(help="Iteration.")],
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object (iteration, steps, …).")] = False,
) -> None:
    """The round record and its progress: which model battled each step, its battles, rows and produced models."""
    _show(ctx, config, iteration, as_json)


def _show(ctx: typer.Context, config, iteration: int, as_json: bool) -> None:  # noqa: ANN001
    from arena_ops.flywheel import round_status
    from arena_ops.round import Round

    cfg = load(ctx, config)
    store = _store(cfg)
    status = round_status(Round.load(store, cfg.flywheel, iteration), store)
    if as_json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return
    start = status["start"] or {}
    table = Table(title=f"round {iteration} of {cfg.flywheel} ({status['schedule']}; start {start.get('label')})")
    for col in ("step", "slice", "battled model", "battles", "training rows", "produced"):
        table.add_column(col, overflow="fold")
    for st in status["steps"]:
        table.add_row(
            st["stage"],
            str(st["slice"]),
            st["battled_label"] or "—",
            str((st["battles"] or {}).get("count", "—")),
            ", ".join(f"{k} {v}" for k, v in st["training_rows"].items()),
            ", ".join(f"{k}: {p['label'] or p['reason']}" for k, p in st["produced"].items()),
        )
    console.print(table)
    c = status.get("canary")
    if c:
        verdict = "gate breached: " + "; ".join(c["breaches"]) if c["breaches"] else "passed"
        console.print(
            f"judge canary: agreement {c['agreement']}, position flips {c['position_flips']}, drift {c['drift']} "
            f"({c['judged_pairs']} of {c['pairs']} pairs, judge {c['judge']}) — {verdict}"
        )
    p = status.get("promotion")
    if p:
        if (p.get("approval") or {}).get("status") == "pending":
            console.print(
                f"promotion waits for approval (proposed: {p['decision']}, {p['chosen']['label']}): {p['reason']}\n"
                f"answer: arena round approve {iteration} --promote (or --keep)"
            )
        else:
            console.print(f"next iteration starts from {p['chosen']['label']} ({p['decision']}): {p['reason']}")
    led = status.get("ledger")
    if led:
        t = led["totals"]
        per_1k = led["cost_per_1k_judgments"]
        console.print(
            f"cost: {led['cost']:.4f} {led['currency']} ({t['prompt_tokens']} tokens in, {t['completion_tokens']} out, "
            f"{t['judgments']} judgments"
            + (f", {per_1k:.4f} per 1k" if per_1k is not None else "")
            + f"; {t['wall_s']:.0f} s wall, {t['cpu_s']:.0f} s CPU"
            + (f", {t['gpu_s']:.0f} s GPU" if t["gpu_s"] else "")
            + ")"
        )


@round_app.command("approve")
def round_approve(
    ctx: typer.Context,
    iteration: Annotated[int, typer.Argument(help="The iteration whose promotion waits.")],
    promote: Annotated[
        bool | None,
        typer.Option("--promote/--keep", help="Promote the challenger, or keep the incumbent."),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who decides (default: $USER).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Answer a promotion that waits for approval (training.promotion.approval), as the round DAG's promotion_review
    task does: the next iteration starts from the model chosen here."""
    import getpass

    from arena_ops.flywheel import approve
    from arena_ops.promotion import KEEP, PROMOTE
    from arena_ops.round import Round

    if promote is None:
        raise typer.BadParameter("say --promote or --keep")
    cfg = load(ctx, config)
    store = _store(cfg)
    ref = Round.load(store, cfg.flywheel, iteration).ref()
    out = approve(ref, PROMOTE if promote else KEEP, by or getpass.getuser())
    console.print(f"iteration {iteration + 1} starts from {out['chosen']} ({out['decision']}, by {out['by']})")
