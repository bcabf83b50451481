"""``arena data …`` and ``arena battle …``: the per-round stages, each a thin call into the library."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from arena_ops.cli.common import ConfigOpt, console, err_console, load

data_app = typer.Typer(help="Instruction data: ingest, clean, test sets, shard.", no_args_is_help=True)
train_app = typer.Typer(
    help="Training: build datasets from battles, run TRL stages, list the registry.", no_args_is_help=True
)
battle_app = typer.Typer(help="Battles: generate answers, judge pairs, write battle records.", no_args_is_help=True)

ShardOpt = Annotated[int, typer.Option("--shard", "-s", help="Shard of the corpus (0-based).")]
IterOpt = Annotated[int, typer.Option("--iteration", "-i", help="Flywheel iteration the battles belong to.")]


def _store(cfg):  # -> ArtifactStore
    from arena_ops.store import ArtifactStore

    return ArtifactStore.from_config(cfg.storage)


def _counts_table(title: str, counts: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("step")
    table.add_column("rows", justify="right")
    for k, v in counts.items():
        if isinstance(v, int | float):
            table.add_row(k, str(v))
    return table


# data --------------------------------------------------------------------------------------------------------------


@data_app.command("ingest")
def data_ingest(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Read data.sources into the canonical conversation table; malformed rows are quarantined and counted."""
    from arena_ops.data.pipeline import ingest_stage

    cfg = load(ctx, config)
    out = ingest_stage(cfg, _store(cfg))
    console.print(_counts_table(f"ingest → {out['uri']}", out))


