"""`make demo`: the flywheel turning on the stack, as a user runs it — a real model that gets better round over round.

Brings the stack up (`arena stack up`: PostgreSQL, SeaweedFS, two Ray nodes, the whole Airflow), builds the test set
with the ``arena_testset_build`` DAG, backfills iterations 0…n-1 of the round DAG through Airflow's REST API (what the
UI's Backfill dialog does), shows the progress, then prints the Mix leaderboard, the target's Elo stage by stage,
whether it improved (non-overlapping 95% intervals, or the numbers that say it did not), the time of each phase and
where everything is. The stack stays up; `make down` stops it. Figures go to ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from arena_ops import catalogue, layout
from arena_ops.airflow.api import AirflowAPI
from arena_ops.cli.common import short_path as _short
from arena_ops.config import ArenaConfig, load_config
from arena_ops.store import ArtifactStore

REPO = Path(__file__).resolve().parents[2]
ROUND, ELO, TESTSET = "arena_flywheel_round", "arena_elo", "arena_testset_build"


def dag_of(base: str, flywheel: str) -> str:
    """A flywheel's DAG id, as the DAG files generate it (``arena_elo__<flywheel>``, ``-`` mapped to ``_``)."""
    return f"{base}__{flywheel.replace('-', '_')}"


FINISHED = {"success", "failed"}
ACTIVE_TASK_STATES = {"running", "up_for_reschedule", "deferred", "queued", "scheduled", "up_for_retry"}


def say(msg: str) -> None:
    print(msg, flush=True)


def elapsed(since: float) -> str:
    s = int(time.monotonic() - since)
    return f"{s // 60:02d}:{s % 60:02d}"


