"""One Arena Learning iteration as the paper runs it: resolve the Round (written to the store; every later task
reads it, never the config path) → data → evaluate the start model → for each step: battles (the round's current
policy on the step's slice; an Asset outlet) → training data → each of the step's stages submitted, then waited for
by a deferred task (the triggerer polls the job: no worker slot is held while it trains) → the new policy evaluated
on the test set → round report. Under the compact schedule steps 2 and 3 have nothing to do and say so.

Every task calls one ``arena_ops.flywheel`` function with the round reference and returns references and counts."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from arena_ops.airflow_training import WaitForTraining

from _arena_common import CONFIG_PATH, battles_asset, config, default_args

CFG = config()
STEP_STAGES = [["sft"], ["dpo"], ["rm", "rl"]]  # task wiring; which step trains what comes from the Round

with DAG(
    dag_id="arena_flywheel_round",
    description=f"One Arena Learning iteration of flywheel {CFG.flywheel!r}",
    schedule=CFG.airflow.schedule,
    start_date=pendulum.parse(CFG.airflow.start_date),
    catchup=CFG.airflow.catchup,
    max_active_runs=1,
    default_args=default_args(CFG),
    tags=["arena"],
    params={
        "config_path": Param(CONFIG_PATH, type="string", description="Arena config YAML (snapshotted at resolve)."),
        "iteration": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Iteration to run; empty = from the logical date (days since start_date), or for a manual "
            "run the unfinished/next one.",
        ),
        "stages": Param(
            CFG.training.stages,
            type="array",
            items={"type": "string", "enum": ["sft", "dpo", "rl"]},
            description="Policy stages, in the paper's order (rl brings its reward model).",
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
        from arena_ops.errors import SlicesExhaustedError
        from arena_ops.flywheel import resolve_round

        ctx = get_current_context()
        try:
            return resolve_round(
                params["config_path"],
                iteration=params["iteration"],
                policies=params["stages"],
                competitors=params["competitors"],
                sample_limit=params["sample_limit"],
                logical_date=ctx.get("logical_date"),
            )
        except SlicesExhaustedError as exc:
            # A night past the corpus (the paper schedule's iterations are days since start_date): nothing to do,
            # which is not a failure of the nightly schedule. A triggered or backfilled iteration still fails.
            if ctx["dag_run"].run_type != "scheduled":
                raise
            raise AirflowSkipException(f"nothing to battle tonight: {exc}") from exc

    @task
    def prepare_data(ref: dict) -> dict:
        from arena_ops.flywheel import prepare_data

        return prepare_data(ref)

    def evaluate_task(which: str):
        @task(task_id=f"evaluate_{which}", outlets=[battles_asset(CFG)])
        def evaluate(ref: dict, _after: object) -> dict:
            from arena_ops.flywheel import evaluate

            return evaluate(ref, which)

        return evaluate

    def battle_task(k: int):
        @task(task_id=f"battles_{k + 1}", outlets=[battles_asset(CFG)])
        def battles(ref: dict, _after: object) -> dict:
            from arena_ops.flywheel import battle_step

            return battle_step(ref, k)

        return battles

    def data_task(k: int):
        @task(task_id=f"training_data_{k + 1}")
        def training_data(ref: dict, _after: object) -> dict:
            from arena_ops.flywheel import step_data

            return step_data(ref, k)

        return training_data

    def train_tasks(stage: str):
        @task(task_id=f"submit_{stage}")
        def submit(ref: dict, _after: object) -> dict:
            from arena_ops.flywheel import submit

            return submit(ref, stage)

        def wait(ref: object, handle: object) -> object:
            # Deferred to the triggerer, which polls the job's status in the store (submit may have run elsewhere).
            op = WaitForTraining(task_id=f"wait_{stage}", ref=ref, stage=stage, poll_s=CFG.airflow.train_poke_s)
            handle >> op
            return op.output

        return submit, wait

    @task
    def report(ref: dict, results: list) -> dict:
        from arena_ops.flywheel import report

        ctx = get_current_context()
        battles, data, trained, evaluation = results
        return report(
            ref,
            {
                "dag_run": {"dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"]},
                "battles": battles,
                "training_data": data,
                "training": trained,
                "evaluation": evaluation,
            },
        )

    ref = resolve()
    after: object = prepare_data(ref)
    after = evaluation_start = evaluate_task("start")(ref, after)
    battles_out, data_out, trained, evaluations = {}, {}, [], {"start": evaluation_start}
    for k, stages in enumerate(STEP_STAGES):
        after = battles_out[f"step_{k + 1}"] = battle_task(k)(ref, after)
        after = data_out[f"step_{k + 1}"] = data_task(k)(ref, after)
        for stage in stages:
            submit, wait = train_tasks(stage)
            after = wait(ref, submit(ref, after))
            trained.append(after)
            if stage != "rm":
                after = evaluations[stage] = evaluate_task(stage)(ref, after)
    report(ref, [battles_out, data_out, trained, evaluations])
