"""Recompute a flywheel's Elo leaderboards whenever its rounds write battle records: one DAG per flywheel of
``$ARENA_FLYWHEELS`` (``arena_elo__<flywheel>``), scheduled on that flywheel's battles Asset only. The round that
wrote the battles comes in the Asset events' ``extra``; the DAG rates its own flywheel and nothing else."""

from __future__ import annotations

from airflow.sdk import DAG, get_current_context, task

from arena_ops.flywheels import Flywheel

from _arena_common import battles_asset, dag_id, default_args, flywheels, start_date

BASE = "arena_elo"


def elo_dag(fw: Flywheel) -> DAG:
    cfg = fw.cfg
    assert cfg is not None
    config_path = str(fw.path)

    with DAG(
        dag_id=dag_id(BASE, fw),
        description=f"Bradley–Terry Elo with bootstrap CIs over every battle table of flywheel {cfg.flywheel!r}, "
        "plus round-over-round history",
        schedule=[battles_asset(cfg.flywheel)],
        start_date=start_date(cfg),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(cfg),
        tags=["arena", f"flywheel:{cfg.flywheel}"],
    ) as dag:

        @task
        def leaderboard() -> dict:
            from arena_ops.flywheel import elo_update_from_events

            events = get_current_context().get("triggering_asset_events") or {}
            extras = [dict(e.extra or {}) for evs in events.values() for e in evs]
            return elo_update_from_events(config_path, extras)

        leaderboard()
    return dag


for _fw in flywheels():
    if _fw.cfg is not None:
        _dag = elo_dag(_fw)
        globals()[_dag.dag_id] = _dag