@data_app.command("clean")
def data_clean(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Unsafe / too short / exact, prefix and near duplicates / non-English: each step counted."""
    from arena_ops.data.pipeline import clean_stage

    cfg = load(ctx, config)
    out = clean_stage(cfg, _store(cfg))
    console.print(_counts_table(f"clean → {out['uri']}", out))


@data_app.command("shard")
def data_shard(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Split the clean corpus into data.num_shards seeded parts (test-set items excluded)."""
    from arena_ops.data.pipeline import shard_stage, testset_ids

    cfg = load(ctx, config)
    store = _store(cfg)
    out = shard_stage(cfg, store, exclude=testset_ids(cfg, store))
    console.print(_counts_table("shards", {f"shard {k}": n for k, n in enumerate(out["sizes"])}))


@data_app.command("testset")
def data_testset(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Build the Diverse, Hard (judge-rated difficulty; the judge must be served) and Mix test sets.

    Run it before `arena data shard`: test items and their near matches are kept out of every training shard
    (existing shards are re-cut by `arena data prepare` when the test sets change)."""
    from arena_ops.data.pipeline import testset_stage

    cfg = load(ctx, config)
    counts = testset_stage(cfg, _store(cfg))
    console.print(_counts_table("test sets", counts))
    console.print(f"Hard rated by {counts['rater']} with template {counts['rater_template']}")
    for warning in counts["warnings"]:
        err_console.print(f"[yellow]{warning}[/yellow]")


@data_app.command("make-tasks")
def data_make_tasks(
    out: Annotated[str, typer.Argument(help="Directory for tasks.jsonl and solver.jsonl.")],
    n: Annotated[int, typer.Option("--n", help="Number of tasks.", min=1, max=1_000_000)] = 120,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 0,
    kinds: Annotated[str | None, typer.Option("--kinds", help="Only these kinds, comma-separated.")] = None,
) -> None:
    """Generate instruction tasks with checkable answers (arithmetic, conversion, sorting, reversing, …) and the
    reference solver's answers as a recorded model: a corpus a verifier judge can judge on a CPU."""
    from arena_ops.data.tasks import write_tasks

    try:
        tasks, solver = write_tasks(out, n, seed, kinds.split(",") if kinds else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"wrote {n} tasks to {tasks} and the solver's answers to {solver}")


@data_app.command("prepare")
def data_prepare(
    ctx: typer.Context,
    config: ConfigOpt = None,
    ds: Annotated[
        str | None, typer.Option("--ds", help="data.mode partitioned: prepare this day (YYYY-MM-DD); idempotent.")
    ] = None,
) -> None:
    """Whatever of ingest → clean → shard is missing (a no-op when the shards exist); with --ds, one day's
    partition (reused when it is prepared from the same files)."""
    cfg = load(ctx, config)
    store = _store(cfg)
    if ds is not None or cfg.data.mode == "partitioned":
        from arena_ops.data.partitions import prefix
        from arena_ops.errors import PartitionUnavailableError
        from arena_ops.round import prepare_day

        if ds is None:
            raise typer.BadParameter("data.mode is partitioned: name the day with --ds YYYY-MM-DD", param_hint="--ds")
        try:
            rep = prepare_day(cfg, store, ds)
        except PartitionUnavailableError as exc:
            console.print(f"[yellow]skipped[/]: {exc}")
            raise typer.Exit(3) from None
        console.print(_counts_table(f"partition {ds}", _flat(rep)))
        console.print(f"→ {store.key_uri(prefix(cfg, ds))}", soft_wrap=True)
        return
    from arena_ops.data.pipeline import ensure_shards

    for prefix in ensure_shards(cfg, store):
        console.print(prefix)


@data_app.command("upload")
def data_upload(
    ctx: typer.Context,
    files: Annotated[list[str], typer.Argument(help="Local instruction files.")],
    dest: Annotated[str, typer.Argument(help="A folder URI: s3://bucket/prompts/ds=2026-12-01/ (or file://, a path).")],
    config: ConfigOpt = None,
) -> None:
    """Copy instruction files into a folder of the flywheel's storage (S3 with its credentials): how a day's data
    lands where a partitioned source reads it."""
    import os

    import pyarrow.fs as pafs

    from arena_ops.data.sources import filesystem

    cfg = load(ctx, config)
    fs, base, prefix = filesystem(dest, cfg.storage)
    for f in files:
        target = f"{base.rstrip('/')}/{os.path.basename(f)}"
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(base, recursive=True)
        # An explicit close: a failed upload is an error here, not a line in a destructor's log.
        with open(f, "rb") as src:
            out = fs.open_output_stream(target)
            try:
                while chunk := src.read(8 << 20):
                    out.write(chunk)
            finally:
                out.close()
        console.print(f"{f} → {prefix}{target}")


@data_app.command("partitions")
def data_partitions(
    ctx: typer.Context,
    config: ConfigOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='A JSON list of {"ds", "rows_read", "kept", "removed", "slices"}.')
    ] = False,
) -> None:
    """The prepared days (data.mode partitioned), oldest first, with their data reports."""
    from arena_ops.data.partitions import reports

    cfg = load(ctx, config)
    rows = [
        {
            "ds": r["ds"],
            "rows_read": r["rows_read"],
            "kept": r["kept"],
            "removed": r["removed"],
            "slices": r["slices"],
            "quarantined": r["quarantined"],
        }
        for r in reports(cfg, _store(cfg))
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title=f"partitions of {cfg.flywheel}")
    for col in ("ds", "read", "quarantined", "removed", "kept", "slices"):
        table.add_column(col)
    for r in rows:
        removed = ", ".join(f"{k} {v}" for k, v in sorted(r["removed"].items())) or "—"
        table.add_row(r["ds"], str(r["rows_read"]), str(r["quarantined"]), removed, str(r["kept"]), str(r["slices"]))
    console.print(table)


def _flat(rep: dict[str, Any]) -> dict[str, Any]:
    out = {"read": rep["rows_read"], "quarantined": rep["quarantined"]}
    out.update({f"removed: {k}": v for k, v in sorted(rep["removed"].items())})
    out.update({"kept": rep["kept"], **{f"slice {k}": n for k, n in enumerate(rep["slice_rows"])}})
    return out


# battle ------------------------------------------------------------------------------------------------------------


@contextmanager
def _progress(to: Console | None = None) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Progress bars (on ``to``, default standard output; a command printing JSON keeps them on standard error)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=to or console,
        transient=False,
    )

    def start(phase: str, total: int) -> Callable[[int], None]:
        task = bar.add_task(phase, total=total)
        return lambda n: bar.advance(task, n)

    with bar:
        yield start


