"""A round as a sequence of idempotent tasks over its :class:`~arena_ops.round.Round` record.

The Airflow DAG and ``arena round run`` call exactly these functions. Each takes a round *reference* (storage,
flywheel, iteration: what a task passes on) and reads the record from the store — never a config path — and
returns small references (URIs, counts). Rerunning a task gives the same artifacts and does no new work:

    resolve_round → prepare_data → judge_canary → evaluate("start")
      → for each step: battle_step → step_data (the canary's gate first) → submit/wait each of its stages
        → evaluate(each new policy)
      → report (with the canary's metrics and the promotion decision for the next iteration)

Evaluations (``{flywheel}/eval/{testset}/…``) are kept apart from the iterations: training never reads them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from arena_ops import catalogue, layout
from arena_ops.config import ArenaConfig, load_config
from arena_ops.errors import ConfigError, TrainingError
from arena_ops.round import ModelRef, Round, Step, resolve
from arena_ops.store import ArtifactStore
from arena_ops.training.stage_registry import STAGES

log = logging.getLogger(__name__)

Ref = dict[str, Any]


def load(ref: Ref) -> tuple[Round, ArenaConfig, ArtifactStore]:
    rnd = Round.from_ref(ref)
    return rnd, rnd.cfg(), rnd.store()


def resolve_round(config_path: str, **how: Any) -> Ref:
    """:func:`arena_ops.round.resolve` (keyword arguments: iteration, policies, competitors, sample_limit,
    logical_date, overrides), returning the reference later tasks pass on."""
    rnd = resolve(config_path, **how)
    return {**rnd.ref(), "steps": [s.name for s in rnd.steps], "start": rnd.start.label if rnd.start else None}


def prepare_data(ref: Ref) -> dict[str, Any]:
    """The round's data: the corpus shards, or (data.mode partitioned) its day's partition — its report."""
    from arena_ops.data.pipeline import ensure_shards

    rnd, cfg, store = load(ref)
    if cfg.data.mode == "partitioned":
        from arena_ops.round import day_of, prepare_day

        return prepare_day(cfg, store, day_of(cfg, rnd.iteration))
    return {"shards": len(ensure_shards(cfg, store))}


def serve(cfg: ArenaConfig, model: ModelRef | None) -> str:
    """Every served model up, the target on ``model``'s weights (only the target's app changes)."""
    from arena_ops.serving.deploy import up

    return up(cfg, target_path=model.uri if model else None)


def with_target(cfg: ArenaConfig, model: ModelRef | None, **battle: Any) -> ArenaConfig:
    """The round's config with the target on ``model``'s weights (its name stays: it is the served model id)."""
    out = cfg.model_copy(deep=True)
    if model is not None:
        out.models.target.source.path = model.uri  # type: ignore[union-attr]
    for k, v in battle.items():
        setattr(out.battle, k, v)
    return out


# Battles ------------------------------------------------------------------------------------------------------------


def step(rnd: Round, k: int) -> Step | None:
    return rnd.steps[k] if 0 <= k < len(rnd.steps) else None


def step_battle_run(rnd: Round, cfg: ArenaConfig, store: ArtifactStore, st: Step, model: ModelRef | None):
    from arena_ops.battle.run import BattleRun, plan
    from arena_ops.data.pipeline import read_step

    scfg = with_target(cfg, model)
    name = cfg.models.target.name
    meta = {
        "step": st.name,
        "slice": st.slice,
        "partition": st.partition,
        "battled_model": model.uri if model else None,
        # A target that is not served (recorded, external) does not change: its battles are told apart by iteration.
        "target_label": model.label if model else f"{name}@{rnd.iteration}",
        "target_name": name,
    }
    return BattleRun(scfg, store, rnd.iteration, st.run, plan(scfg, read_step(cfg, store, st)), meta=meta)


def battle_step(ref: Ref, k: int, progress: Any = None) -> dict[str, Any]:
    """Step ``k``'s battles: the round's current policy against the competitors on the step's slice."""
    rnd, cfg, store = load(ref)
    st = step(rnd, k)
    if st is None:
        return {"skipped": f"the {rnd.schedule} schedule has {len(rnd.steps)} step(s)"}
    model = rnd.battled_model(store, st)
    run = step_battle_run(rnd, cfg, store, st, model)
    return _battle(cfg, store, run, model, progress, rnd.iteration, f"battle-{st.run}")


