"""Recompute the Elo leaderboard whenever a round writes battle records (scheduled on the battles Asset)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from _arena_common import CONFIG_PATH, battles_asset, config, default_args

CFG = config()

with DAG(
    dag_id="arena_elo",
    description="Bradley–Terry Elo with bootstrap CIs over every battle table, plus round-over-round history",
    schedule=[battles_asset(CFG)],
    start_date=pendulum.parse(CFG.airflow.start_date),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG),
    tags=["arena"],
) as dag:

    @task
    def leaderboard() -> dict:
        from arena_ops.flywheel import elo_update

        return elo_update(CONFIG_PATH)

    leaderboard()
