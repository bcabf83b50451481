"""A DAG run and its task instances as the Arena view's round page shows them, read from Airflow's metadata database
in the api-server that mounts the view (the same session Airflow's own REST API reads with) — only for a user whom
Airflow's auth manager lets read that DAG's task instances."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails


def dag_run_tasks(dag_id: str, run_id: str, user: Any) -> dict[str, Any] | None:
    """``{state, start, end, tasks: [{task_id, map_index, state, try_number, failed_tries, start, end, duration_s}]}``
    in the order the tasks started (not yet started last); ``failed_tries`` are the earlier tries that failed (Airflow
    keeps them in its task-instance history). None when the run does not exist or the user may not see it."""
    allowed = get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, details=DagDetails(id=dag_id), user=user
    )
    if not allowed:
        return None
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None:
            return None
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        history = TaskInstanceHistory
        failed: dict[tuple[str, int], list[int]] = {}
        for task_id, map_index, try_number in session.execute(
            select(history.task_id, history.map_index, history.try_number).where(
                history.dag_id == dag_id,
                history.run_id == run_id,
                history.state.in_(("failed", "up_for_retry")),
            )
        ):
            failed.setdefault((task_id, map_index), []).append(try_number)
        tasks = [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "state": str(ti.state) if ti.state else "none",
                "try_number": ti.try_number,
                "failed_tries": sorted(failed.get((ti.task_id, ti.map_index), [])),
                "start": _iso(ti.start_date),
                "end": _iso(ti.end_date),
                "duration_s": round(ti.duration, 1) if ti.duration is not None else None,
            }
            for ti in tis
        ]
        out = {"state": str(run.state), "start": _iso(run.start_date), "end": _iso(run.end_date)}
    tasks.sort(key=lambda t: (t["start"] is None, t["start"] or "", t["task_id"], t["map_index"]))
    return {**out, "tasks": tasks}


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when else None
