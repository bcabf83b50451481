"""Evaluate chosen models on the Mix test set: all pairs, both orders judged, then Elo (manual)."""

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
        "config_path": Param(CONFIG_PATH, type="string"),
        "iteration": Param(0, type="integer", minimum=0, description="Iteration the battles are filed under."),
        "testset": Param("testset-mix", type="string", enum=["testset-mix", "testset-diverse", "testset-hard"]),
        "competitors": Param(None, type=["null", "array"], items={"type": "string"}),
    },
) as dag:

    @task(outlets=[battles_asset(CFG)])
    def evaluate(params: dict | None = None) -> dict:
        import asyncio

        from arena_ops.flywheel import battle_run, resolve_round, serve

        rnd = resolve_round(params["config_path"], params["iteration"], competitors=params["competitors"])
        serve(rnd)
        run = battle_run(
            rnd,
            run=f"eval-{params['testset'].removeprefix('testset-')}",
            prompts_key=params["testset"],
            pairing="all_pairs",
        )
        out = asyncio.run(run.run_all())
        return {k: out[k] for k in ("uri", "battles", "invalid", "per_model")}

    @task
    def leaderboard(_e: dict, params: dict | None = None) -> dict:
        from arena_ops.flywheel import elo_update

        return elo_update(params["config_path"])

    leaderboard(evaluate())