def _battle(
    cfg: ArenaConfig,
    store: ArtifactStore,
    run: Any,
    model: ModelRef | None,
    progress: Any,
    iteration: int,
    entry: str,
) -> dict[str, Any]:
    """Run (or reuse) a battle run; serving is touched only when there is work to do. What it spent is entry
    ``entry`` of iteration ``iteration``'s cost ledger; with ``cost.budget`` set, a run that would take the round
    over it stops before serving or sending anything."""
    from arena_ops import ledger

    key = plan_key(run)
    run.meta["plan_key"] = key
    if store.is_committed(run.table_key) and store.manifest(run.table_key).meta.get("plan_key") == key:
        meta = store.manifest(run.table_key).meta
        if not ledger.has(store, cfg.flywheel, iteration, entry) and meta.get("iteration") == iteration:
            _ledger_battle(store, run, iteration, entry, meta, None)  # built before its entry was written
        return _summary(meta, store.key_uri(run.table_key), reused=True)
    if cfg.cost.budget is not None:
        est = ledger.estimate_battle(run)
        ledger.check_budget(cfg, store, iteration, f"battle run {run.run} ({entry})", est["cost"], skip=entry)
    serve(cfg, model)
    with ledger.metered() as m:
        summary = asyncio.run(run.run_all(progress))
    _ledger_battle(store, run, iteration, entry, summary, m)
    return _summary(summary, store.key_uri(run.table_key))


def _ledger_battle(store: ArtifactStore, run: Any, iteration: int, entry: str, summary: dict, m: Any) -> None:
    from arena_ops import ledger

    task = m.row() if m is not None else {"role": "task", "model": None, "wall_s": sum(summary["wall_s"].values())}
    kind = "eval" if run.run.startswith(layout.EVAL_RUN_PREFIX) else "battle"
    usage = run.usage()
    ledger.write(
        store,
        run.cfg.flywheel,
        iteration,
        entry,
        kind,
        [*usage, {"cpu_s": None, "gpu_s": None, **task}],
        run=run.run,
        table=store.key_uri(run.table_key),
        battles=summary.get("battles"),
        judgments=run.judgments.read_owned(run.table_key).num_rows,  # games judged here (a verifier's too)
    )


def plan_key(run: Any) -> str:
    """Everything a battle table depends on: prompts, pairs, each model's weights and sampling, the judge."""
    from arena_ops.battle.parts import content_key

    specs = {s.name: [run.revisions[s.name], s.sampling.model_dump()] for s in run.specs}
    judge = [run.cfg.judge.model_dump(), run.cfg.models.judge.model_dump()]
    pairs = {pid: [list(p) for p in ps] for pid, ps in run.plan.pairs.items()}
    # Not the evaluating iteration: a model evaluated once is not re-evaluated when a later round starts from it.
    return content_key(pairs, specs, judge, {k: v for k, v in run.meta.items() if k not in ("plan_key", "iteration")})


def _summary(s: dict[str, Any], uri: str, reused: bool = False) -> dict[str, Any]:
    keys = ("battles", "invalid", "per_model", "tokens_generated", "judge_tokens", "wall_s", "target_label")
    return {"uri": uri, **{k: s.get(k) for k in keys}, **({"reused": True} if reused else {})}


def step_data(ref: Ref, k: int) -> dict[str, Any]:
    """Step ``k``'s training datasets (its stages' builders over its battles), once the judge passed its canary."""
    from arena_ops.data.pipeline import read_step
    from arena_ops.training.build import build_step_data

    rnd, cfg, store = load(ref)
    if cfg.judge.canary.path is not None or cfg.judge.canary.previous_verdicts:
        judge_gate(ref)
    st = step(rnd, k)
    if st is None:
        return {"skipped": f"the {rnd.schedule} schedule has {len(rnd.steps)} step(s)"}
    rep = build_step_data(cfg, store, rnd.iteration, st.name, st.run, st.stages, read_step(cfg, store, st))
    return {s: rep[s]["rows"] for s in st.stages}


# The judge's canary ---------------------------------------------------------------------------------------------------


def judge_canary(ref: Ref) -> dict[str, Any]:
    """The round's judge on the canary's labelled pairs (``judge.canary``), stored with the round: its metrics, the
    judge's identity and the gate's breaches (:mod:`arena_ops.battle.canary`). Judged once per round and judge."""
    from arena_ops import ledger
    from arena_ops.battle.canary import gate, pairs_from_round, run_canary
    from arena_ops.battle.generate import RESPONSE_SCHEMA
    from arena_ops.battle.judging import JUDGMENT_SCHEMA

    rnd, cfg, store = load(ref)
    c = cfg.judge.canary
    if c.path is None and not c.previous_verdicts:
        return {"skipped": "judge.canary.path is not set"}
    previous = None
    for it in range(rnd.iteration - 1, -1, -1):  # drift is measured from the newest earlier canary that passed
        key = layout.canary(rnd.flywheel, it)
        if store.is_committed(key) and not gate(cfg, store.read_artifact_json(key, "metrics.json")):
            previous = key
            break
    earlier = None
    if c.previous_verdicts:
        accepted = _last_accepted(cfg, store, rnd.iteration)
        if accepted is not None:
            earlier = (accepted, pairs_from_round(store, rnd.flywheel, accepted, c.previous_verdicts))
        elif c.path is None:
            return {"skipped": "judge.canary.previous_verdicts: no earlier round was accepted yet"}
    served = cfg.judge.kind != "verifier" and cfg.models.judge.source.kind == "served"
    key = layout.canary(rnd.flywheel, rnd.iteration)
    with ledger.metered() as m:
        before = (lambda: serve(cfg, rnd.start)) if served else None
        out = run_canary(cfg, store, key, previous, before=before, earlier=earlier)
    fingerprint = store.manifest(key).meta.get("fingerprint")
    if ledger.fingerprint(store, rnd.flywheel, rnd.iteration, "canary") != fingerprint:  # judged now, or unrecorded
        judged = store.read_artifact_table(key, "judgments.parquet").cast(JUDGMENT_SCHEMA)
        usage = ledger.usage_rows(RESPONSE_SCHEMA.empty_table(), judged)
        rows = [*usage, m.row()]
        ledger.write(
            store,
            rnd.flywheel,
            rnd.iteration,
            "canary",
            "canary",
            rows,
            fingerprint=fingerprint,
            judgments=judged.num_rows,
        )
    return out


