"""One Arena Learning iteration as the paper runs it, one DAG per flywheel of ``$ARENA_FLYWHEELS``
(``arena_flywheel_round__<flywheel>``): resolve the Round (written to the store; every later task reads it, never the
config path) → data → the judge's canary (labelled pairs re-judged) → evaluate the start model → for each step:
battles (the round's current policy on the step's
slice; an outlet of the flywheel's battles Asset, the round reference in the event's extra) → (after the first
step's battles, the canary's gate: a breach fails the round here) → training data → each of
the step's stages submitted, then waited for by a deferred task (the triggerer polls the job: no worker slot is held
while it trains) → the new policy evaluated on the test set → round report → (training.promotion.approval, when the
decision is ambiguous) the promotion waits in a human-in-the-loop task, whose answer is recorded. Under the compact
schedule steps 2 and 3 have nothing to do and say so. A config of the folder that does not load becomes a DAG of that
name that says why.

Every task calls one ``arena_ops.flywheel`` function with the round reference and returns references and counts."""

from __future__ import annotations

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from arena_ops.airflow.training import WaitForTraining
from arena_ops.flywheels import Flywheel
from arena_ops.promotion import OPTIONS

from _arena_common import battles_asset, broken_config_dag, dag_id, default_args, flywheels, start_date

STEP_STAGES = [["sft"], ["dpo"], ["rm", "rl"]]  # task wiring; which step trains what comes from the Round
BASE = "arena_flywheel_round"


def announce(ref: dict) -> dict:
    """Tell the flywheel's Elo DAG which round wrote these battles (the battles Asset event's extra)."""
    extra = {"flywheel": ref["flywheel"], "iteration": ref["iteration"], "storage": ref["storage"]}
    get_current_context()["outlet_events"][battles_asset(ref["flywheel"])].extra = extra
    return extra


APPROVAL = {"off": False, "ambiguous": True, "always": "always"}  # the param's choices → training.promotion.approval


def approval_override(choice: str | None) -> dict:
    return {} if choice is None else {"training.promotion.approval": APPROVAL[choice]}


