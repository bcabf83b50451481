"""Under `airflow standalone` (SQLite, LocalExecutor; started and stopped here): a round triggered through the REST
API with conf succeeds, the Elo DAG fires from the battles Asset, a 2-date backfill creates two runs whose
iterations come from their logical dates, and the Arena UI plugin serves the leaderboard to a logged-in browser.
A cheap flywheel (recorded models, a verifier judge, no training) keeps each round to seconds of work: the point
here is the scheduling and the UI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import HOSTILE, free_port, write_recorded_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
EVERY_ROUND = {"alpha@40", "alpha@4", "alpha@5", "beta"}
ARTIFACTS = Path(os.environ.get("ARENA_TEST_ARTIFACTS", REPO / ".arena" / "test-artifacts"))
CHROMIUM = os.environ.get("ARENA_CHROMIUM", "/usr/bin/chromium")  # Debian's; `make test` installs it
# As root and on a machine without outside network: no sandbox, and none of Chromium's background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Standalone:
    def __init__(self, home: Path, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__PARALLELISM": "2",
            # The test shares 2 cores with the other lane of `make test`: under that load the API server once took
            # longer than the default 5 s to start a task, and the task was failed (httpcore.ReadTimeout).
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            # Parsed once at start (and serialized before it, see the fixture): no re-parsing writes to SQLite later.
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
            "ARENA_CONFIG": str(config),
            "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",  # standalone runs `airflow …`
        }
        self.home = home
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def cli(self, *args: str) -> str:
        """An `airflow` command on this home (before start: nothing else holds the SQLite database)."""
        res = subprocess.run([AIRFLOW, *args], env=self.env, cwd=self.home, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"airflow {' '.join(args)}: {res.stdout[-2000:]}{res.stderr[-3000:]}"
        return res.stdout

    def start(self) -> None:
        self._log = open(self.home / "standalone.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [AIRFLOW, "standalone"],
            env=self.env,
            cwd=self.home,
            start_new_session=True,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.http.get("/api/v2/monitor/health").status_code == 200 and self._passwords():
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, (self.home / "standalone.log").read_text()[-3000:]
            time.sleep(2)
        raise AssertionError("airflow standalone not healthy: " + (self.home / "standalone.log").read_text()[-3000:])

    def _passwords(self) -> dict:
        f = self.home / "simple_auth_manager_passwords.json.generated"
        return json.loads(f.read_text()) if f.exists() else {}

    def login(self) -> None:
        user, password = next(iter(self._passwords().items()))
        token = self.http.post("/auth/token", json={"username": user, "password": password}).json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    def wait_for_dags(self, dag_ids: list[str], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ids = {d["dag_id"] for d in self.http.get("/api/v2/dags").json().get("dags", [])}
            if set(dag_ids) <= ids:
                return
            time.sleep(2)
        raise AssertionError(f"DAGs {dag_ids} not parsed; have {ids}")

    def runs(self, dag_id: str) -> list[dict]:
        return self.http.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float = 300) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        raise AssertionError(f"{dag_id}/{run_id} still {run['state']} after {timeout_s}s")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def cheap_config(root: Path) -> Path:
    prompts = [
        {"id": f"q{i}", "instruction": f"What is {i} times 3? Reply with the number.", "output": str(3 * i)}
        for i in range(6)
    ]
    write_recorded_task(
        root,
        prompts,
        {
            "alpha": lambda i: prompts[i]["output"],
            "beta": lambda i: HOSTILE,  # wrong, and markup that must stay text in the UI
        },
    )
    cfg = root / "arena.yaml"
    cfg.write_text(
        textwrap.dedent("""\
        flywheel: standalone
        storage: {root: file://store}
        models:
          target: {name: alpha, source: {kind: recorded, path: alpha.jsonl}}
          competitors: [{name: beta, source: {kind: recorded, path: beta.jsonl}}]
          judge: {name: beta, source: {kind: recorded, path: beta.jsonl}}
        data: {sources: [prompts.jsonl], num_shards: 2, prefix_dedup_chars: 0, minhash_threshold: null}
        judge: {kind: verifier, verifier: exact}
        training: {schedule: compact, stages: []}
        rating: {bootstrap_rounds: 20}
        airflow: {schedule: "0 2 * * *", start_date: "2026-01-01", retries: 2, judge_chunks: 2, train_poke_s: 2}
        """)
    )
    return cfg


@dataclass
class Flywheel:
    af: Standalone
    config: Path
    store: Path
    manual_run: str  # the REST-triggered round (iteration 40)


@pytest.fixture(scope="module")
def flywheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flywheel]:
    """One `airflow standalone` for the module: a backfill created, both DAGs unpaused, one round triggered by REST.
    The scheduling test and the UI test then look at what it did."""
    root = tmp_path_factory.mktemp("standalone")
    config = cheap_config(root)
    home = root / "airflow"
    home.mkdir()
    af = Standalone(home, config)
    # The backfill is created before Airflow starts, when nothing else holds the SQLite database: beside the running
    # scheduler and dag-processor SQLite refuses it (503 "Database is locked ... not supported on SQLite under
    # concurrent access"), and a retried creation once crashed the scheduler. Postgres (docker/, helm/) has no such
    # limit. The DAGs are serialized first so that the backfill can find them.
    af.cli("db", "migrate")
    af.cli("dags", "reserialize")
    af.cli(
        "backfill",
        "create",
        "--dag-id",
        "arena_flywheel_round",
        "--from-date",
        "2026-01-05T00:00:00+00:00",
        "--to-date",
        "2026-01-06T23:00:00+00:00",
        "--max-active-runs",
        "1",
    )
    af.start()
    try:
        af.wait_healthy()
        af.login()
        af.wait_for_dags(["arena_flywheel_round", "arena_elo"])
        for dag_id in ("arena_flywheel_round", "arena_elo"):
            assert af.http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        res = af.http.post(
            "/api/v2/dags/arena_flywheel_round/dagRuns",
            json={"logical_date": None, "conf": {"iteration": 40, "config_path": str(config)}},
        )
        assert res.status_code == 200, res.text
        yield Flywheel(af, config, root / "store" / "standalone", res.json()["dag_run_id"])
    finally:
        af.stop()


def board(store: Path) -> set[str]:
    path = store / "leaderboard" / "leaderboard.json"
    return {row["model"] for row in json.loads(path.read_text())} if path.exists() else set()


def test_rest_trigger_asset_and_backfill(flywheel: Flywheel) -> None:
    af, store = flywheel.af, flywheel.store
    run = af.wait_run("arena_flywheel_round", flywheel.manual_run, timeout_s=480)
    assert run["state"] == "success", run
    assert (store / "iter=40" / "report" / "round" / "_MANIFEST.json").exists()

    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        backfilled = [r for r in af.runs("arena_flywheel_round") if r["run_type"] == "backfill"]
        if len(backfilled) == 2 and all(r["state"] in ("success", "failed") for r in backfilled):
            break
        time.sleep(5)
    assert len(backfilled) == 2 and all(r["state"] == "success" for r in backfilled), backfilled
    for r in backfilled:
        day = datetime.fromisoformat(r["logical_date"].replace("Z", "+00:00")).date()
        iteration = (day - date(2026, 1, 1)).days
        assert iteration in (4, 5) and (store / f"iter={iteration}" / "report" / "round" / "_MANIFEST.json").exists()

    deadline = time.monotonic() + 240  # each round's battles Asset event schedules arena_elo
    while time.monotonic() < deadline and not board(store) >= EVERY_ROUND:
        time.sleep(3)
    elo_runs = af.runs("arena_elo")
    assert any(r["state"] == "success" and r["run_type"] == "asset_triggered" for r in elo_runs), elo_runs
    assert board(store) >= EVERY_ROUND


def test_arena_ui_in_browser(flywheel: Flywheel) -> None:
    """The Arena plugin inside the real Airflow UI: its endpoints refuse anonymous callers; a user who logs in on
    Airflow's own login page sees the leaderboard in the Arena view, opens a battle, and hostile markup in a
    response stays text. Screenshots go to $ARENA_TEST_ARTIFACTS (default .arena/test-artifacts)."""
    from playwright.sync_api import expect, sync_playwright

    af, store = flywheel.af, flywheel.store
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline and not {"alpha@40", "beta"} <= board(store):
        time.sleep(3)
    assert {"alpha@40", "beta"} <= board(store), "the Elo DAG never rated the triggered round"

    anon = httpx.Client(base_url=af.url, timeout=30)
    for path in ("/arena/", "/arena/api/flywheels", "/arena/api/leaderboard?flywheel=standalone", "/arena/battles"):
        assert anon.get(path).status_code == 401, path
        assert anon.get(path, cookies={"_token": "not-a-jwt"}).status_code in (401, 403), path
    rows = af.http.get("/arena/api/leaderboard", params={"flywheel": "standalone"}).json()["rows"]  # bearer token
    assert {"alpha@40", "beta"} <= {r["model"] for r in rows}

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    user, password = next(iter(af._passwords().items()))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{af.url}/plugin/arena")
            page.get_by_label("Username").fill(user)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/plugin/arena", timeout=60_000)
            arena = page.frame_locator("iframe")
            expect(arena.locator("#leaderboard tbody tr[data-model='alpha@40']")).to_be_visible(timeout=60_000)
            expect(arena.locator("#leaderboard tbody tr[data-model='beta']")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "arena-ui.png"))

            arena.get_by_role("link", name="beta", exact=True).first.click()  # beta's battles
            arena.locator("input[name=prompt]").fill("times 3")
            arena.get_by_role("button", name="Filter").click()
            arena.locator("#battles a").first.click()
            response = arena.locator("pre.response", has_text="window.__pwned")
            expect(response).to_have_text(HOSTILE)
            frame = next(f for f in page.frames if "/arena/battles/" in f.url)
            assert frame.evaluate("window.__pwned") is None  # neither the script nor the onerror ran
            expect(arena.locator("#scores")).to_contain_text("verifier")
            page.screenshot(path=str(ARTIFACTS / "arena-battle.png"))
        finally:
            browser.close()