def _iso(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def _seconds(ti: dict[str, Any]) -> float:
    start, end = _iso(ti.get("start_date")), _iso(ti.get("end_date"))
    return (end - start).total_seconds() if start and end else 0.0


# Progress -------------------------------------------------------------------------------------------------------------


def battle_progress(cfg: ArenaConfig, store: ArtifactStore, iteration: int) -> tuple[int, int]:
    """(battles done, battles planned) of a round: each step's slice and each evaluation on the Mix test set, the
    target against every competitor. Evaluations of a model rated before (a round's start) count as done."""
    from arena_ops.round import Round
    from arena_ops.training.stage_registry import STAGES

    key = layout.round_record(cfg.flywheel, iteration)
    if not store.is_committed(key):
        return 0, 0
    rnd = Round.load(store, cfg.flywheel, iteration)
    rcfg = rnd.cfg()
    n = len(rcfg.models.competitors)
    limit = rcfg.battle.sample_limit
    done = planned = 0
    for st in rnd.steps:
        rows = store.manifest(layout.shard(cfg.flywheel, st.slice)).rows or 0
        planned += min(rows, limit or rows) * n
        table = catalogue.step_table(store, cfg.flywheel, iteration, st.run)
        done += table.meta.get("battles", 0) if table is not None else 0
    mix = store.manifest(layout.testset(cfg.flywheel, "mix")).rows or 0
    models = [rnd.start] + [rnd.produced(store, s) for s in rnd.stages if STAGES[s].policy]
    planned += mix * n * (1 + sum(1 for s in rnd.stages if STAGES[s].policy))
    for m in models:
        if m is not None and catalogue.eval_table(store, cfg.flywheel, "mix", m.tag) is not None:
            done += mix * n
    return done, planned


class Watcher:
    """Prints a line whenever what the user would want to know changes: the round, its running tasks, battles done."""

    def __init__(self, api: AirflowAPI, cfg: ArenaConfig, store: ArtifactStore, start: float) -> None:
        self.api, self.cfg, self.store, self.start = api, cfg, store, start
        self.last = ""

    def show(self, what: str) -> None:
        if what != self.last:
            say(f"  [{elapsed(self.start)}] {what}")
            self.last = what

    def run(self, dag_id: str, run_id: str, label: str, iteration: int | None = None) -> dict[str, Any]:
        """Until the run finishes; returns it (a failed run raises with its failed tasks and the way to resume)."""
        while True:
            run = self.api.run(dag_id, run_id)
            tis = self.api.task_instances(dag_id, run_id)
            active = sorted(t["task_id"] for t in tis if t["state"] in ACTIVE_TASK_STATES and t["start_date"])
            ok = sum(1 for t in tis if t["state"] in ("success", "skipped"))
            line = f"{label}: {', '.join(active) or run['state']} · tasks {ok}/{len(tis)}"
            if iteration is not None:
                done, planned = battle_progress(self.cfg, self.store, iteration)
                line += f" · battles {done}/{planned or '?'}"
            self.show(line)
            if run["state"] in FINISHED:
                if run["state"] == "failed":
                    failed = [t["task_id"] for t in tis if t["state"] in ("failed", "upstream_failed")]
                    raise SystemExit(
                        f"{label} failed (tasks {failed}); its logs are in the Airflow UI ({self.api.url}, DAG "
                        f"{dag_id}, run {run_id}). Clear the failed tasks there to resume it: work already done is "
                        "reused."
                    )
                return run
            time.sleep(3)


# The demo -------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m arena_ops.local.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"), help="config (default: configs/demo.yaml)")
    p.add_argument("--iterations", type=int, default=2, help="iterations to run (0…n-1; default 2)")
    p.add_argument("--paper", action="store_true", help="the paper's full schedule: SFT, DPO and reward model + RL")
    p.add_argument("--stages", help="policy stages, comma-separated (default: the config's training.stages)")
    p.add_argument("--sample-limit", type=int, help="at most this many prompts per slice (a quick look)")
    p.add_argument("--out", default=str(REPO / ".arena" / "demo"), help="where summary.json and copies go")
    args = p.parse_args(argv)

    t0 = time.monotonic()
    config_path = Path(args.config).resolve()
    cfg = load_config(config_path)
    stages = ["sft", "dpo", "rl"] if args.paper else args.stages.split(",") if args.stages else cfg.training.stages
    from arena_ops.local.stack import Stack

    stack = Stack(cfg, config_path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    judge = (
        f"a verifier ({cfg.judge.verifier} match of the reference answer, scored 10 / 1 on the LLM judge's scale)"
        if cfg.judge.kind == "verifier"
        else f"the LLM judge {cfg.models.judge.name}"
    )
    say(
        f"Arena Flywheel demo: {args.iterations} iteration(s) of flywheel {cfg.flywheel!r}, {cfg.training.schedule} "
        f"schedule, stages {' → '.join(stages)}; target {cfg.models.target.name}, competitors "
        f"{', '.join(c.name for c in cfg.models.competitors)}.\nThe judge is {judge}"
        + (
            ": a CPU has no room for an LLM judge; configs/cluster.yaml uses the paper's LLM judge."
            if cfg.judge.kind == "verifier"
            else "."
        )
    )
    phases: dict[str, float] = {}

    # 1. The stack. ------------------------------------------------------------------------------------------------
    say(
        "\n== stack: PostgreSQL, SeaweedFS (S3), Ray head + worker, Airflow (api-server, scheduler, dag-processor, "
        "triggerer)"
    )
    t = time.monotonic()
    stack.up(progress=lambda msg: say(f"  {msg}"))
    phases["stack"] = round(time.monotonic() - t, 1)
    say(f"  healthy in {phases['stack']:.0f} s")
    # This process reads the store as the stack's users do: the S3 connection's credentials in its environment.
    os.environ.update(stack.client_env())
    store = ArtifactStore.from_config(cfg.storage)
    # A round's record is written once: where this flywheel's rounds already ran with other stages or another prompt
    # limit, the demo is an experiment of its own — a flywheel of its own in the stack's flywheel folder, beside the
    # config's (both boards in the Arena view).
    cfg, flywheel_path = _variant(cfg, stack, store, stages, args.sample_limit, args.iterations)
    dag = {base: dag_of(base, cfg.flywheel) for base in (ROUND, ELO, TESTSET)}
    api = AirflowAPI.for_stack(stack.airflow_url, stack.airflow_home)
    say(f"  flywheel {cfg.flywheel!r}: {_short(flywheel_path)} in the flywheel folder {_short(stack.flywheels_dir)}")
    api.wait_for_dags([dag[ROUND], dag[ELO], dag[TESTSET]])
    # Runs of a paused DAG never start (backfills included). The Elo DAG runs on the battles Asset: the board follows
    # every new battle table. Unpaused, the round DAG's scheduler also runs the latest night: under the paper schedule
    # that iteration (days since start_date) is past the corpus, and the run skips itself.
    for dag_id in (dag[TESTSET], dag[ROUND], dag[ELO]):
        api.set_paused(dag_id, False)
    watch = Watcher(api, cfg, store, t0)

    # 2. The test set (its DAG also deploys every served model). ------------------------------------------------
    testset_s = serving_s = 0.0
    if not store.is_committed(layout.testset(cfg.flywheel, "mix")):
        say(f"\n== test set: DAG {dag[TESTSET]} (corpus → clean → serve the models → Diverse/Hard/Mix → slices)")
        run = api.trigger(dag[TESTSET], {})
        watch.run(dag[TESTSET], run["dag_run_id"], "test set")
        for ti in api.task_instances(dag[TESTSET], run["dag_run_id"]):
            if ti["task_id"] == "serve_judge":
                serving_s += _seconds(ti)
            else:
                testset_s += _seconds(ti)
    say(f"  Mix test set: {store.manifest(layout.testset(cfg.flywheel, 'mix')).rows} prompts")

    # 3. The rounds: a backfill of iterations 0…n-1 (logical date = airflow.start_date + i days). -----------------
    first = date.fromisoformat(cfg.airflow.start_date)
    # From the first iteration not yet reported with these settings on: each later one starts from its policies.
    fresh = [i for i in range(args.iterations) if not _reported(store, cfg, i, stages, args.sample_limit)]
    todo = list(range(fresh[0], args.iterations)) if fresh else []
    round_runs: list[dict[str, Any]] = []
    if todo:
        days = (first + timedelta(days=todo[0]), first + timedelta(days=todo[-1]))
        conf: dict[str, Any] = {"stages": stages}
        if args.sample_limit:
            conf["sample_limit"] = args.sample_limit
        say(
            f"\n== rounds: backfill of DAG {dag[ROUND]}, logical dates {days[0]} … {days[1]} = iterations "
            f"{todo[0]} … {todo[-1]}"
        )
        # Dates whose earlier run succeeded with other stages (e.g. `--paper` after the default demo) run again: the
        # re-resolved rounds reuse every battle and model whose inputs did not change.
        bf = api.create_backfill(
            dag[ROUND], f"{days[0]}T00:00:00Z", f"{days[1]}T23:59:59Z", conf, reprocess_behavior="completed"
        )
        say(f"  backfill {bf['id']} created; the UI shows it on the DAG's page ({stack.airflow_url}/dags/{dag[ROUND]})")
        for i in todo:
            run = _wait_backfill_run(api, first + timedelta(days=i), watch, since=_iso(bf["created_at"]))
            round_runs.append(watch.run(dag[ROUND], run["dag_run_id"], f"round {i}", iteration=i))
    else:
        say(
            f"\n== rounds: iterations 0 … {args.iterations - 1} are already reported (`make down`, then delete "
            f"{_short(stack.dir)} to start afresh: it holds the S3 data too)"
        )

    # 4. The board: the Elo DAG runs on each new battle table; wait for the one after the last round. -----------
    say(f"\n== Elo: DAG {dag[ELO]} (triggered by the flywheel's battles Asset)")
    elo_runs = _wait_elo(api, watch, since=max((_iso(r["end_date"]) for r in round_runs), default=None))
    phases.update(_phases(api, store, cfg, round_runs, elo_runs, serving_s, testset_s))
    phases["total"] = round(time.monotonic() - t0, 1)
    summary = report(cfg, store, out, stack, args.iterations, stages, phases)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(f"\nFigures: {out / 'summary.json'}")


def _variant(
    cfg: ArenaConfig, stack: Any, store: ArtifactStore, stages: list[str], limit: int | None, iterations: int
) -> tuple[ArenaConfig, Path]:
    """The demo's flywheel: the config's own, unless one of its first ``iterations`` rounds has started with other
    stages or another prompt limit; then a variant named after them (``demo-sft-dpo-rl``), written into the stack's
    flywheel folder as a config that loads back the same (its DAGs appear at the next parse)."""
    from arena_ops.round import Round, snapshot, started
    from arena_ops.training.stage_registry import with_needs

    def clashes(i: int) -> bool:
        if not store.is_committed(layout.round_record(cfg.flywheel, i)):
            return False
        rnd = Round.load(store, cfg.flywheel, i)
        same = rnd.stages == with_needs(stages) and rnd.cfg().battle.sample_limit == limit
        return not same and started(rnd, store)

    if not any(clashes(i) for i in range(iterations)):
        return cfg, stack.flywheels_dir / f"{cfg.flywheel}.yaml"
    name = "-".join([cfg.flywheel, *stages] + ([f"n{limit}"] if limit else []))
    data = snapshot(cfg)
    data["flywheel"] = name
    data.setdefault("training", {})["stages"] = list(stages)
    if limit:
        data.setdefault("battle", {})["sample_limit"] = limit
    path = stack.flywheels_dir / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path), path


def _reported(store: ArtifactStore, cfg: ArenaConfig, i: int, stages: list[str], limit: int | None) -> bool:
    """Whether iteration ``i`` has a report from a round with these stages and this prompt limit."""
    from arena_ops.round import Round
    from arena_ops.training.stage_registry import with_needs

    if not store.is_committed(layout.round_report(cfg.flywheel, i)):
        return False
    rnd = Round.load(store, cfg.flywheel, i)
    return rnd.stages == with_needs(stages) and rnd.cfg().battle.sample_limit == limit


def _wait_backfill_run(
    api: AirflowAPI, day: date, watch: Watcher, since: datetime, timeout_s: float = 600
) -> dict[str, Any]:
    """The backfill's run for one logical date (queued since the backfill was created: a rerun reuses the date's
    earlier run), once it is there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in api.runs(dag_of(ROUND, watch.cfg.flywheel), run_type="backfill"):
            queued = _iso(run.get("queued_at"))
            if _iso(run["logical_date"]).date() == day and queued and queued >= since - timedelta(seconds=5):
                return run
        watch.show(f"waiting for the scheduler to start the run of {day}")
        time.sleep(3)
    raise SystemExit(f"the scheduler started no run for {day} in {timeout_s:.0f} s: is it healthy? (make up)")


def _wait_elo(api: AirflowAPI, watch: Watcher, since: datetime | None, timeout_s: float = 900) -> list[dict]:
    """Elo runs that started after ``since`` (the last round's end), once none is queued or running; with no round
    run now (``since`` None), the latest Elo run at once, if any."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = api.runs(dag_of(ELO, watch.cfg.flywheel))
        fresh = [r for r in runs if since is None or (_iso(r["start_date"]) or since) >= since - timedelta(seconds=60)]
        busy = [r for r in runs if r["state"] not in FINISHED]
        if since is None and not busy:  # no round ran now (all reported before): nothing new for the Elo DAG
            return runs[:1]
        if fresh and not busy:
            if fresh[0]["state"] == "failed":
                raise SystemExit(f"the Elo DAG failed (run {fresh[0]['dag_run_id']}): see its log in the Airflow UI")
            return fresh
        watch.show(f"Elo: {len(busy)} run(s) queued or running")
        time.sleep(3)
    raise SystemExit(f"no finished Elo run within {timeout_s:.0f} s of the last round")


def _phases(
    api: AirflowAPI,
    store: ArtifactStore,
    cfg: ArenaConfig,
    round_runs: list[dict],
    elo_runs: list[dict],
    serving_s: float,
    testset_s: float,
) -> dict[str, float]:
    """Seconds per phase. Generation and judging as each battle run measured them (the round reports); serving = the
    first deployment plus the rest of the battle and evaluation tasks (deploying, loading new weights); training =
    from each stage's submit to the end of its wait; Elo = the Elo DAG's runs."""
    gen = judge = battle_tasks = training = 0.0
    for run in round_runs:
        tis = {t["task_id"]: t for t in api.task_instances(dag_of(ROUND, cfg.flywheel), run["dag_run_id"])}
        for tid, t in tis.items():
            if tid.startswith(("battles_", "evaluate_")):
                battle_tasks += _seconds(t)
            if tid.startswith("submit_") and f"wait_{tid[7:]}" in tis:
                start, end = _iso(t["start_date"]), _iso(tis[f"wait_{tid[7:]}"]["end_date"])
                training += (end - start).total_seconds() if start and end else 0.0
        iteration = (_iso(run["logical_date"]).date() - date.fromisoformat(cfg.airflow.start_date)).days
        body = store.read_artifact_json(layout.round_report(cfg.flywheel, iteration), "report.json")
        summaries = [*body.get("battles", {}).values()]
        summaries += [e.get("mix") for e in body.get("evaluation", {}).values() if isinstance(e, dict)]
        for sm in summaries:
            if isinstance(sm, dict) and not sm.get("reused"):
                gen += (sm.get("wall_s") or {}).get("generate", 0.0)
                judge += (sm.get("wall_s") or {}).get("judge", 0.0)
    elo = sum((_iso(r["end_date"]) - _iso(r["start_date"])).total_seconds() for r in elo_runs if r["end_date"])
    return {
        "test_set": round(testset_s, 1),
        "serving": round(serving_s + max(battle_tasks - gen - judge, 0.0), 1),
        "generation": round(gen, 1),
        "judging": round(judge, 1),
        "training": round(training, 1),
        "elo": round(elo, 1),
    }


# What the user sees at the end ---------------------------------------------------------------------------------------


def _fmt(rec: dict[str, Any]) -> str:
    return f"{rec['rating']:7.1f}  [{rec['ci_low']:.1f}, {rec['ci_high']:.1f}]"


def _brief(rec: dict[str, Any]) -> str:
    return f"{rec['rating']:.1f} [{rec['ci_low']:.1f}, {rec['ci_high']:.1f}]"


def report(
    cfg: ArenaConfig,
    store: ArtifactStore,
    out: Path,
    stack: Any,
    iterations: int,
    stages: list[str],
    phases: dict[str, float],
) -> dict[str, Any]:
    """Print the board, the target stage by stage, the verdict, the phases and where things are; return the
    summary. ``final`` is the policy the next iteration starts from (the best on the Mix board, as the flywheel
    picks it); ``start`` the configured weights."""
    from arena_ops.round import start_model

    board_key = layout.leaderboard(cfg.flywheel, layout.eval_run("mix"))
    board = {r["model"]: r for r in store.read_artifact_json(board_key, "leaderboard.json")}
    md = store.read_artifact_bytes(board_key, "leaderboard.md").decode()
    mix = store.manifest(layout.testset(cfg.flywheel, "mix")).rows
    say(f"\n== The Mix leaderboard ({mix} prompts; Bradley–Terry Elo, 95% bootstrap intervals)\n\n{md}")

    target = cfg.models.target.name
    steps = sorted((r for r in board.values() if r["model"].startswith(f"{target}@")), key=_stage_order)
    say(
        f"The target stage by stage (Elo on Mix, 95% interval; {cfg.training.schedule} schedule, stages "
        f"{', '.join(stages)}):"
    )
    for rec in steps:
        say(f"  {rec['model']:<28} {_fmt(rec)}")
    start_label = f"{target}@base"
    final_ref = start_model(cfg, store, iterations)
    final_label = final_ref.label if final_ref else start_label
    start, final = board.get(start_label), board.get(final_label)
    verdict, improved = judge_improvement(start_label, start, final_label, final)
    say(f"\nResult: {verdict}.")
    from arena_ops import promotion
    from arena_ops.battle.canary import gate

    decisions = [promotion.read(store, cfg.flywheel, i) for i in range(iterations)]
    for rec in filter(None, decisions):
        probs = ", ".join(f"P({c['label']} > {rec['incumbent']['label']}) = {c['p_better']:.2f}"
                          for c in rec["challengers"] if "p_better" in c)  # fmt: skip
        say(f"Promotion after iteration {rec['iteration']}: {rec['decision']} → {rec['chosen']['label']} ({probs}).")
        say(f"  {rec['reason']}")
    canaries = []
    for i in range(iterations):
        key = layout.canary(cfg.flywheel, i)
        if store.is_committed(key):
            m = store.read_artifact_json(key, "metrics.json")
            canaries.append({"iteration": i, **{k: m.get(k) for k in ("agreement", "position_flips", "drift")}})
            state = "breached: " + "; ".join(gate(cfg, m)) if gate(cfg, m) else "passed"
            say(
                f"Judge canary, iteration {i} ({m['pairs']} labelled pairs, judge {m['judge']}): agreement "
                f"{m['agreement']}, position flips {m['position_flips']}, drift {m['drift']} — gate {state}."
            )
    from arena_ops import ledger

    costs = []
    for i in range(iterations):
        led = ledger.summary(cfg, store, i)
        if led is None:
            continue
        t, c = led["totals"], led["currency"]
        costs.append({"iteration": i, **{k: led[k] for k in ("cost", "cost_per_1k_judgments", "battles_per_hour")}})
        per_1k = f"{led['cost_per_1k_judgments']:.4f} {c} per 1k judgments" if led["cost_per_1k_judgments"] else ""
        say(
            f"Cost ledger, iteration {i}: {led['cost']:.4f} {c} ({per_1k}; {t['judgments']} judgments, "
            f"{led['battles_per_hour'] or 0:.0f} battles/hour; {t['wall_s']:.0f} s wall, {t['cpu_s']:.0f} s CPU)"
        )
        for m in led["per_model"]:
            say(
                f"  {m['model']} ({m['role']}): {m['requests']} requests, {m['prompt_tokens']} tokens in, "
                f"{m['completion_tokens']} out — {m['cost']:.4f} {c}"
            )
        for r in led["rows"]:
            if r["kind"] == "train":
                say(f"  {r['entry']}: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU — {r['cost']:.4f} {c}")
    say("Phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))

    # Local copies of the plots and reports; the store keeps the originals.
    copies = {"elo_ci.png": f"{board_key}/elo_ci.png", "win_rate_heatmap.png": f"{board_key}/win_rate_heatmap.png"}
    for i in range(iterations):
        copies[f"round-{i}-report.md"] = f"{layout.round_report(cfg.flywheel, i)}/report.md"
    for name, key in copies.items():
        if store.exists(key):
            (out / name).write_bytes(store.get_bytes(key))
    say(
        f"Plots and round reports: {_short(out)}/ (elo_ci.png, win_rate_heatmap.png, round-<i>-report.md), "
        f"copied from {store.key_uri(board_key)} and {store.key_uri(layout.round_report(cfg.flywheel, 0))} …"
    )
    user = next(iter(json.loads((stack.airflow_home / "passwords.json").read_text())))
    say(
        f"Airflow UI: {stack.airflow_url}  (user {user}; password: cat {_short(stack.airflow_home)}/passwords.json) "
        f"— the board, the target's progress stage by stage and a page per round under Browse → Arena "
        f"({stack.airflow_url}/plugin/arena)."
    )
    say("The stack stays up for you to look around; stop it with `make down`.")

    def entry(label: str, rec: dict[str, Any] | None) -> dict[str, Any]:
        return {"model": label, **({k: rec[k] for k in ("rating", "ci_low", "ci_high")} if rec else {})}

    return {
        "flywheel": cfg.flywheel,
        "iterations": iterations,
        "schedule": cfg.training.schedule,
        "stages": stages,
        "judge": cfg.judge.kind if cfg.judge.kind != "verifier" else f"verifier:{cfg.judge.verifier}",
        "testset": {"name": "mix", "prompts": mix},
        "start": entry(start_label, start),
        "final": entry(final_label, final),
        "improved": improved,
        "verdict": verdict,
        "target_by_stage": [entry(r["model"], r) for r in steps],
        "board": [entry(r["model"], r) for r in sorted(board.values(), key=lambda r: -r["rating"])],
        "phases": phases,
        "promotion": [d for d in decisions if d],
        "canary": canaries,
        "cost": costs,
    }


def judge_improvement(
    start_label: str, start: dict[str, Any] | None, final_label: str, final: dict[str, Any] | None
) -> tuple[str, bool]:
    """(the sentence the demo prints, improved?): improved only when the final model's 95% interval lies wholly
    above the start model's; otherwise it says so, with the numbers."""
    if start is None or final is None:
        return f"no verdict: {start_label} or {final_label} is not on the Mix board", False
    gap = final["rating"] - start["rating"]
    both = f"{final_label} {_brief(final)} against {start_label} {_brief(start)}"
    if final["ci_low"] > start["ci_high"]:
        return f"the target improved: {both}, {gap:+.0f} Elo; the 95% intervals do not overlap", True
    return f"the target did NOT measurably improve: {both} ({gap:+.0f} Elo); the 95% intervals overlap", False


def _stage_order(rec: dict[str, Any]) -> tuple[int, int]:
    """``name@base`` first, then ``name@i<k>-<stage>`` by iteration and the paper's stage order."""
    tag = rec["model"].split("@", 1)[1]
    if tag == "base":
        return (-1, 0)
    it, _, stage = tag.partition("-")
    order = {"sft": 0, "dpo": 1, "rl": 2}
    return (int(it.lstrip("i")) if it.lstrip("i").isdigit() else 10**6, order.get(stage, 9))


if __name__ == "__main__":
    sys.exit(main())
