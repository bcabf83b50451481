"""Airflow plugin: the "Arena" entry in the Airflow UI (leaderboards, Elo history, win rates, battle browser).

A FastAPI app mounted at ``/arena`` on the API server, shown in the UI's navigation as an embedded view. It lists
every flywheel of the flywheel folder (``$ARENA_FLYWHEELS``, the folder the DAGs are generated from), each read from
its own config's artifact store, switched by the ``flywheel`` query parameter; and it requires the Airflow UI's own
authentication on every endpoint.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from arena_ops.airflow.auth import airflow_user
from arena_ops.airflow.runs import dag_run_tasks
from arena_ops.ui.app import URL_PREFIX, create_app

_CACHE: dict[tuple, dict] = {}


def _stores() -> dict:
    """Flywheel → its store, for the folder's configs as they are now (a config dropped into the folder appears
    without a restart; stores are reused while the folder's files are unchanged)."""
    from arena_ops.flywheels import discover
    from arena_ops.store import ArtifactStore

    found, _ = discover()
    ok = [f for f in found if f.cfg is not None]
    key = tuple((str(f.path), f.path.stat().st_mtime_ns) for f in ok)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = {f.name: ArtifactStore.from_config(f.cfg.storage) for f in ok}
    return _CACHE[key]


class ArenaPlugin(AirflowPlugin):
    name = "arena"
    fastapi_apps = [
        {"app": create_app(_stores, airflow_user, dag_run_tasks), "url_prefix": URL_PREFIX, "name": "Arena"}
    ]
    external_views = [
        {
            "name": "Arena",
            "href": f"{URL_PREFIX.lstrip('/')}/",  # relative to the UI's base URL
            "url_route": "arena",
            "destination": "nav",
            "category": "browse",
        }
    ]
