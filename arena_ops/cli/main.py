"""The ``arena`` command: one subcommand per stage, each a thin call into the library."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from arena_ops.cli.bench import bench_app
from arena_ops.cli.common import ConfigOpt, GlobalConfigOpt, SetOpt, console, err_console
from arena_ops.cli.common import load as _load
from arena_ops.cli.judge import judge_app
from arena_ops.cli.round import round_app
from arena_ops.cli.stack import stack_app
from arena_ops.cli.stages import battle_app, data_app, train_app
from arena_ops.errors import ArenaError, RatingError

app = typer.Typer(
    help="Arena Flywheel: post-train LLMs with a simulated chatbot arena.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Validate and document configuration files.", no_args_is_help=True)
store_app = typer.Typer(help="Inspect the artifact store.", no_args_is_help=True)
models_app = typer.Typer(help="Prepare model weights.", no_args_is_help=True)
serve_app = typer.Typer(
    help="Serve the configured models on Ray Serve (vLLM), outside Airflow too.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(store_app, name="store")
app.add_typer(models_app, name="models")
app.add_typer(serve_app, name="serve")
app.add_typer(data_app, name="data")
app.add_typer(battle_app, name="battle")
app.add_typer(train_app, name="train")
app.add_typer(round_app, name="round")
app.add_typer(stack_app, name="stack")
app.add_typer(bench_app, name="bench")
app.add_typer(judge_app, name="judge")


@app.callback()
def _root(
    ctx: typer.Context,
    config: GlobalConfigOpt = None,
    set_: SetOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # one INFO line per HTTP request would drown the progress bars
        logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx.obj = {"config": config, "set": set_ or []}


@config_app.command("check")
def config_check(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(help="Config YAML (default: the global --config).")] = None,
) -> None:
    """Validate a config and print the resolved config (defaults filled, paths absolute)."""
    cfg = _load(ctx, path)
    sys.stdout.write(cfg.to_yaml())
    err_console.print(f"[green]ok[/green]: {path or ctx.obj['config']} is a valid config for flywheel {cfg.flywheel!r}")


@config_app.command("reference")
def config_reference() -> None:
    """Print the config reference as a Markdown table (the README embeds it)."""
    from arena_ops.config_reference import config_reference_markdown

    sys.stdout.write(config_reference_markdown())


@store_app.command("ls")
def store_ls(
    ctx: typer.Context,
    config: ConfigOpt = None,
    flywheel: Annotated[str | None, typer.Argument(help="Flywheel (default: the config's).")] = None,
) -> None:
    """List the iterations, stages and artifacts (with rows and commit state) of a flywheel."""
    from arena_ops import catalogue
    from arena_ops.errors import NotCommittedError
    from arena_ops.store import ArtifactStore

    cfg = _load(ctx, config)
    store = ArtifactStore.from_config(cfg.storage)
    flywheel = flywheel or cfg.flywheel
    table = Table(
        "iteration", "stage", "artifact", "rows", "files", "committed", "battled as", title=f"{store.uri}/{flywheel}"
    )
    # Battle tables with the label their target battled under: from the one catalogue every reader uses.
    labels = {t.key: t.label or "" for t in catalogue.battle_tables(store, flywheel)}

    def row(where: str, stage: str, name: str, prefix: str) -> None:
        try:
            m = store.manifest(prefix)
            table.add_row(where, stage, name, str(m.rows), str(len(m.files)), m.committed_at, labels.get(prefix, ""))
        except NotCommittedError:
            table.add_row(where, stage, name, "", "", "[red]no[/red]", "")

    for it in store.list_iterations(flywheel):
        for stage in store.list_stages(flywheel, it):
            base = f"{flywheel}/iter={it}/{stage}"
            if store.is_committed(base):  # an artifact at the stage itself: the round record
                row(str(it), stage, "-", base)
            for name in store.list_artifacts(flywheel, it, stage, committed_only=False):
                row(str(it), stage, name, f"{base}/{name}")
    for ts in store.list(f"{flywheel}/eval"):  # evaluations: outside the iterations (parts and battle tables)
        testset = ts.rstrip("/").rsplit("/", 1)[-1]
        for kind in (k for k in store.list(ts.rstrip("/")) if k.endswith("/")):
            prefix = kind.rstrip("/")
            for name in store.list_artifacts_at(prefix, committed_only=False):
                row("eval", f"{testset}/{prefix.rsplit('/', 1)[-1]}", name, f"{prefix}/{name}")
    console.print(table)


@models_app.command("build-tiny")
def models_build_tiny(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the model to.")],
    arch: Annotated[str, typer.Option(help="llama or qwen2.")] = "llama",
    seed: Annotated[int, typer.Option(help="Weights seed (different seeds = different models).")] = 0,
) -> None:
    """Build a tiny random chat model (BPE tokenizer, chat template) locally, without downloads."""
    from arena_ops.tiny_model import build_tiny_chat_model

    path = build_tiny_chat_model(out_dir, arch=arch, seed=seed)  # type: ignore[arg-type]
    console.print(f"wrote tiny {arch} model to {path}")


@serve_app.command("up")
def serve_up(
    ctx: typer.Context,
    config: ConfigOpt = None,
    target: Annotated[str | None, typer.Option(help="Serve the target from these weights instead.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait (default: serving.deploy_timeout_s).")] = None,
) -> None:
    """Start a local Ray head if none, deploy every served model, wait until ready, print the endpoint."""
    from arena_ops.serving.deploy import deploy

    cfg = _load(ctx, config)
    with console.status("deploying models on Ray Serve…"):
        done = deploy(cfg, target_path=target, timeout_s=timeout)
    _print_startup(done)
    console.print(
        f"[green]ready[/green] in {done.seconds:.0f} s: OpenAI-compatible endpoint {done.endpoint} (models: "
        f"{', '.join(m.name for m in _served(cfg))})"
    )
    sys.stdout.write(done.endpoint + "\n")


def _print_startup(done) -> None:  # done: serving.deploy.Deployment
    """Where each (re)deployed engine's start-up time went."""
    if not done.startup:
        return
    from rich.table import Table

    from arena_ops.serving.deploy import PHASES

    title = f"engine start-up, seconds per phase (after {done.cluster_s:.1f} s for Ray and Serve)"
    table = Table("model", *PHASES.values(), "total", title=title, title_justify="left")
    for model, phases in done.startup.items():
        table.add_row(model, *(f"{phases.get(p, 0):.1f}" for p in [*PHASES.values(), "total"]))
    console.print(table)