def _last_accepted(cfg: ArenaConfig, store: ArtifactStore, iteration: int) -> int | None:
    """The newest earlier round that reported and whose canary (where it had one) passed its gate."""
    from arena_ops.battle.canary import gate

    for it in range(iteration - 1, -1, -1):
        if not store.is_committed(layout.round_report(cfg.flywheel, it)):
            continue
        key = layout.canary(cfg.flywheel, it)
        if store.is_committed(key) and gate(cfg, store.read_artifact_json(key, "metrics.json")):
            continue
        return it
    return None


def judge_gate(ref: Ref) -> dict[str, Any]:
    """The canary's verdict on the judge: raises :class:`~arena_ops.battle.canary.JudgeGateError` naming each breached
    metric, its value and its limit (``judge.gate``); the round's battles stay, its training data is never built."""
    from arena_ops.battle.canary import JudgeGateError

    out = judge_canary(ref)
    if out.get("breaches"):
        raise JudgeGateError(
            f"iteration {ref['iteration']} of {ref['flywheel']}: the judge failed its canary ({out['uri']}): "
            + "; ".join(out["breaches"])
            + f" (judge {out['judge']!r}, template {out['template']}, {out['judged_pairs']} of {out['pairs']} pairs "
            "judged). The round stops before its training data; its battles stay. Fix the judge or judge.gate, rerun."
        )
    return out


def canary_status(cfg: ArenaConfig, store: ArtifactStore, rnd: Round) -> dict[str, Any] | None:
    """The round's stored canary metrics with the gate's breaches (None when it has none); judges nothing."""
    from arena_ops.battle.canary import gate

    key = layout.canary(rnd.flywheel, rnd.iteration)
    if not store.is_committed(key):
        return None
    m = store.read_artifact_json(key, "metrics.json")
    return {**m, "breaches": gate(cfg, m), "uri": store.key_uri(key)}


# Training -------------------------------------------------------------------------------------------------------------


def submit(ref: Ref, stage: str) -> dict[str, Any]:
    """Prepare and launch ``stage``'s job from the round's current policy; the handle is kept in the store."""
    from arena_ops.training.run import TrainingJob, prepare_stage, submit_stage

    rnd, cfg, store = load(ref)
    if stage not in rnd.stages:
        return {"stage": stage, "skipped": "not in this round's plan"}
    base = rnd.current_policy(store, stage)
    labels = {"base_label": base.label if base else None, "label": rnd.label(rnd.iteration, stage)}
    job: TrainingJob = prepare_stage(cfg, store, rnd.iteration, stage, base.uri if base else "", labels)
    if job.done is None and cfg.cost.budget is not None:
        from arena_ops import ledger

        rows = store.manifest(layout.train_data(rnd.flywheel, rnd.iteration, stage)).rows
        est = ledger.estimate_training(cfg, store, rnd.iteration, stage, rows)
        what = f"the {stage} job ({rows} rows; " + (
            "no earlier job to estimate from)" if est is None else "estimated from the last one)"
        )
        ledger.check_budget(cfg, store, rnd.iteration, what, est or 0.0, skip=f"train-{stage}")
    return submit_stage(cfg, store, job).model_dump(mode="json")


def poll(ref: Ref, stage: str) -> bool:
    """True when ``stage``'s job is done (or there was nothing to run); raises with the log tail on failure."""
    from arena_ops.training.run import TrainingJob, poll_stage

    rnd, cfg, store = load(ref)
    if stage not in rnd.stages:
        return True
    return poll_stage(cfg, store, TrainingJob.load(store, rnd.flywheel, rnd.iteration, stage))


def finish(ref: Ref, stage: str) -> dict[str, Any]:
    from arena_ops.training.run import TrainingJob, finish_stage

    rnd, _, store = load(ref)
    if stage not in rnd.stages:
        return {"stage": stage, "skipped": "not in this round's plan"}
    entry = finish_stage(store, TrainingJob.load(store, rnd.flywheel, rnd.iteration, stage))
    _ledger_training(store, rnd, stage, entry)
    return {"stage": stage, **{k: entry.get(k) for k in ("skipped", "model_uri", "label", "metrics", "reused")}}


