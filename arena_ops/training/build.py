"""Build a step's training datasets from its battle run, with lineage to the battles.

Reads one step's battle table (``{flywheel}/iter={i}/battles/{run}``), the prompts of its slice and the answers the
battles point at; writes ``{flywheel}/iter={i}/train-data/{stage}`` (``data.parquet``) for every stage the step
trains, using each stage's builder from :mod:`arena_ops.training.stage_registry`, and ``…/train-data/report-{step}``
(counts, margins, chosen/rejected per model). The stages ``training.accumulate`` names (by default DPO, RM and RL;
SFT on request) also hold the earlier iterations' rows of the same stage — under the paper schedule those come from the
same step's slices only (DPO-I2 trains on the DPO slices of I0, I1, I2); a prompt judged again keeps its newest row.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from arena_ops import catalogue, layout
from arena_ops.battle.generate import RESPONSE_SCHEMA
from arena_ops.battle.parts import Parts
from arena_ops.config import ArenaConfig
from arena_ops.errors import TrainingError
from arena_ops.store import ArtifactStore

from .data import BattleContext, report
from .stage_registry import k_sft, stage

log = logging.getLogger(__name__)


def battle_context(
    cfg: ArenaConfig, store: ArtifactStore, iteration: int, run: str, prompts: pa.Table
) -> BattleContext:
    """One battle run's valid battles, its prompts' turns and every answer the battles point at."""
    entry = catalogue.step_table(store, cfg.flywheel, iteration, run)
    if entry is None:
        key = catalogue.step_table_key(cfg.flywheel, iteration, run)
        raise TrainingError(f"no battle table {store.key_uri(key)}: run the step's battles first")
    table = store.read_artifact_table(entry.key)  # the served names, as the answers are stored under them
    prompt_rows = {r["prompt_id"]: r for r in prompts.select(["prompt_id", "turns", "system"]).to_pylist()}
    wanted = set(table["response_key_a"].to_pylist()) | set(table["response_key_b"].to_pylist())
    base = layout.iteration_base(cfg.flywheel, iteration)
    resp = Parts(store, base, layout.RESPONSES, run, RESPONSE_SCHEMA).read()
    resp = resp.filter(pc.is_in(resp["key"], pa.array(sorted(wanted), pa.string())))
    turns: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for r in resp.select(["prompt_id", "model", "turn", "text"]).to_pylist():
        turns.setdefault((r["prompt_id"], r["model"]), []).append((r["turn"], r["text"]))
    answers = {k: [t for _, t in sorted(v)] for k, v in turns.items()}
    return BattleContext(table.to_pylist(), prompt_rows, answers, iteration, run)


def build_step_data(
    cfg: ArenaConfig, store: ArtifactStore, iteration: int, step: str, run: str, stages: list[str], prompts: pa.Table
) -> dict[str, Any]:
    """Write the datasets of ``stages`` from one step's battles and the step's report; returns the report. A rerun
    with the same inputs (battle table, earlier iterations' rows, margins) rewrites nothing."""
    fw = cfg.flywheel
    inputs = _inputs_key(cfg, store, iteration, run, stages)
    report_key = layout.train_data_report(fw, iteration, step)
    if (
        store.is_committed(report_key)
        and store.manifest(report_key).meta.get("inputs") == inputs
        and all(store.is_committed(layout.train_data(fw, iteration, s)) for s in stages)
    ):
        return store.read_artifact_json(report_key, "report.json")
    ctx = battle_context(cfg, store, iteration, run, prompts)
    tables: dict[str, pa.Table] = {}
    for name in stages:
        spec = stage(name)
        table = spec.build(ctx, cfg)
        if cfg.training.accumulate.of(name):
            table = _with_earlier(cfg, store, iteration, name, table)
        tables[name] = table
    knobs = {"k_sft": k_sft(cfg, iteration), "k_dpo": cfg.training.k_dpo}
    for name, table in tables.items():
        meta = {"rows": table.num_rows, "iteration": iteration, "step": step, "run": run, **knobs}
        with store.artifact_at(layout.train_data(cfg.flywheel, iteration, name), meta=meta) as w:
            w.write_table("data.parquet", table)
    summary = {"iteration": iteration, "step": step, "run": run, "battles": len(ctx.battles), **knobs, **report(tables)}
    with store.artifact_at(report_key, meta={"iteration": iteration, "inputs": inputs}) as w:
        w.write_json("report.json", summary)
    log.info("training data of iteration %d step %s: %s", iteration, step, {k: v.num_rows for k, v in tables.items()})
    return summary


def _inputs_key(cfg: ArenaConfig, store: ArtifactStore, iteration: int, run: str, stages: list[str]) -> str:
    """What a step's datasets depend on: its battle table, the rows accumulated from earlier iterations, the rules."""
    from arena_ops.battle.parts import content_key

    def sha(prefix: str) -> str | None:
        return store.manifest(prefix).file("data.parquet").sha256 if store.is_committed(prefix) else None

    earlier = {
        s: [sha(layout.train_data(cfg.flywheel, it, s)) for it in store.list_iterations(cfg.flywheel) if it < iteration]
        for s in stages
        if cfg.training.accumulate.of(s)
    }
    rules = [k_sft(cfg, iteration), cfg.training.k_dpo, cfg.models.target.name, stages]
    return content_key(sha(catalogue.step_table_key(cfg.flywheel, iteration, run)), earlier, rules)


def _with_earlier(cfg: ArenaConfig, store: ArtifactStore, iteration: int, name: str, table: pa.Table) -> pa.Table:
    """The current rows plus each earlier iteration's own rows for prompts not judged again since."""
    parts, covered = [table], set(table["prompt_id"].to_pylist())
    for it in sorted((i for i in store.list_iterations(cfg.flywheel) if i < iteration), reverse=True):
        prefix = layout.train_data(cfg.flywheel, it, name)
        if not store.is_committed(prefix):
            continue
        earlier = store.read_artifact_table(prefix)
        own = pc.equal(earlier["iteration"], it)
        fresh = pc.invert(pc.is_in(earlier["prompt_id"], pa.array(sorted(covered), pa.string())))
        earlier = earlier.filter(pc.and_(own, fresh)).select(table.schema.names).cast(table.schema)
        covered |= set(earlier["prompt_id"].to_pylist())
        parts.append(earlier)
    return pa.concat_tables(parts)
