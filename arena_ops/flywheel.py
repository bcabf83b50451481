"""One flywheel round as a sequence of idempotent steps; the Airflow DAGs are thin wiring over these functions.

Every step takes the resolved round (a small JSON-able dict: config path, overrides, iteration, shard) and returns
small references (URIs, counts) — never data. Rerunning a step gives the same artifacts.

Iterations. A run's iteration comes, in order, from its ``iteration`` param; from its logical date — whole days
since ``airflow.start_date`` (a nightly schedule then runs iteration n on day n, and a backfill over past dates re-runs
exactly those iterations); or, for a manual run without a logical date, from the store: one past the last iteration
that has battle records (0 for a new flywheel). Never from the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import date, datetime
from typing import Any

from arena_ops.config import ArenaConfig, load_config
from arena_ops.errors import ConfigError
from arena_ops.store import ArtifactStore

log = logging.getLogger(__name__)

Round = dict[str, Any]
EVAL_PREFIX = "eval-"  # battle runs on a test set (``eval-mix``) rather than a training shard


def load(rnd: Round) -> tuple[ArenaConfig, ArtifactStore]:
    cfg = load_config(rnd["config_path"], rnd.get("overrides") or {})
    return cfg, ArtifactStore.from_config(cfg.storage)


def iteration_for(cfg: ArenaConfig, store: ArtifactStore, param: int | None, logical_date: datetime | None) -> int:
    if param is not None:
        return int(param)
    if logical_date is not None:
        start = date.fromisoformat(cfg.airflow.start_date)
        days = (logical_date.date() - start).days
        if days < 0:
            raise ConfigError(f"logical date {logical_date.date()} is before airflow.start_date {start}")
        return days
    done = [i for i in store.list_iterations(cfg.flywheel) if store.list_artifacts(cfg.flywheel, i, "battles")]
    return max(done) + 1 if done else 0


def resolve_round(
    config_path: str,
    iteration: int | None = None,
    shard: int | None = None,
    stages: list[str] | None = None,
    competitors: list[str] | None = None,
    sample_limit: int | None = None,
    logical_date: datetime | None = None,
) -> Round:
    """Which iteration, shard, target checkpoint and stage plan this run means."""
    from arena_ops.training.run import round_target, stages_for_round

    overrides: dict[str, Any] = {}
    if sample_limit is not None:
        overrides["battle.sample_limit"] = sample_limit
    cfg = load_config(config_path, overrides)
    if competitors:
        known = {c.name for c in cfg.models.competitors}
        unknown = sorted(set(competitors) - known)
        if unknown:
            raise ConfigError(f"competitor override {unknown}: not in models.competitors {sorted(known)}")
        kept = [c.model_dump(mode="json") for c in cfg.models.competitors if c.name in competitors]
        overrides["models.competitors"] = kept
    store = ArtifactStore.from_config(cfg.storage)
    it = iteration_for(cfg, store, iteration, logical_date)
    target = round_target(cfg, store, it)
    if target:
        overrides["models.target.source.path"] = target
    return {
        "config_path": str(config_path),
        "overrides": overrides,
        "flywheel": cfg.flywheel,
        "iteration": it,
        "shard": shard if shard is not None else it % cfg.data.num_shards,
        "target": target,
        "stages": stages_for_round(cfg, stages),
    }


def prepare_data(rnd: Round) -> dict[str, Any]:
    from arena_ops.data.pipeline import ensure_shards

    cfg, store = load(rnd)
    return {"shards": len(ensure_shards(cfg, store))}


def serve(rnd: Round, target: str | None = None) -> str:
    """Make sure every served model is up with this round's target (idempotent: unchanged apps are left alone)."""
    from arena_ops.serving.deploy import up

    cfg, _ = load(rnd)
    return up(cfg, target_path=target or rnd["target"] or None)


def battle_run(rnd: Round, run: str | None = None, prompts_key: str | None = None, pairing: str | None = None):
    from arena_ops.battle.run import BattleRun, plan
    from arena_ops.data.pipeline import read_shard, shard_name

    cfg, store = load(rnd)
    if prompts_key is None:
        table, run = read_shard(cfg, store, rnd["shard"]), run or shard_name(rnd["shard"])
    else:
        table = store.read_artifact_table(store.dataset_key(cfg.flywheel, prompts_key))
    return BattleRun(cfg, store, rnd["iteration"], run, plan(cfg, table, pairing))


