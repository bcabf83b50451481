"""One flywheel round: resolve → data → serve → generate (per model) → judge (per chunk) → battles (Asset) →
training data → train each stage (submitted, then a reschedule-mode sensor waits without holding a worker slot) →
evaluate on the test set → round report. Every task calls one arena_ops.flywheel function and passes references."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, PokeReturnValue, TriggerRule, get_current_context, task

from _arena_common import CONFIG_PATH, battles_asset, config, default_args

CFG = config()
STAGES = ["sft", "dpo", "rm", "rl"]

with DAG(
    dag_id="arena_flywheel_round",
    description=f"One Arena Learning round of flywheel {CFG.flywheel!r}",
    schedule=CFG.airflow.schedule,
    start_date=pendulum.parse(CFG.airflow.start_date),
    catchup=CFG.airflow.catchup,
    max_active_runs=1,
    default_args=default_args(CFG),
    tags=["arena"],
    params={
        "config_path": Param(CONFIG_PATH, type="string", description="Arena config YAML."),
        "iteration": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Round to run; empty = from the logical date (days since start_date).",
        ),
        "shard": Param(None, type=["null", "integer"], minimum=0, description="Corpus shard; empty = iteration mod N."),
        "stages": Param(
            CFG.training.stages,
            type="array",
            items={"type": "string", "enum": ["sft", "dpo", "rl"]},
            description="Training stages, run in the paper's order (rl brings its reward model).",
        ),
        "competitors": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            description="Only these competitors (names from the config).",
        ),
        "sample_limit": Param(None, type=["null", "integer"], minimum=1, description="At most this many prompts."),
    },
) as dag:

    @task
    def resolve(params: dict | None = None) -> dict:
        from arena_ops.flywheel import resolve_round

        ctx = get_current_context()
        return resolve_round(
            params["config_path"],
            params["iteration"],
            params["shard"],
            params["stages"],
            params["competitors"],
            params["sample_limit"],
            logical_date=ctx.get("logical_date"),
        )

    @task
    def prepare_data(rnd: dict) -> dict:
        from arena_ops.flywheel import prepare_data

        return prepare_data(rnd)

    @task
    def serve(rnd: dict, _data: dict) -> list[str]:
        from arena_ops.flywheel import battle_models, serve

        serve(rnd)
        return battle_models(rnd)

    @task(max_active_tis_per_dagrun=4)
    def generate(rnd: dict, model: str) -> dict:
        from arena_ops.flywheel import generate

        return generate(rnd, model)

    @task
    def judge_chunks(rnd: dict, _generated: list) -> list[int]:
        return list(range(config().airflow.judge_chunks))

    @task
    def judge(rnd: dict, chunk: int) -> dict:
        from arena_ops.flywheel import judge

        return judge(rnd, chunk, config().airflow.judge_chunks)

    @task(outlets=[battles_asset(CFG)])
    def battles(rnd: dict, generated: list, judged: list) -> dict:
        from arena_ops.flywheel import battles

        wall = {"generate": sum(g["seconds"] for g in generated), "judge": sum(j["seconds"] for j in judged)}
        out = battles(rnd, wall)
        return {
            k: out[k] for k in ("uri", "battles", "invalid", "per_model", "tokens_generated", "judge_tokens", "wall_s")
        }

    @task
    def training_data(rnd: dict, _battles: dict) -> dict:
        from arena_ops.flywheel import training_data

        rep = training_data(rnd)
        return {k: v["rows"] for k, v in rep.items() if isinstance(v, dict) and "rows" in v}

    trained = []
    for stage in STAGES:

        @task(task_id=f"submit_{stage}")
        def submit(rnd: dict, _after: object, stage: str = stage) -> dict:
            from arena_ops.flywheel import load
            from arena_ops.training.run import prepare_stage, submit_stage

            if stage not in rnd["stages"]:
                return {"done": {"stage": stage, "skipped": "not in this round's plan"}}
            cfg, store = load(rnd)
            return submit_stage(cfg, prepare_stage(cfg, store, rnd["iteration"], stage))

        @task.sensor(
            task_id=f"wait_{stage}", mode="reschedule", poke_interval=CFG.airflow.train_poke_s, timeout=12 * 3600
        )
        def wait(rnd: dict, handle: dict) -> PokeReturnValue:
            from arena_ops.flywheel import load
            from arena_ops.training.run import finish_stage, poll_stage

            cfg, store = load(rnd)
            if not poll_stage(cfg, handle):
                return PokeReturnValue(is_done=False)
            entry = finish_stage(store, handle)
            return PokeReturnValue(
                is_done=True,
                xcom_value={k: entry.get(k) for k in ("stage", "skipped", "model_uri", "metrics", "reused")},
            )

        trained.append((submit, wait))

    @task(trigger_rule=TriggerRule.ALL_SUCCESS)
    def evaluate(rnd: dict, _trained: list) -> dict:
        from arena_ops.flywheel import evaluate

        out = evaluate(rnd)
        return out if "skipped" in out else {k: out[k] for k in ("uri", "battles", "invalid", "per_model")}

    @task
    def report(rnd: dict, battles: dict, data: dict, trained: list, evaluation: dict) -> dict:
        from arena_ops.flywheel import report

        ctx = get_current_context()
        return report(
            rnd,
            {
                "dag_run": {"dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"]},
                "battles": battles,
                "wall_s": battles.get("wall_s"),
                "training_data": data,
                "training": trained,
                "evaluation": evaluation,
            },
        )

    rnd = resolve()
    data = prepare_data(rnd)
    models = serve(rnd, data)
    generated = generate.partial(rnd=rnd).expand(model=models)
    chunks = judge_chunks(rnd, generated)
    judged = judge.partial(rnd=rnd).expand(chunk=chunks)
    table = battles(rnd, generated, judged)
    tdata = training_data(rnd, table)
    after: object = tdata
    results = []
    for submit, wait in trained:
        handle = submit(rnd, after)
        done = wait(rnd, handle)
        results.append(done)
        after = done
    evaluation = evaluate(rnd, results)
    report(rnd, table, tdata, results, evaluation)