@serve_app.command("update-target")
def serve_update_target(
    ctx: typer.Context,
    weights: Annotated[str, typer.Argument(help="Directory (or s3:// prefix) of the new target weights.")],
    config: ConfigOpt = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait.")] = None,
) -> None:
    """Redeploy only the target with new weights; the competitors and judge keep serving."""
    from arena_ops.serving.deploy import update_target

    cfg = _load(ctx, config)
    done = update_target(cfg, weights, timeout_s=timeout)
    _print_startup(done)
    console.print(
        f"[green]ready[/green] in {done.seconds:.0f} s: {cfg.models.target.name} now serves {weights} "
        f"(redeployed: {', '.join(done.deployed) or 'nothing, already serving it'})"
    )


@serve_app.command("status")
def serve_status(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Status of the router and each model's application, as JSON."""
    import json

    from arena_ops.serving.deploy import status

    sys.stdout.write(json.dumps(status(_load(ctx, config)), indent=2) + "\n")


@serve_app.command("down")
def serve_down(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Delete the applications, shut Serve down and stop the local Ray head that `serve up` started."""
    from arena_ops.serving.deploy import down

    down(_load(ctx, config))
    console.print("serving stopped")


def _served(cfg):  # -> list[ServedModel]
    from arena_ops.serving.app import served_models

    return served_models(cfg)


PLOT_FILES = ("elo_ci.png", "win_rate_heatmap.png")
BOARD_FILES = (
    "leaderboard.json", "leaderboard.parquet", "leaderboard.md", "win_rates.parquet", "bootstrap.parquet",
    "params.json", "quarantine.parquet", *PLOT_FILES,
)  # fmt: skip


def _check_out(out: Path, inputs: list[Path], plots: bool) -> None:
    """Refuse, before any fitting, an --out that cannot be a directory or that would overwrite an input."""
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise RatingError(f"--out {out}: {parent} exists and is not a directory")
            break
    written = {(out / name).resolve() for name in BOARD_FILES}
    clobbered = [str(p) for p in inputs if Path(p).resolve() in written]
    if clobbered:
        raise RatingError(f"--out {out} would overwrite the input {clobbered[0]}: write the board elsewhere")


@app.command("elo")
def elo(
    battles: Annotated[list[Path], typer.Argument(help="Battle files (.parquet, .csv, .jsonl).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the leaderboard files.")],
    anchor: Annotated[
        str | None, typer.Option(help="Pin one model: MODEL=VALUE (paper: llama-2-70b-chat=1100).")
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap rounds (paper: 100).", min=1)] = 100,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    ci: Annotated[float, typer.Option(help="CI level; 0.95 → percentiles 2.5 / 97.5.", min=0.0, max=1.0)] = 0.95,
    plots: Annotated[bool, typer.Option(help="Also write PNG plots.")] = True,
    style_control: Annotated[
        bool, typer.Option(help="Add length-controlled ratings (needs len_a/len_b columns).")
    ] = False,
    reference: Annotated[
        str | None, typer.Option(help="Add each model's win rate against this model (AlpacaEval style).")
    ] = None,
    prior_games: Annotated[
        float,
        typer.Option(
            help="Virtual ties per model against the initial rating (keeps sparse boards finite); 0 = plain maximum "
            "likelihood, exactly FastChat's compute_mle_elo.",
            min=0.0,
        ),
    ] = 1.0,
    online_elo: Annotated[
        bool,
        typer.Option(help="Also compute the sequential online Elo (K = 4) beside the fit: a pass over every battle."),
    ] = False,
) -> None:
    """Bradley–Terry Elo leaderboard with bootstrap CIs from battle files."""
    from arena_ops.rating import compute_leaderboard, leaderboard_files, parse_anchor, read_battles

    _check_out(out, battles, plots)
    data = read_battles(battles)
    if data.duplicate_inputs:
        err_console.print(f"[yellow]{data.duplicate_inputs} file(s) given more than once: each read once[/yellow]")
    lb = compute_leaderboard(
        data.table,
        rounds=bootstrap,
        seed=seed,
        ci_level=ci,
        anchor=parse_anchor(anchor),
        style_control=style_control,
        reference=reference,
        prior_games=prior_games,
        online_k=4.0 if online_elo else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    for name, blob in leaderboard_files(lb, plots=plots).items():
        (out / name).write_bytes(blob)
    if not plots:  # plots of an earlier run would show another board beside this one
        for stale in PLOT_FILES:
            (out / stale).unlink(missing_ok=True)
    if data.quarantine.num_rows:
        import pyarrow.parquet as pq

        pq.write_table(data.quarantine, out / "quarantine.parquet")
        err_console.print(
            f"[yellow]{data.quarantine.num_rows} invalid row(s) quarantined[/yellow] → {out / 'quarantine.parquet'}"
        )
    table = Table(
        "rank",
        "model",
        "Elo",
        f"{ci:.0%} CI",
        "W / L / T",
        "battles",
        title=f"{data.table.num_rows} battles, {len(lb.models)} models",
    )
    for r in lb.records():
        table.add_row(
            str(r["rank"]),
            str(r["model"]) + (" (provisional)" if r["provisional"] else ""),
            f"{r['rating']:.1f}",
            f"{r['ci_low']:.1f} – {r['ci_high']:.1f}",
            f"{r['wins']} / {r['losses']} / {r['ties']}",
            str(r["battles"]),
        )
    console.print(table)
    for note in lb.to_markdown().split("\n\n", 1)[1:]:  # provisional models, unreliable intervals
        err_console.print(f"[yellow]{note.strip()}[/yellow]")
    console.print(f"wrote {out}")


@app.command("consistency")
def consistency(
    ours: Annotated[Path, typer.Argument(help="Our leaderboard (leaderboard.json, .parquet, .csv or .jsonl).")],
    reference: Annotated[Path, typer.Argument(help="Reference leaderboard, e.g. a human arena's.")],
    rename_ours: Annotated[Path | None, typer.Option(help="JSON map: name in OURS → shared name.")] = None,
    rename_reference: Annotated[Path | None, typer.Option(help="JSON map: name in REFERENCE → shared name.")] = None,
) -> None:
    """Agreement between two leaderboards (Arena-Hard-Auto definitions; agreement also on the WizardArena paper's
    +1/0/−1 scale), printed as JSON."""
    import json

    from arena_ops.cli.bench import _name_map
    from arena_ops.rating import consistency_report, read_board

    report = consistency_report(
        read_board(str(ours), _name_map(rename_ours)), read_board(str(reference), _name_map(rename_reference))
    )
    # Strict JSON: an undefined metric (e.g. a correlation over tied scores) is null, never a bare NaN.
    clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in report.items()}
    sys.stdout.write(json.dumps(clean, indent=2, allow_nan=False) + "\n")


@models_app.command("prepare-demo")
def models_prepare_demo(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the converted model.")],
    force: Annotated[bool, typer.Option(help="Convert again even if already done.")] = False,
) -> None:
    """Convert Gemma 3 270M from the PyPI GGUF package into a safetensors directory vLLM can serve (cached)."""
    from arena_ops.local.demo_model import prepare_gemma

    with console.status("converting Gemma 3 270M (about a minute)…"):
        path = prepare_gemma(out_dir, force=force)
    console.print(f"Gemma 3 270M ready at {path}")


def main() -> None:
    try:
        app()
    except ArenaError as exc:
        err_console.print("[red]error:[/red]", Text(str(exc)), highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
