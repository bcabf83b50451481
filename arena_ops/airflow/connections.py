"""Credentials from Airflow connections: the one place arena_ops asks Airflow for a connection (the S3 store's keys,
an external endpoint's API key). Imported lazily: outside Airflow the environment is asked instead."""

from __future__ import annotations

from typing import Any


def get_connection(conn_id: str) -> Any:
    """Airflow's connection ``conn_id`` (raises whatever Airflow raises when it is missing or Airflow is absent:
    callers say which setting named it)."""
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)
