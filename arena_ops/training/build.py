"""Build an iteration's training datasets from its battle records in the store.

Reads ``{flywheel}/iter={i}/battles/*`` (every committed run), the prompts of each run (``{flywheel}/data/{run}``)
and the answers the battles point at; writes ``{flywheel}/iter={i}/train-data/{sft,dpo,rm,rl}`` (``data.parquet``)
and ``…/train-data/report`` (counts and margins per source model). With ``training.accumulate`` the DPO, RM and RL
sets also hold the earlier iterations' rows (the paper's DPO-I3 trains on D2 ∪ D5 ∪ D8); a prompt judged again
keeps its newest row.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from arena_ops.battle.generate import RESPONSE_SCHEMA
from arena_ops.battle.parts import Parts
from arena_ops.config import ArenaConfig
from arena_ops.errors import ArtifactNotFoundError, TrainingError
from arena_ops.store import ArtifactStore

from .data import BattleContext, build_dpo, build_rl, build_rm, build_sft, report

log = logging.getLogger(__name__)

STAGE = "train-data"
DATASETS = ("sft", "dpo", "rm", "rl")


def battle_context(cfg: ArenaConfig, store: ArtifactStore, iteration: int) -> BattleContext:
    runs = store.list_artifacts(cfg.flywheel, iteration, "battles")
    if not runs:
        raise TrainingError(
            f"no battle records for {cfg.flywheel} iteration {iteration} in {store.uri}: run the battles first "
            f"(`arena battle run --iteration {iteration}`)"
        )
    battles: list[dict[str, Any]] = []
    prompts: dict[str, dict[str, Any]] = {}
    answers: dict[tuple[str, str], list[str]] = {}
    for run in runs:
        table = store.read_artifact_table(store.artifact_key(cfg.flywheel, iteration, "battles", run))
        battles.extend(table.to_pylist())
        try:
            shard = store.read_artifact_table(store.dataset_key(cfg.flywheel, run))
        except ArtifactNotFoundError:
            raise TrainingError(f"battle run {run!r} has no prompt table at {cfg.flywheel}/data/{run}") from None
        prompts.update({r["prompt_id"]: r for r in shard.select(["prompt_id", "turns", "system"]).to_pylist()})
        wanted = set(table["response_key_a"].to_pylist()) | set(table["response_key_b"].to_pylist())
        resp = Parts(store, cfg.flywheel, iteration, "responses", run, RESPONSE_SCHEMA).read()
        resp = resp.filter(pc.is_in(resp["key"], pa.array(sorted(wanted), pa.string())))
        turns: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for r in resp.select(["prompt_id", "model", "turn", "text"]).to_pylist():
            turns.setdefault((r["prompt_id"], r["model"]), []).append((r["turn"], r["text"]))
        answers.update({k: [t for _, t in sorted(v)] for k, v in turns.items()})
    return BattleContext(battles, prompts, answers, iteration)


def build_training_data(cfg: ArenaConfig, store: ArtifactStore, iteration: int) -> dict[str, Any]:
    """Write the four datasets and a report; returns the report (counts per dataset and source model)."""
    ctx = battle_context(cfg, store, iteration)
    t = cfg.training
    k_sft = t.k_sft_first if iteration == 0 else t.k_sft
    tables = {
        "sft": build_sft(ctx, cfg.models.target.name, k_sft),
        "dpo": build_dpo(ctx, t.k_dpo),
        "rm": build_rm(ctx, t.k_dpo),
        "rl": build_rl(ctx),
    }
    if t.accumulate:
        for name in ("dpo", "rm", "rl"):
            tables[name] = _with_earlier(cfg, store, iteration, name, tables[name])
    for name, table in tables.items():
        meta = {"rows": table.num_rows, "iteration": iteration, "k_sft": k_sft, "k_dpo": t.k_dpo}
        with store.artifact(cfg.flywheel, iteration, STAGE, name, meta=meta) as w:
            w.write_table("data.parquet", table)
    summary = {"iteration": iteration, "battles": len(ctx.battles), "k_sft": k_sft, "k_dpo": t.k_dpo, **report(tables)}
    with store.artifact(cfg.flywheel, iteration, STAGE, "report", meta={"iteration": iteration}) as w:
        w.write_json("report.json", summary)
    log.info("training data for iteration %d: %s", iteration, {k: v.num_rows for k, v in tables.items()})
    return summary


def dataset_uri(cfg: ArenaConfig, store: ArtifactStore, iteration: int, name: str) -> str:
    prefix = store.artifact_key(cfg.flywheel, iteration, STAGE, name)
    store.manifest(prefix)  # raises when it was never committed
    return store.key_uri(f"{prefix}/data.parquet")


def _with_earlier(cfg: ArenaConfig, store: ArtifactStore, iteration: int, name: str, table: pa.Table) -> pa.Table:
    """The current rows plus each earlier iteration's own rows for prompts not judged again since."""
    parts, covered = [table], set(table["prompt_id"].to_pylist())
    for it in sorted((i for i in store.list_iterations(cfg.flywheel) if i < iteration), reverse=True):
        prefix = store.artifact_key(cfg.flywheel, it, STAGE, name)
        if not store.is_committed(prefix):
            continue
        earlier = store.read_artifact_table(prefix)
        own = pc.equal(earlier["iteration"], it)
        fresh = pc.invert(pc.is_in(earlier["prompt_id"], pa.array(sorted(covered), pa.string())))
        earlier = earlier.filter(pc.and_(own, fresh)).cast(table.schema)
        covered |= set(earlier["prompt_id"].to_pylist())
        parts.append(earlier)
    return pa.concat_tables(parts)
