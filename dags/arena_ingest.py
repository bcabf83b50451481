"""Prepare each day's data partition, one DAG per flywheel on date partitions (``data.mode: partitioned``) of
``$ARENA_FLYWHEELS``: ``arena_ingest__<flywheel>``, on the flywheel's nightly schedule.

The run for logical date ``ds`` reads the sources with ``{ds}`` filled in, cleans the day, removes what earlier days
brought and what matches the test sets, cuts the schedule's slices and updates the Asset ``arena://<flywheel>/data``
(the event's ``extra`` is the day's data report). A day whose files are missing, empty or too few is skipped with the
reason as the task's skip message; nothing is written, so a rerun once the data has arrived prepares it. A backfill
of prepared days reuses them (content-keyed; see :mod:`arena_ops.data.partitions`).

The round DAG of the flywheel runs on the same nightly schedule, not on this Asset: a scheduled run has a logical
date, which names its day and lets a backfill re-run exactly those days; its resolve task prepares the day itself
when this DAG has not (the second to come reuses the first's work).
"""

from __future__ import annotations

from airflow.sdk import DAG, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from arena_ops.flywheels import Flywheel

from _arena_common import dag_id, data_asset, default_args, flywheels, start_date

BASE = "arena_ingest"


def ingest_dag(fw: Flywheel) -> DAG:
    cfg = fw.cfg
    assert cfg is not None
    config_path = str(fw.path)
    asset = data_asset(cfg.flywheel)

    with DAG(
        dag_id=dag_id(BASE, fw),
        description=f"The day's data partition of flywheel {cfg.flywheel!r}",
        schedule=cfg.airflow.schedule,
        start_date=start_date(cfg),
        catchup=cfg.airflow.catchup,
        max_active_runs=4,
        default_args=default_args(cfg),
        tags=["arena", f"flywheel:{cfg.flywheel}"],
        doc_md=__doc__,
    ) as dag:

        @task(outlets=[asset])
        def prepare_partition() -> dict:
            from arena_ops.config import load_config
            from arena_ops.errors import PartitionUnavailableError
            from arena_ops.round import prepare_day
            from arena_ops.store import ArtifactStore

            ctx = get_current_context()
            c = load_config(config_path)
            ds = ctx["logical_date"].date().isoformat()
            try:
                rep = prepare_day(c, ArtifactStore.from_config(c.storage), ds)
            except PartitionUnavailableError as exc:
                raise AirflowSkipException(f"skipped: {exc}") from exc
            ctx["outlet_events"][asset].extra = {k: rep[k] for k in ("ds", "rows_read", "kept", "removed", "slices")}
            return rep

        prepare_partition()
    return dag


for _fw in flywheels():
    if _fw.cfg is not None and _fw.cfg.data.mode == "partitioned":
        _dag = ingest_dag(_fw)
        globals()[_dag.dag_id] = _dag