def battle_models(rnd: Round) -> list[str]:
    return battle_run(rnd).plan.models


def generate(rnd: Round, model: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = asyncio.run(battle_run(rnd).generate(only=model))
    return {**out, "model": model, "seconds": round(time.perf_counter() - t0, 2)}


def judge(rnd: Round, chunk: int, chunks: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = asyncio.run(battle_run(rnd).judge(chunk=(chunk, chunks)))
    return {**out, "chunk": chunk, "seconds": round(time.perf_counter() - t0, 2)}


def battles(rnd: Round, wall_s: dict[str, float] | None = None) -> dict[str, Any]:
    return battle_run(rnd).build(wall_s)


def training_data(rnd: Round) -> dict[str, Any]:
    from arena_ops.training.build import build_training_data

    cfg, store = load(rnd)
    return build_training_data(cfg, store, rnd["iteration"])


def evaluate(rnd: Round, testset: str = "testset-mix") -> dict[str, Any]:
    """The round's newest policy against the competitors on the test set; recorded as iteration + 1's battles
    (the iteration that serves it), run ``eval-mix``. Skipped, with the reason, when there is no test set."""
    from arena_ops.training.run import round_target

    cfg, store = load(rnd)
    if not store.is_committed(store.dataset_key(cfg.flywheel, testset)):
        return {"skipped": f"no {testset} (build it with the arena_testset_build DAG or `arena data testset`)"}
    nxt = {**rnd, "iteration": rnd["iteration"] + 1}
    target = round_target(cfg, store, nxt["iteration"])
    if target:
        nxt["overrides"] = {**rnd["overrides"], "models.target.source.path": target}
    serve(nxt, target)
    run = battle_run(nxt, run=EVAL_PREFIX + testset.removeprefix("testset-"), prompts_key=testset)
    return asyncio.run(run.run_all())


def report(rnd: Round, parts: dict[str, Any]) -> dict[str, Any]:
    """The round report (JSON and Markdown) in the store: battles, W/L/T, invalid verdicts, tokens, wall time per
    stage, training metrics, Elo before/after (from the leaderboard history when the Elo DAG has run)."""
    cfg, store = load(rnd)
    body = {
        "flywheel": cfg.flywheel,
        "iteration": rnd["iteration"],
        "shard": rnd["shard"],
        "target": rnd["target"],
        **parts,
    }
    history = _elo_history(cfg, store)
    if history:
        body["elo"] = history
    with store.artifact(cfg.flywheel, rnd["iteration"], "report", "round", meta={"iteration": rnd["iteration"]}) as w:
        w.write_json("report.json", body)
        w.put_bytes("report.md", render_report(body).encode())
    return {"uri": w.uri}


def _elo_history(cfg: ArenaConfig, store: ArtifactStore) -> list[dict[str, Any]] | None:
    key = f"{cfg.flywheel}/leaderboard/history.json"
    return store.read_json(key) if store.exists(key) else None


def render_report(body: dict[str, Any]) -> str:
    lines = [
        f"# Round {body['iteration']} of `{body['flywheel']}`",
        "",
        f"- target: `{body['target']}`",
        f"- shard: {body['shard']}",
    ]
    b = body.get("battles") or {}
    if b:
        lines += [
            f"- battles: {b.get('battles')} (invalid verdicts: {b.get('invalid')})",
            f"- tokens generated: {b.get('tokens_generated')}, judge tokens: {b.get('judge_tokens')}",
            "",
            "| model | wins | losses | ties |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {m} | {c['wins']} | {c['losses']} | {c['ties']} |" for m, c in b.get("per_model", {}).items()]
    if body.get("wall_s"):
        lines += ["", "| stage | wall time (s) |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in body["wall_s"].items()]
    for entry in body.get("training") or []:
        m = entry.get("metrics") or {}
        what = entry.get("skipped") or f"{m.get('steps')} steps, loss {m.get('first_loss')} → {m.get('last_loss')}"
        lines.append(f"- {entry.get('stage')}: {what}")
    return "\n".join(lines) + "\n"


# Elo ---------------------------------------------------------------------------------------------------------------


def elo_update(config_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recompute the leaderboard from every battle table of the flywheel; write it and a round-over-round history.

    The target changes every round, so its battles are rated as ``{name}@{iteration}`` (the model that round
    served); other models keep their names. Output: ``{flywheel}/leaderboard/`` (leaderboard.json/.md/.parquet,
    plots, history.json).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from arena_ops.rating.battles import validate_battles
    from arena_ops.rating.bt import parse_anchor
    from arena_ops.rating.leaderboard import compute_leaderboard, leaderboard_files

    cfg = load_config(config_path, overrides or {})
    store = ArtifactStore.from_config(cfg.storage)
    tables = []
    for it in store.list_iterations(cfg.flywheel):
        for run in store.list_artifacts(cfg.flywheel, it, "battles"):
            t = store.read_artifact_table(store.artifact_key(cfg.flywheel, it, "battles", run))
            tables.append(_version_target(t, cfg.models.target.name, it))
    if not tables:
        return {"skipped": "no battle records yet"}
    raw = pa.concat_tables(tables, promote_options="permissive")
    battles = validate_battles(raw, source="store battles")
    r = cfg.rating

    def rate(table: Any) -> Any:
        return compute_leaderboard(
            table, rounds=r.bootstrap_rounds, seed=r.seed, ci_level=r.ci_level, anchor=parse_anchor(r.anchor)
        )

    lb = rate(battles.table)
    prefix = f"{cfg.flywheel}/leaderboard"
    for name, data in leaderboard_files(lb).items():
        store.put_bytes(f"{prefix}/{name}", data)
    scopes = [{"scope": "all", "label": "All battles", "battles": battles.table.num_rows, "key": prefix}]
    # One board per test set (its evaluation runs, ``eval-*``): the paper's offline leaderboard is the Mix board.
    runs = pc.unique(raw["run"]).to_pylist() if "run" in raw.column_names else []
    for run in sorted(x for x in runs if x and x.startswith(EVAL_PREFIX)):
        subset = validate_battles(raw.filter(pc.equal(raw["run"], run)), source=f"store battles, run {run}").table
        if len(set(subset["model_a"].to_pylist()) | set(subset["model_b"].to_pylist())) < 2:
            continue
        key = f"{prefix}/{run}"
        for name, data in leaderboard_files(rate(subset)).items():
            store.put_bytes(f"{key}/{name}", data)
        scopes.append(
            {"scope": run, "label": f"Test set {run.removeprefix(EVAL_PREFIX)}", "battles": subset.num_rows, "key": key}
        )
    store.write_json(f"{prefix}/scopes.json", scopes)
    iterations = sorted(set(pc.unique(battles.table["iteration"]).to_pylist()) - {None})
    history = _history(cfg, store, lb.records(), iterations[-1] if iterations else 0)
    store.write_json(f"{prefix}/history.json", history)
    return {
        "uri": store.key_uri(prefix),
        "battles": battles.table.num_rows,
        "models": len(lb.records()),
        "scopes": [s["scope"] for s in scopes],
        "quarantined": battles.quarantine.num_rows,
    }


def _version_target(table: Any, target: str, iteration: int) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    versioned = f"{target}@{iteration}"
    for col in ("model_a", "model_b"):
        idx = table.column_names.index(col)
        table = table.set_column(idx, col, pc.if_else(pc.equal(table[col], target), versioned, table[col]))
    return table.set_column(
        table.column_names.index("iteration"), "iteration", pa.array([iteration] * table.num_rows, pa.int64())
    )


def _history(cfg: ArenaConfig, store: ArtifactStore, records: list[dict[str, Any]], iteration: int) -> list:
    """One entry per Elo computation at the newest iteration seen (replaced when recomputed for that iteration)."""
    key = f"{cfg.flywheel}/leaderboard/history.json"
    history = [h for h in (store.read_json(key) if store.exists(key) else []) if h["iteration"] != iteration]
    board = {rec["model"]: round(float(rec["rating"]), 1) for rec in records}
    return sorted([*history, {"iteration": iteration, "ratings": board}], key=lambda h: h["iteration"])
