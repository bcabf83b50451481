"""Shared by the arena DAG files: the flywheel folder, default task arguments, the battles Asset. Import-light on
purpose: only Airflow's SDK and arena_ops.config (pydantic + yaml) are imported at parse time.

Each DAG file generates one DAG per flywheel config in ``$ARENA_FLYWHEELS`` (Airflow's dynamic DAG generation):
``arena_flywheel_round__<flywheel>``, ``arena_elo__<flywheel>``, … There is no fallback config: an unset or empty
folder generates nothing (the reason is logged), and a config that does not load becomes a DAG that says so (see
:func:`broken_config_dag`) while the other flywheels' DAGs still load."""

from __future__ import annotations

import logging
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, task

from arena_ops.config import ArenaConfig
from arena_ops.flywheels import Flywheel, discover

log = logging.getLogger(__name__)


def flywheels() -> list[Flywheel]:
    """The folder's configs, the broken ones included (``error`` set); the reason is logged when there is none."""
    found, why = discover()
    if why:
        log.warning("%s", why)
    for f in found:
        if f.error:
            log.error("flywheel config %s does not load: %s", f.path, f.error)
    return found


def dag_id(base: str, fw: Flywheel) -> str:
    return f"{base}__{fw.id_suffix}"


def default_args(cfg: ArenaConfig) -> dict:
    return {
        "retries": cfg.airflow.retries,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }


def start_date(cfg: ArenaConfig) -> pendulum.DateTime:
    return pendulum.parse(cfg.airflow.start_date)


def battles_asset(flywheel: str) -> Asset:
    """Updated whenever a round of ``flywheel`` writes battle records (the event's ``extra`` carries the round
    reference); that flywheel's Elo DAG is scheduled on it."""
    return Asset(f"arena://{flywheel}/battles", group="arena")


def data_asset(flywheel: str) -> Asset:
    """Updated when a day's partition of ``flywheel`` is prepared (the event's ``extra`` carries its data report)."""
    return Asset(f"arena://{flywheel}/data", group="arena")


def broken_config_dag(base: str, fw: Flywheel) -> DAG:
    """A config in the folder that does not load, shown where a user of the UI looks: a DAG named after the file
    whose description and docs give the error (file and key), and whose one task fails with it."""
    message = fw.error or "unknown error"
    with DAG(
        dag_id=dag_id(base, fw),
        description=f"BROKEN CONFIG {fw.path.name}: {message}"[:500],
        doc_md=f"### The flywheel config `{fw.path}` does not load\n\n```\n{message}\n```\n\n"
        "Fix the file: this DAG becomes the flywheel's own at the next parse.",
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1),
        catchup=False,
        tags=["arena", "broken-config"],
    ) as dag:

        @task(task_id="config_error", retries=1)
        def config_error() -> None:
            from arena_ops.errors import ConfigError

            raise ConfigError(message)

        config_error()
    return dag
