"""Airflow plugin: the "Arena" entry in the Airflow UI (leaderboards, Elo history, win rates, battle browser).

A FastAPI app mounted at ``/arena`` on the API server, shown in the UI's navigation as an embedded view. It reads
the artifact store of ``$ARENA_CONFIG`` (the same config the DAGs read) and requires the Airflow UI's own
authentication on every endpoint.
"""

from __future__ import annotations

from functools import cache

from airflow.plugins_manager import AirflowPlugin

from arena_ops.ui.app import URL_PREFIX, create_app
from arena_ops.ui.auth import airflow_user


@cache
def _store():
    import os
    from pathlib import Path

    from arena_ops.config import load_config
    from arena_ops.store import ArtifactStore

    default = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    cfg = load_config(os.environ.get("ARENA_CONFIG", str(default)))
    return ArtifactStore.from_config(cfg.storage)


class ArenaPlugin(AirflowPlugin):
    name = "arena"
    fastapi_apps = [{"app": create_app(_store, airflow_user), "url_prefix": URL_PREFIX, "name": "Arena"}]
    external_views = [
        {
            "name": "Arena",
            "href": f"{URL_PREFIX.lstrip('/')}/",  # relative to the UI's base URL
            "url_route": "arena",
            "destination": "nav",
            "category": "browse",
        }
    ]
