"""Airflow 3's REST API (``/api/v2``) as its UI calls it: a JWT from ``/auth/token``, then JSON requests.

A few calls over httpx rather than the generated ``apache-airflow-client``: that package pins its own urllib3-based
stack and versions per Airflow release, for the handful of endpoints ``make demo`` and the stack tests use
(DAGs, runs, task instances, backfills, pausing).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from arena_ops.errors import ArenaError


class AirflowAPIError(ArenaError):
    """A refused or failed Airflow REST call (status and Airflow's message included)."""


class AirflowAPI:
    def __init__(self, url: str, user: str, password: str, timeout_s: float = 60) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s)
        token = self.http.post("/auth/token", json={"username": user, "password": password})
        if token.status_code not in (200, 201):
            raise AirflowAPIError(f"{self.url}/auth/token refused user {user!r}: HTTP {token.status_code}")
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    @classmethod
    def for_stack(cls, airflow_url: str, airflow_home: Path) -> AirflowAPI:
        """Logged in as the stack's UI user (its password file, written by `arena stack up`)."""
        user, password = next(iter(json.loads((airflow_home / "passwords.json").read_text()).items()))
        return cls(airflow_url, user, password)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.http.request(method, f"/api/v2{path}", **kwargs)
        if resp.status_code >= 400:
            raise AirflowAPIError(f"{method} {self.url}/api/v2{path}: HTTP {resp.status_code}: {resp.text[:1000]}")
        return resp.json() if resp.content else None

    # DAGs ---------------------------------------------------------------------------------------------------------

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.request("GET", "/dags", params={"limit": 1000})["dags"]}

    def wait_for_dags(self, dag_ids: list[str], timeout_s: float = 300) -> None:
        """Until the dag-processor has parsed every DAG in ``dag_ids``."""
        deadline, have = time.monotonic() + timeout_s, set()
        while time.monotonic() < deadline:
            have = self.dag_ids()
            if set(dag_ids) <= have:
                return
            time.sleep(2)
        raise AirflowAPIError(f"after {timeout_s:.0f} s Airflow has not parsed {sorted(set(dag_ids) - have)}")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    # Runs ---------------------------------------------------------------------------------------------------------

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """A manual run now, as the UI's Trigger button makes it."""
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})

    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, **params})["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.request("GET", path, params={"limit": 1000})["task_instances"]

    # Backfills ----------------------------------------------------------------------------------------------------

    def create_backfill(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        conf: dict[str, Any] | None = None,
        max_active_runs: int = 1,
        reprocess_behavior: str = "failed",
    ) -> dict[str, Any]:
        """Runs for the logical dates in [from_date, to_date]; ``reprocess_behavior``: none | failed | completed
        (what happens to dates that already have a run)."""
        body = {
            "dag_id": dag_id,
            "from_date": from_date,
            "to_date": to_date,
            "dag_run_conf": conf or {},
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess_behavior,
        }
        return self.request("POST", "/backfills", json=body)

    def backfill(self, backfill_id: int) -> dict[str, Any]:
        return self.request("GET", f"/backfills/{backfill_id}")

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        return self.request("GET", "/backfills", params={"dag_id": dag_id})["backfills"]