def _ledger_training(store: ArtifactStore, rnd: Round, stage: str, entry: dict[str, Any]) -> None:
    """The job's seconds as entry ``train-{stage}`` of the round's ledger (once per trained model)."""
    from arena_ops import ledger

    m, name = entry.get("metrics") or {}, f"train-{stage}"
    if (
        not m
        or not entry.get("fingerprint")
        or ledger.fingerprint(store, rnd.flywheel, rnd.iteration, name) == entry["fingerprint"]
    ):
        return
    row = {"role": "task", "model": None, "wall_s": m.get("job_wall_seconds", m.get("train_seconds"))}
    row |= {"cpu_s": m.get("cpu_seconds"), "gpu_s": m.get("gpu_seconds")}
    ledger.write(
        store,
        rnd.flywheel,
        rnd.iteration,
        name,
        "train",
        [row],
        fingerprint=entry["fingerprint"],
        stage=stage,
        examples=m.get("examples"),
        model=entry.get("label"),
    )


def train(ref: Ref, stage: str, poll_s: float = 1.0, timeout_s: float = 6 * 3600) -> dict[str, Any]:
    """submit + wait + finish in one call (the CLI; the DAG splits them around a reschedule-mode sensor)."""
    submit(ref, stage)
    deadline = time.monotonic() + timeout_s
    while not poll(ref, stage):
        if time.monotonic() > deadline:
            raise TrainingError(f"{stage} job of iteration {ref['iteration']} exceeded {timeout_s:.0f}s")
        time.sleep(poll_s)
    return finish(ref, stage)


# Evaluation -----------------------------------------------------------------------------------------------------------


def evaluate(ref: Ref, which: str, progress: Any = None, testsets: list[str] | None = None) -> dict[str, Any]:
    """Rate one model of the round on each test set (its battles against every competitor, both orders judged):
    ``start`` = the model the round started from, else the policy that stage ``which`` produced. ``testsets``
    defaults to the round's evaluation plan (Mix)."""
    from arena_ops.battle.run import BattleRun, plan

    rnd, cfg, store = load(ref)
    if which != "start" and (which not in rnd.stages or not STAGES[which].policy):
        return {"skipped": f"{which} produces no policy in this round"}
    model = rnd.start if which == "start" else rnd.produced(store, which)
    if model is None:
        return {"skipped": "the target is not served" if which == "start" else f"{which} trained no model"}
    out: dict[str, Any] = {"model": model.label}
    for ts in testsets or rnd.evaluation:
        prompts_key = layout.testset(cfg.flywheel, ts)
        if not store.is_committed(prompts_key):
            out[ts] = {
                "skipped": f"no testset-{ts} (build it with the arena_testset_build DAG or `arena data testset`)"
            }
            continue
        ecfg = with_target(cfg, model, sample_limit=None)
        meta = {
            "target_label": model.label,
            "target_name": cfg.models.target.name,
            "evaluated_model": model.uri,
            "testset": ts,
            "iteration": rnd.iteration,
        }
        run = BattleRun(
            ecfg,
            store,
            rnd.iteration,
            layout.eval_run(ts),
            plan(ecfg, store.read_artifact_table(prompts_key), "target_vs_competitors"),
            base=layout.eval_base(cfg.flywheel, ts),
            table=model.tag,
            meta=meta,
        )
        out[ts] = _battle(cfg, store, run, model, progress, rnd.iteration, f"eval-{ts}-{model.tag}")
    return out


def eval_tables(cfg: ArenaConfig, store: ArtifactStore, testset: str = "mix") -> dict[str, pa.Table]:
    """Evaluated model label → its battles on the test set, the target renamed to that label."""
    return catalogue.evaluations(store, cfg.flywheel, testset)


def training_tables(cfg: ArenaConfig, store: ArtifactStore) -> list[pa.Table]:
    """Every step's battle table of every iteration, the target renamed to the label of the model that battled."""
    return [catalogue.read(store, e) for e in catalogue.battle_tables(store, cfg.flywheel, "training")]


# Whole rounds ---------------------------------------------------------------------------------------------------------