def round_dag(fw: Flywheel) -> DAG:
    cfg = fw.cfg
    assert cfg is not None
    config_path = str(fw.path)
    asset = battles_asset(cfg.flywheel)

    with DAG(
        dag_id=dag_id(BASE, fw),
        description=f"One Arena Learning iteration of flywheel {cfg.flywheel!r}",
        schedule=cfg.airflow.schedule,
        start_date=start_date(cfg),
        catchup=cfg.airflow.catchup,
        max_active_runs=1,
        default_args=default_args(cfg),
        tags=["arena", f"flywheel:{cfg.flywheel}"],
        doc_md=f"Flywheel `{cfg.flywheel}` from `{config_path}` (snapshotted into the round record at resolve).",
        params={
            "iteration": Param(
                None,
                type=["null", "integer"],
                minimum=0,
                description="Iteration to run; empty = from the logical date (days since start_date), or for a manual "
                "run the unfinished/next one.",
            ),
            "stages": Param(
                cfg.training.stages,
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
            "promotion_approval": Param(
                None,
                type=["null", "string"],
                enum=[None, *APPROVAL],
                description="Whether the promotion decision waits for a person here (empty = the config's "
                "training.promotion.approval): ambiguous = when P(better) is between 1 - confidence and confidence.",
            ),
        },
    ) as dag:

        @task
        def resolve(params: dict | None = None) -> dict:
            from arena_ops.errors import PartitionUnavailableError, SlicesExhaustedError
            from arena_ops.flywheel import resolve_round

            ctx = get_current_context()
            try:
                return resolve_round(
                    config_path,
                    iteration=params["iteration"],
                    policies=params["stages"],
                    competitors=params["competitors"],
                    sample_limit=params["sample_limit"],
                    logical_date=ctx.get("logical_date"),
                    overrides=approval_override(params.get("promotion_approval")),
                    dag_run={"dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"]},
                )
            except SlicesExhaustedError as exc:
                # A night past the corpus (the paper schedule's iterations are days since start_date): nothing to do,
                # which is not a failure of the nightly schedule. A triggered or backfilled iteration still fails.
                if ctx["dag_run"].run_type != "scheduled":
                    raise
                raise AirflowSkipException(f"nothing to battle tonight: {exc}") from exc
            except PartitionUnavailableError as exc:
                # A day without (enough) data: skipped, whatever started the run; nothing is recorded, so the day
                # runs once its data has arrived. Never filled with older data.
                raise AirflowSkipException(f"skipped: {exc}") from exc

        @task
        def prepare_data(ref: dict) -> dict:
            from arena_ops.flywheel import prepare_data

            return prepare_data(ref)

        @task
        def judge_canary(ref: dict, _after: object) -> dict:
            from arena_ops.flywheel import judge_canary

            return judge_canary(ref)

        @task
        def judge_gate(ref: dict, _canary: object, _battles: object) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from arena_ops.battle.canary import JudgeGateError
            from arena_ops.flywheel import judge_gate

            try:
                return judge_gate(ref)
            except JudgeGateError as exc:  # the judge's verdicts do not change on a retry
                raise AirflowFailException(str(exc)) from exc

        def evaluate_task(which: str):
            @task(task_id=f"evaluate_{which}", outlets=[asset])
            def evaluate(ref: dict, _after: object) -> dict:
                from arena_ops.flywheel import evaluate

                announce(ref)
                return evaluate(ref, which)

            return evaluate

        def battle_task(k: int):
            @task(task_id=f"battles_{k + 1}", outlets=[asset])
            def battles(ref: dict, _after: object) -> dict:
                from arena_ops.flywheel import battle_step

                announce(ref)
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
                op = WaitForTraining(task_id=f"wait_{stage}", ref=ref, stage=stage, poll_s=cfg.airflow.train_poke_s)
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

        @task.short_circuit
        def needs_approval(ref: dict, _report: object) -> str | None:
            """The evidence when the round's promotion waits for a person (training.promotion.approval); None skips
            the review: the decision stands as the report wrote it."""
            from arena_ops.flywheel import approval_request

            return approval_request(ref)

        # The person's answer, with the evidence (the rated models, P(better), the proposal) in the form's body.
        review = HITLOperator(
            task_id="promotion_review",
            subject=f"{cfg.flywheel}: promote the challenger to start the next iteration?",
            body="{{ ti.xcom_pull(task_ids='needs_approval') }}",
            options=OPTIONS,
        )

        @task
        def record_approval(ref: dict, answer: dict) -> dict:
            from arena_ops.flywheel import approve

            who = answer.get("responded_by_user") or {}
            at = answer.get("responded_at")
            return approve(ref, answer["chosen_options"][0], who.get("name") or who.get("id"), at and str(at))

        ref = resolve()
        after: object = prepare_data(ref)
        # Before the start model's evaluation, not beside it: both may deploy to the one Serve cluster.
        after = canary = judge_canary(ref, after)
        after = evaluation_start = evaluate_task("start")(ref, after)
        battles_out, data_out, trained, evaluations = {}, {}, [], {"start": evaluation_start}
        for k, stages in enumerate(STEP_STAGES):
            after = battles_out[f"step_{k + 1}"] = battle_task(k)(ref, after)
            if k == 0:  # the canary's gate, before any training data is built; the battles stay
                after = judge_gate(ref, canary, after)
            after = data_out[f"step_{k + 1}"] = data_task(k)(ref, after)
            for stage in stages:
                submit, wait = train_tasks(stage)
                after = wait(ref, submit(ref, after))
                trained.append(after)
                if stage != "rm":
                    after = evaluations[stage] = evaluate_task(stage)(ref, after)
        reported = report(ref, [battles_out, data_out, trained, evaluations])
        needs_approval(ref, reported) >> review
        record_approval(ref, review.output)
    return dag


for _fw in flywheels():
    _dag = round_dag(_fw) if _fw.cfg is not None else broken_config_dag(BASE, _fw)
    globals()[_dag.dag_id] = _dag