StepOpt = Annotated[
    str | None,
    typer.Option(
        "--step",
        help="A step of the iteration's round (sft, dpo, rl; all under compact): battles the "
        "model the round battles there, on the step's slice — as the DAG does. Without it: --shard, ad hoc, "
        "with the configured weights.",
    ),
]


def _battle_run(ctx: typer.Context, config, shard: int, iteration: int, step: str | None = None):  # -> BattleRun
    from arena_ops.battle.run import BattleRun, plan
    from arena_ops.data.pipeline import ensure_shards, read_shard, shard_name

    cfg = load(ctx, config)
    store = _store(cfg)
    ensure_shards(cfg, store)
    if step is not None:
        from arena_ops.flywheel import load as load_round
        from arena_ops.flywheel import serve, step_battle_run

        rnd, rcfg, _ = load_round(_round_ref(ctx, config, iteration))
        st = next((s for s in rnd.steps if s.name == step), None)
        if st is None:
            raise typer.BadParameter(f"iteration {iteration} has steps {[s.name for s in rnd.steps]}, not {step!r}")
        model = rnd.battled_model(store, st)
        serve(rcfg, model)
        return step_battle_run(rnd, rcfg, store, st, model)
    return BattleRun(cfg, store, iteration, shard_name(shard), plan(cfg, read_shard(cfg, store, shard)))


@battle_app.command("generate")
def battle_generate(
    ctx: typer.Context, shard: ShardOpt = 0, iteration: IterOpt = 0, step: StepOpt = None, config: ConfigOpt = None
) -> None:
    """Every battling model answers every prompt of the shard (resumes: stored answers are kept)."""
    run = _battle_run(ctx, config, shard, iteration, step)
    with _progress() as progress:
        out = asyncio.run(run.generate(progress))
    console.print(f"generated {out['generated']} answers ({out['reused']} already stored)")


@battle_app.command("judge")
def battle_judge(
    ctx: typer.Context, shard: ShardOpt = 0, iteration: IterOpt = 0, step: StepOpt = None, config: ConfigOpt = None
) -> None:
    """Judge both position-swapped games of every pair, then write the battle table."""
    run = _battle_run(ctx, config, shard, iteration, step)
    with _progress() as progress:
        asyncio.run(run.judge(progress))
    _print_summary(run.build())


@battle_app.command("run")
def battle_run(
    ctx: typer.Context, shard: ShardOpt = 0, iteration: IterOpt = 0, step: StepOpt = None, config: ConfigOpt = None
) -> None:
    """generate → judge → battle table, resumable; prints battles, W/L/T per model, invalid verdicts, tokens."""
    run = _battle_run(ctx, config, shard, iteration, step)
    with _progress() as progress:
        summary = asyncio.run(run.run_all(progress))
    _print_summary(summary)