def run_round(
    config_path: str,
    iteration: int | None = None,
    policies: list[str] | None = None,
    say: Callable[[str], None] = log.info,
    progress: Any = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A whole round without Airflow: the DAG's tasks, in the DAG's order, in this process (resumable)."""
    t0 = time.perf_counter()
    ref = resolve_round(config_path, iteration=iteration, policies=policies, overrides=overrides)
    rnd, cfg, _ = load(ref)
    say(
        f"round {rnd.iteration} of {rnd.flywheel}: {rnd.schedule} schedule, steps {[s.name for s in rnd.steps]}, "
        f"starting from {rnd.start.label if rnd.start else 'a model that is not served'}"
    )
    prepare_data(ref)
    parts: dict[str, Any] = {"battles": {}, "training_data": {}, "training": [], "evaluation": {}}
    judge_canary(ref)
    parts["evaluation"]["start"] = evaluate(ref, "start", progress)
    for k, st in enumerate(rnd.steps):
        where = f"slice {st.slice} of {st.partition}" if st.partition else f"slice {st.slice}"
        say(f"step {st.name}: battles on {where} (serves what it needs)")
        parts["battles"][st.name] = battle_step(ref, k, progress)
        parts["training_data"][st.name] = step_data(ref, k)
        for stage in st.stages:
            say(f"step {st.name}: training {stage} ({cfg.training.launcher.kind} launcher)")
            entry = train(ref, stage)
            parts["training"].append(entry)
            if STAGES[stage].policy:
                parts["evaluation"][stage] = evaluate(ref, stage, progress)
    parts["wall_s"] = round(time.perf_counter() - t0, 1)
    rep = report(ref, parts)
    return {**ref, **rep, "wall_s": parts["wall_s"]}


# Report -------------------------------------------------------------------------------------------------------------


def round_status(rnd: Round, store: ArtifactStore) -> dict[str, Any]:
    """The record and its progress: for each step, which model battled, its battles, rows and produced models; the
    canary, the promotion decision and the cost ledger so far."""
    from arena_ops import ledger

    steps = []
    for st in rnd.steps:
        table = catalogue.step_table(store, rnd.flywheel, rnd.iteration, st.run)
        meta = table.meta if table is not None else None
        rows, produced = {}, {}
        for stage in st.stages:
            dkey = layout.train_data(rnd.flywheel, rnd.iteration, stage)
            rows[stage] = store.manifest(dkey).rows if store.is_committed(dkey) else None
            model = rnd.produced(store, stage)
            reason = None
            if model is None:
                reason = "no training rows" if rows[stage] == 0 else "not trained yet"
            produced[stage] = {
                "model": model.uri if model else None,
                "label": model.label if model else None,
                "reason": reason,
            }
        policy = next((s for s in reversed(st.stages) if STAGES[s].policy), None)
        steps.append(
            {
                "stage": st.name,
                "slice": st.slice,
                "partition": st.partition,
                "run": st.run,
                "battled_model": meta.get("battled_model") if meta else None,
                "battled_label": meta.get("target_label") if meta else None,
                "battles": {"uri": store.key_uri(table.key), "count": meta.get("battles")} if table and meta else None,
                "training_rows": rows,
                "produced_model": produced[policy]["model"] if policy else None,
                "produced_reason": produced[policy]["reason"] if policy else "battles only",
                "produced": produced,
            }
        )
    return {
        "flywheel": rnd.flywheel,
        "iteration": rnd.iteration,
        "schedule": rnd.schedule,
        "start": rnd.start.model_dump() if rnd.start else None,
        "resolved_at": rnd.resolved_at,
        "steps": steps,
        "reported": store.is_committed(layout.round_report(rnd.flywheel, rnd.iteration)),
        "canary": canary_status(rnd.cfg(), store, rnd),
        "promotion": _stored_promotion(store, rnd),
        "ledger": ledger.summary(rnd.cfg(), store, rnd.iteration),
    }


def _stored_promotion(store: ArtifactStore, rnd: Round) -> dict[str, Any] | None:
    from arena_ops import promotion

    return promotion.read(store, rnd.flywheel, rnd.iteration)


def report(ref: Ref, parts: dict[str, Any]) -> dict[str, Any]:
    """The round report (JSON and Markdown): steps with battled and produced models, W/L/T, training, evaluations,
    and the round's own Elo on the Mix board (computed here from every evaluation so far, not read from the Elo
    DAG, which may not have run yet)."""
    rnd, cfg, store = load(ref)
    status = round_status(rnd, store)
    status.pop("reported", None)  # the status of a round; in its own report it could only say "not yet"
    status["promotion"] = _promotion(cfg, store, rnd)
    body = {**status, **parts, "elo": _round_elo(cfg, store)}
    key = layout.round_report(rnd.flywheel, rnd.iteration)
    body = json.loads(json.dumps(body, default=str))  # as stored, so that it compares with the stored one
    if store.is_committed(key) and _substance(store.read_artifact_json(key, "report.json")) == _substance(body):
        return {"uri": store.key_uri(key)}  # a rerun that found everything done: nothing new to say
    with store.artifact_at(key, meta={"iteration": rnd.iteration}) as w:
        w.write_json("report.json", body)
        w.put_bytes("report.md", render_report(body).encode())
    return {"uri": w.uri}


def _promotion(cfg: ArenaConfig, store: ArtifactStore, rnd: Round) -> dict[str, Any] | None:
    """Decide (and record) which model the next iteration starts from (:mod:`arena_ops.promotion`); once the next
    round has started from it, the record stands as it is."""
    from arena_ops import promotion
    from arena_ops.round import started

    if rnd.start is None:
        return None
    stored = promotion.read(store, rnd.flywheel, rnd.iteration)
    if promotion.answered(stored):
        return stored  # a person decided: a rerun of the report does not take it back
    nxt = layout.round_record(rnd.flywheel, rnd.iteration + 1)
    if (
        stored is not None
        and store.is_committed(nxt)
        and started(Round.load(store, rnd.flywheel, rnd.iteration + 1), store)
    ):
        return stored
    rec = json.loads(json.dumps(promotion.decide(cfg, store, rnd.iteration, rnd.start, rnd.policies(store))))
    if rec != stored:
        promotion.write(store, rec)
    return rec


def approval_request(ref: Ref) -> str | None:
    """The evidence (Markdown) of the round's promotion when it waits for a person's approval, else None."""
    from arena_ops import promotion

    rec = promotion.read(Round.from_ref(ref).store(), ref["flywheel"], ref["iteration"])
    return promotion.evidence(rec) if promotion.pending(rec) else None


def approve(ref: Ref, option: str, by: str | None = None, at: str | None = None) -> dict[str, Any]:
    """Record a person's answer to the round's pending promotion and rewrite its report with it."""
    from arena_ops import promotion

    rnd, _, store = load(ref)
    rec = promotion.approve(store, rnd.flywheel, rnd.iteration, option, by, at)
    key = layout.round_report(rnd.flywheel, rnd.iteration)
    if store.is_committed(key):
        body = {**store.read_artifact_json(key, "report.json"), "promotion": rec}
        with store.artifact_at(key, meta={"iteration": rnd.iteration}) as w:
            w.write_json("report.json", body)
            w.put_bytes("report.md", render_report(body).encode())
    return {"decision": rec["decision"], "chosen": rec["chosen"]["label"], "by": by, "option": option}


_RUN_SPECIFIC = {"dag_run", "wall_s", "reused"}  # which run wrote a report and how long it took, not what it says


def _substance(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _substance(v) for k, v in body.items() if k not in _RUN_SPECIFIC}
    if isinstance(body, list):
        return [_substance(v) for v in body]
    return body


def _round_elo(cfg: ArenaConfig, store: ArtifactStore) -> dict[str, Any] | None:
    from arena_ops.rating.battles import validate_battles
    from arena_ops.rating.leaderboard import compute_leaderboard

    tables = list(eval_tables(cfg, store, "mix").values())
    scope = "eval-mix"
    if not tables:
        tables, scope = training_tables(cfg, store), "all"
    if not tables:
        return None
    battles = validate_battles(pa.concat_tables(tables, promote_options="permissive"), source="round battles").table
    if len(set(battles["model_a"].to_pylist()) | set(battles["model_b"].to_pylist())) < 2:
        return None
    r = cfg.rating
    lb = compute_leaderboard(
        battles, rounds=r.bootstrap_rounds, seed=r.seed, ci_level=r.ci_level, prior_games=r.prior_games
    )
    return {
        "scope": scope,
        "board": [{k: r[k] for k in ("model", "rating", "ci_low", "ci_high", "rank")} for r in lb.records()],
    }


def render_report(body: dict[str, Any]) -> str:
    start = body.get("start") or {}
    lines = [
        f"# Round {body['iteration']} of `{body['flywheel']}`",
        "",
        f"- schedule: {body.get('schedule')}; started from `{start.get('label')}` (`{start.get('uri')}`)",
        "",
        "| step | slice | battled model | battles | training rows | produced |",
        "| --- | ---: | --- | ---: | --- | --- |",
    ]
    for st in body.get("steps") or []:
        rows = ", ".join(f"{k} {v}" for k, v in st["training_rows"].items())
        made = ", ".join(f"{k}: {p['label'] or p['reason']}" for k, p in st["produced"].items())
        count = (st["battles"] or {}).get("count")
        lines.append(f"| {st['stage']} | {st['slice']} | `{st['battled_label']}` | {count} | {rows} | {made} |")
    for name, b in (body.get("battles") or {}).items():
        if not b or "per_model" not in b or not b["per_model"]:
            continue
        lines += [
            "",
            f"Step {name}: {b.get('battles')} battles, {b.get('invalid')} invalid",
            "",
            "| model | wins | losses | ties |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {m} | {c['wins']} | {c['losses']} | {c['ties']} |" for m, c in b["per_model"].items()]
    if body.get("training"):
        lines.append("")
    for entry in body.get("training") or []:
        m = entry.get("metrics") or {}
        what = entry.get("skipped") or f"{m.get('steps')} steps, loss {m.get('first_loss')} → {m.get('last_loss')}"
        lines.append(f"- {entry.get('stage')}: {what}")
    lines += _canary_lines(body.get("canary")) + _promotion_lines(body.get("promotion"))
    lines += ledger_lines(body.get("ledger"))
    elo = body.get("elo")
    if elo:
        lines += ["", f"Elo ({elo['scope']}):", "", "| model | rating | 95% CI | rank |", "| --- | ---: | --- | ---: |"]
        lines += [
            f"| {r['model']} | {r['rating']:.0f} | {r['ci_low']:.0f} – {r['ci_high']:.0f} | {r['rank']} |"
            for r in elo["board"]
        ]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}"


def _canary_lines(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    verdict = "**gate breached**: " + "; ".join(c["breaches"]) if c.get("breaches") else "passed the gate"
    return [
        "",
        f"Judge canary ({c['judged_pairs']} of {c['pairs']} pairs; judge `{c['judge']}`, template {c['template']}, "
        f"hash {str(c.get('judge_hash'))[:12]}): agreement {_fmt(c.get('agreement'))}, position flips "
        f"{_fmt(c.get('position_flips'))}, first-position wins {_fmt(c.get('first_position_win_rate'))}, drift "
        f"{_fmt(c.get('drift'))} — {verdict}",
    ]


def _promotion_lines(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    a = p.get("approval") or {}
    if a.get("status") == "pending":
        head = (
            f"Promotion **waits for approval** (proposed: {a['proposed']}, `{p['chosen']['label']}`; the alternative: "
            f"`{a['candidate']['label'] if a['proposed'] == 'keep' else p['incumbent']['label']}`): {p['reason']}"
        )
    else:
        head = f"Next iteration starts from `{p['chosen']['label']}` ({p['decision']}): {p['reason']}"
        if a.get("status") == "answered":
            head += f" — approved by {a.get('by') or 'someone'} at {a.get('at')}"
    lines = ["", head]
    rated = [c for c in p.get("challengers", []) if "p_better" in c]
    if rated:
        inc = p["incumbent"]
        lines += [
            "",
            f"| model | rating | {int(100 * p['confidence'])}% decision: P(better than `{inc['label']}`) |",
            "| --- | ---: | ---: |",
            f"| {inc['label']} (incumbent) | {_fmt(inc.get('rating'))} | |",
        ]
        lines += [f"| {c['label']} | {_fmt(c.get('rating'))} | {c['p_better']:.2f} |" for c in rated]
    return lines


def ledger_lines(led: dict[str, Any] | None) -> list[str]:
    """The cost ledger as Markdown: one row per entry and model, then the round's totals."""
    if not led:
        return []
    c, t = led["currency"], led["totals"]
    per_1k = led["cost_per_1k_judgments"]
    rate = led["battles_per_hour"]
    budget = f"; budget {led['budget']:.4f} {c}" if led.get("budget") is not None else ""
    lines = [
        "",
        f"Cost ledger: {led['cost']:.4f} {c} in all{budget}; "
        + (f"{per_1k:.4f} {c} per 1k judgments ({t['judgments']} judgments)" if per_1k is not None else "no judgments")
        + (f"; {rate:.0f} battles/hour" if rate is not None else ""),
        "",
        "| entry | model (role) | requests | tokens in | tokens out | wall s | CPU s | GPU s | cost |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in led["rows"]:
        who = "task" if r["role"] == "task" else f"{r['model']} ({r['role']})"
        cells = [r.get(k) for k in ("requests", "prompt_tokens", "completion_tokens")]
        secs = [r.get(k) for k in ("wall_s", "cpu_s", "gpu_s")]
        lines.append(
            f"| {r['entry']} | {who} | "
            + " | ".join("" if v is None else str(v) for v in cells)
            + " | "
            + " | ".join("" if v is None else f"{v:.1f}" for v in secs)
            + f" | {r['cost']:.4f} |"
        )
    lines.append(
        f"| **total** | | {t['requests']} | {t['prompt_tokens']} | {t['completion_tokens']} | {t['wall_s']:.1f} | "
        f"{t['cpu_s']:.1f} | {t['gpu_s']:.1f} | {led['cost']:.4f} |"
    )
    return lines


# Elo ---------------------------------------------------------------------------------------------------------------


def elo_update(config_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`elo_update_for` the flywheel of a config file."""
    return elo_update_for(load_config(config_path, overrides or {}))


def elo_update_from_events(config_path: str, extras: list[dict[str, Any]]) -> dict[str, Any]:
    """The Elo DAG's task: rate the flywheel of ``config_path`` — the one whose battles Asset fired. ``extras`` are
    the triggering Asset events' extras: round references (flywheel, iteration, storage). The newest round's config
    snapshot is used (its store and rating settings: what the round wrote with); an event of another flywheel is
    refused, never rated here."""
    cfg = load_config(config_path)
    refs = [e for e in extras if e.get("iteration") is not None and e.get("storage")]
    strangers = sorted({str(e.get("flywheel")) for e in extras if e.get("flywheel") not in (None, cfg.flywheel)})
    if strangers:
        raise ConfigError(
            f"the Elo DAG of flywheel {cfg.flywheel!r} ({config_path}) was triggered by battles of {strangers}: "
            "each flywheel's Elo DAG rates its own battles Asset only"
        )
    if refs:
        newest = max(refs, key=lambda e: int(e["iteration"]))
        cfg = Round.from_ref({**newest, "flywheel": cfg.flywheel}).cfg()
    out = elo_update_for(cfg)
    return {**out, "flywheel": cfg.flywheel, "rounds": sorted({int(e["iteration"]) for e in refs})}


def elo_update_for(cfg: ArenaConfig) -> dict[str, Any]:
    """Recompute the leaderboards from every battle table of the flywheel; write them and a round-over-round history.

    The target changes every step, so its battles are rated under the label of the model that battled
    (``name@base``, ``name@i0-sft``, …); other models keep their names. Boards: ``all`` (every step's and every
    evaluation's battles) and one per test set (``eval-mix``: the paper's offline leaderboard).
    """
    from arena_ops.rating.battles import validate_battles
    from arena_ops.rating.leaderboard import leaderboard_files

    store = ArtifactStore.from_config(cfg.storage)
    testsets = catalogue.testsets_with_battles(store, cfg.flywheel)
    evals = {ts: list(eval_tables(cfg, store, ts).values()) for ts in testsets}
    tables = training_tables(cfg, store) + [t for ts in testsets for t in evals[ts]]
    if not tables:
        return {"skipped": "no battle records yet"}

    def rate(table: pa.Table) -> Any:
        return rate_battles(cfg, table)

    battles = validate_battles(pa.concat_tables(tables, promote_options="permissive"), source="store battles")
    lb = rate(battles.table)
    scopes = [{"scope": "all", "label": "All battles", "battles": battles.table.num_rows}]
    for ts in testsets:  # each board one artifact: a reader never pairs a new board with old win rates
        subset = validate_battles(pa.concat_tables(evals[ts], promote_options="permissive"), source=f"eval {ts}").table
        scope = layout.eval_run(ts)
        with store.artifact_at(layout.leaderboard(cfg.flywheel, scope), meta={"battles": subset.num_rows}) as w:
            for name, data in leaderboard_files(rate(subset)).items():
                w.put_bytes(name, data)
        scopes.append({"scope": scope, "label": f"Test set {ts}", "battles": subset.num_rows})
    iterations = store.list_iterations(cfg.flywheel)
    history = _history(cfg, store, lb.records(), iterations[-1] if iterations else 0)
    with store.artifact_at(layout.leaderboard(cfg.flywheel), meta={"battles": battles.table.num_rows}) as w:
        for name, data in leaderboard_files(lb).items():
            w.put_bytes(name, data)
        w.write_json("scopes.json", scopes)
        w.write_json("history.json", history)
    return {
        "uri": store.key_uri(layout.leaderboard(cfg.flywheel)),
        "battles": battles.table.num_rows,
        "models": len(lb.records()),
        "scopes": [s["scope"] for s in scopes],
        "quarantined": battles.quarantine.num_rows,
    }


def rate_battles(cfg: ArenaConfig, table: pa.Table) -> Any:
    """The flywheel's leaderboard of a validated battle table: its ``rating`` settings, anchored where the anchored
    model is on this board."""
    from arena_ops.rating.leaderboard import compute_leaderboard

    r = cfg.rating
    return compute_leaderboard(
        table,
        rounds=r.bootstrap_rounds,
        seed=r.seed,
        ci_level=r.ci_level,
        anchor=_anchor(table, r.anchor),
        prior_games=r.prior_games,
    )


def _anchor(table: pa.Table, anchor: str | None) -> tuple[str, float] | None:
    """The configured anchor, where the anchored model is on this board."""
    from arena_ops.rating.bt import parse_anchor

    parsed = parse_anchor(anchor)
    if parsed is None:
        return None
    present = set(table["model_a"].to_pylist()) | set(table["model_b"].to_pylist())
    return parsed if parsed[0] in present else None


def read_history(store: ArtifactStore, flywheel: str) -> list[dict[str, Any]]:
    """The flywheel's round-over-round ratings (``history.json`` of its board), checked against the board's
    manifest; a board written before boards had manifests is read as it is."""
    prefix = layout.leaderboard(flywheel)
    if store.is_committed(prefix):
        m = store.manifest(prefix)
        return store.read_artifact_json(prefix, "history.json") if "history.json" in {f.path for f in m.files} else []
    key = f"{prefix}/history.json"
    return store.read_json(key) if store.exists(key) else []


def _history(cfg: ArenaConfig, store: ArtifactStore, records: list[dict[str, Any]], iteration: int) -> list:
    """One entry per Elo computation at the newest iteration seen (replaced when recomputed for that iteration)."""
    history = [h for h in read_history(store, cfg.flywheel) if h["iteration"] != iteration]
    board = {rec["model"]: round(float(rec["rating"]), 1) for rec in records}
    return sorted([*history, {"iteration": iteration, "ratings": board}], key=lambda h: h["iteration"])
