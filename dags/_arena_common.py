"""Shared by the arena DAG files: which config, default task arguments, the battles Asset. Import-light on purpose:
only Airflow's SDK and arena_ops.config (pydantic + yaml) are imported at parse time."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import Asset

from arena_ops.config import ArenaConfig, load_config

# The config every arena DAG reads: $ARENA_CONFIG, else the embedded default shipped beside the DAGs.
CONFIG_PATH = os.environ.get("ARENA_CONFIG", str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"))


def config() -> ArenaConfig:
    return load_config(CONFIG_PATH)


def default_args(cfg: ArenaConfig) -> dict:
    return {
        "retries": cfg.airflow.retries,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }


def battles_asset(cfg: ArenaConfig) -> Asset:
    """Updated whenever a round writes battle records; the Elo DAG is scheduled on it."""
    return Asset(f"arena://{cfg.flywheel}/battles", group="arena")