def _print_summary(s: dict[str, Any]) -> None:
    table = Table(title=f"battles: {s['run']} (iteration {s['iteration']})")
    for col in ("model", "wins", "losses", "ties"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for model, c in s["per_model"].items():
        table.add_row(model, str(c["wins"]), str(c["losses"]), str(c["ties"]))
    console.print(table)
    wall = ", ".join(f"{k} {v:.1f}s" for k, v in s["wall_s"].items())
    console.print(
        f"{s['battles']} battles on {s['prompts']} prompts, {s['invalid']} invalid (reasons in invalid.parquet), "
        f"{s['tokens_generated']} tokens generated, {s['judge_tokens']} judge tokens" + (f"; {wall}" if wall else "")
    )
    console.print(f"battle table: {s['uri']}")


# train -------------------------------------------------------------------------------------------------------------


def _round_ref(ctx: typer.Context, config, iteration: int) -> dict:  # noqa: ANN001
    """The round record of ``iteration`` (resolved from the config when there is none yet)."""
    from arena_ops import layout
    from arena_ops.flywheel import resolve_round

    cfg = load(ctx, config)
    store = _store(cfg)
    if store.is_committed(layout.round_record(cfg.flywheel, iteration)):
        return {"storage": cfg.storage.model_dump(mode="json"), "flywheel": cfg.flywheel, "iteration": iteration}
    return resolve_round(str(config or ctx.obj["config"]), iteration=iteration, overrides=_overrides(ctx))


def _overrides(ctx: typer.Context) -> dict:
    from arena_ops.config import parse_override

    return dict(parse_override(s) for s in ctx.obj["set"])


@train_app.command("build-data")
def train_build_data(ctx: typer.Context, iteration: IterOpt = 0, config: ConfigOpt = None) -> None:
    """Every step's training data of the round from its battles (pair-judge selection with margins K)."""
    from arena_ops.flywheel import load as load_round
    from arena_ops.flywheel import step_data

    ref = _round_ref(ctx, config, iteration)
    rnd, _, _ = load_round(ref)
    counts = {}
    for k, st in enumerate(rnd.steps):
        counts.update({f"{st.name}: {s}": n for s, n in step_data(ref, k).items()})
    console.print(_counts_table(f"training data, iteration {iteration}", counts))


def _train(ctx: typer.Context, stage: str, iteration: int, config) -> None:  # noqa: ANN001
    from arena_ops.flywheel import train

    ref = _round_ref(ctx, config, iteration)
    with console.status(f"training {stage} of iteration {iteration}…"):
        entry = train(ref, stage)
    if entry.get("skipped"):
        console.print(f"{stage}: skipped ({entry['skipped']})")
        return
    m = entry.get("metrics", {})
    console.print(
        f"{stage}: {m.get('steps')} steps, loss {m.get('first_loss')} → {m.get('last_loss')}, "
        f"{m.get('seconds_per_step')} s/step" + (" (already trained; reused)" if entry.get("reused") else "")
    )
    console.print(f"model: {entry['model_uri']} ({entry.get('label')})")


@train_app.command("init")
def train_init(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """The start model: SFT of models.target on a sample of data.init_sources (paper: 10k ShareGPT), before
    iteration 0, which then starts from it."""
    from arena_ops.training.init import train_init as run_init

    cfg = load(ctx, config)
    with console.status("training the start model (init)…"):
        entry = run_init(cfg, _store(cfg))
    data, m = entry["data"], entry.get("metrics") or {}
    console.print(
        f"init data: {data['rows']} conversations sampled of {data['candidates']} ({data['quarantined']} quarantined)"
        + (" (reused)" if data.get("reused") else "")
    )
    console.print(
        f"init: {m.get('steps')} steps, loss {m.get('first_loss')} → {m.get('last_loss')}"
        + (" (already trained; reused)" if entry.get("reused") else "")
    )
    console.print(f"model: {entry['model_uri']} ({entry.get('label')}); iteration 0 starts from it")


@train_app.command("sft")
def train_sft(ctx: typer.Context, iteration: IterOpt = 0, config: ConfigOpt = None) -> None:
    """Supervised fine-tuning on the winners' answers where the target lost (TRL SFTTrainer, DeepSpeed)."""
    _train(ctx, "sft", iteration, config)


@train_app.command("dpo")
def train_dpo(ctx: typer.Context, iteration: IterOpt = 0, config: ConfigOpt = None) -> None:
    """DPO on chosen/rejected pairs, from this round's SFT model when there is one."""
    _train(ctx, "dpo", iteration, config)


@train_app.command("rm")
def train_rm(ctx: typer.Context, iteration: IterOpt = 0, config: ConfigOpt = None) -> None:
    """Reward model on battle pairs (TRL RewardTrainer)."""
    _train(ctx, "rm", iteration, config)


@train_app.command("rl")
def train_rl(ctx: typer.Context, iteration: IterOpt = 0, config: ConfigOpt = None) -> None:
    """RL with the reward model as reward (GRPO or RLOO; TRL 1.16 has no PPO)."""
    _train(ctx, "rl", iteration, config)


@train_app.command("registry")
def train_registry(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Every registered model: iteration, stage, base, dataset, metrics, URI."""
    from arena_ops.training.run import registry

    cfg = load(ctx, config)
    table = Table(title=f"model registry: {cfg.flywheel}")
    for col in ("iteration", "stage", "steps", "last loss", "model"):
        table.add_column(col)
    for e in registry(cfg, _store(cfg)):
        m = e.get("metrics") or {}
        table.add_row(str(e["iteration"]), e["stage"], str(m.get("steps")), str(m.get("last_loss")), e["model_uri"])
    console.print(table)
