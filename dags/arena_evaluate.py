"""Rate a round's models on a test set (manual): the start model and every policy the round produced battle every
competitor, both orders judged; the battles are filed under eval/, never under an iteration; then the Elo boards."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from _arena_common import CONFIG_PATH, battles_asset, config, default_args

CFG = config()

with DAG(
    dag_id="arena_evaluate",
    schedule=None,
    start_date=pendulum.parse(CFG.airflow.start_date),
    catchup=False,
    default_args=default_args(CFG),
    tags=["arena"],
    params={
        "iteration": Param(0, type="integer", minimum=0, description="The round whose models are rated."),
        "testset": Param("mix", type="string", enum=["mix", "diverse", "hard"]),
    },
) as dag:

    @task(outlets=[battles_asset(CFG)])
    def evaluate(params: dict | None = None) -> dict:
        from arena_ops.flywheel import evaluate
        from arena_ops.round import Round
        from arena_ops.store import ArtifactStore
        from arena_ops.training.stage_registry import STAGES

        store = ArtifactStore.from_config(CFG.storage)
        rnd = Round.load(store, CFG.flywheel, params["iteration"])  # the round's own config snapshot from here on
        which = ["start", *(s for s in rnd.stages if STAGES[s].policy)]
        return {w: evaluate(rnd.ref(), w, testsets=[params["testset"]]) for w in which}

    @task
    def leaderboard(_e: dict) -> dict:
        from arena_ops.flywheel import elo_update

        return elo_update(CONFIG_PATH)

    leaderboard(evaluate())
