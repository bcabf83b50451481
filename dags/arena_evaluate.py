"""Rate a round's models on a test set (manual), one DAG per flywheel of ``$ARENA_FLYWHEELS``
(``arena_evaluate__<flywheel>``): the start model and every policy the round produced battle every competitor, both
orders judged; the battles are filed under eval/, never under an iteration; then the flywheel's Elo boards."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from arena_ops.flywheels import Flywheel

from _arena_common import battles_asset, dag_id, default_args, flywheels, start_date

BASE = "arena_evaluate"


def evaluate_dag(fw: Flywheel) -> DAG:
    cfg = fw.cfg
    assert cfg is not None
    asset = battles_asset(cfg.flywheel)

    with DAG(
        dag_id=dag_id(BASE, fw),
        description=f"Rate the models of a round of flywheel {cfg.flywheel!r} on a test set",
        schedule=None,
        start_date=start_date(cfg),
        catchup=False,
        default_args=default_args(cfg),
        tags=["arena", f"flywheel:{cfg.flywheel}"],
        params={
            "iteration": Param(0, type="integer", minimum=0, description="The round whose models are rated."),
            "testset": Param("mix", type="string", enum=["mix", "diverse", "hard"]),
        },
    ) as dag:

        @task(outlets=[asset])
        def evaluate(params: dict | None = None) -> dict:
            from airflow.sdk import get_current_context

            from arena_ops.flywheel import evaluate
            from arena_ops.round import Round
            from arena_ops.store import ArtifactStore
            from arena_ops.training.stage_registry import STAGES

            store = ArtifactStore.from_config(cfg.storage)
            rnd = Round.load(store, cfg.flywheel, params["iteration"])  # the round's own config snapshot from here on
            get_current_context()["outlet_events"][asset].extra = {**rnd.ref(), "flywheel": rnd.flywheel}
            which = ["start", *(s for s in rnd.stages if STAGES[s].policy)]
            return {w: evaluate(rnd.ref(), w, testsets=[params["testset"]]) for w in which}

        @task
        def leaderboard(_e: dict, params: dict | None = None) -> dict:
            from arena_ops.flywheel import elo_update_from_events
            from arena_ops.round import Round
            from arena_ops.store import ArtifactStore

            rnd = Round.load(ArtifactStore.from_config(cfg.storage), cfg.flywheel, params["iteration"])
            return elo_update_from_events(str(fw.path), [rnd.ref()])

        leaderboard(evaluate())
    return dag


for _fw in flywheels():
    if _fw.cfg is not None:
        _dag = evaluate_dag(_fw)
        globals()[_dag.dag_id] = _dag
