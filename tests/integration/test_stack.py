"""The flywheel as users run it, on `arena stack` (PostgreSQL, SeaweedFS, a two-node Ray cluster, the whole Airflow;
started once for the module with the CLI and stopped at the end, leaving no process): a nightly schedule run by the
scheduler, a run triggered as the UI does (REST with conf), a backfill of three past iterations beside the running
scheduler (CLI and REST), the Elo DAG on the battles Asset, and the Arena view in a browser. A cheap flywheel
(recorded models, a verifier judge, no training) keeps each round to seconds of work: the point is the scheduling on
real parts; serving and training on the stack are in test_stack_faults.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest

from arena_ops.airflow.api import AirflowAPI
from arena_ops.config import load_config
from arena_ops.local.stack import Stack
from arena_ops.store import ArtifactStore
from arena_ops.ui.screenshot import CHROMIUM, CHROMIUM_ARGS  # Debian's Chromium; `make test` installs it
from tests.conftest import HOSTILE, daily_instructions, free_block, write_recorded_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARENA = str(Path(sys.executable).parent / "arena")
AIRFLOW = str(Path(sys.executable).parent / "airflow")
ARTIFACTS = Path(os.environ.get("ARENA_TEST_ARTIFACTS", REPO / ".arena" / "test-artifacts"))
START = date(2026, 1, 1)
ROUND, ELO = "arena_flywheel_round__live", "arena_elo__live"  # generated from the stack's flywheel folder
K3 = "live-k3"  # a second flywheel in the same folder: the same models, SFT's K = 3.0
ROUND_K3, ELO_K3 = "arena_flywheel_round__live_k3", "arena_elo__live_k3"


def stack_config(root: Path) -> Path:
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
    canary = [  # verifier-labelled pairs: the right answer against a wrong one, in both positions
        {"turns": [p["instruction"]], "reference": [p["output"]], "model_a": "right", "model_b": "wrong",
         "answer_a": p["output"], "answer_b": "no idea", "label": "model_a"} for p in prompts[:4]
    ]  # fmt: skip
    (root / "canary.jsonl").write_text("".join(json.dumps(c) + "\n" for c in canary))
    s3 = free_block(5, also=(10000,))  # SeaweedFS: S3 and its other servers, their gRPC ports at +10000
    ray, dashboard, pg, af = free_block(2), free_block(1), free_block(1), free_block(3)
    cfg = root / "arena.yaml"
    cfg.write_text(
        textwrap.dedent(f"""\
        flywheel: live
        storage:
          root: s3://arena-test/flywheel
          s3: {{endpoint_url: "http://127.0.0.1:{s3}", conn_id: arena_s3}}
        models:
          target: {{name: alpha, source: {{kind: recorded, path: alpha.jsonl}}}}
          competitors: [{{name: beta, source: {{kind: recorded, path: beta.jsonl}}}}]
          judge: {{name: beta, source: {{kind: recorded, path: beta.jsonl}}}}
        data: {{sources: [prompts.jsonl], num_shards: 2, prefix_dedup_chars: 0, minhash_threshold: null}}
        judge: {{kind: verifier, verifier: exact, canary: {{path: canary.jsonl}}, gate: {{min_agreement: 0.9}}}}
        training:
          schedule: compact
          stages: []
          launcher: {{kind: ray_job, ray_address: "http://127.0.0.1:{dashboard}", ray_resources: {{worker: 1}}}}
        rating: {{bootstrap_rounds: 20}}
        benchmarks: [{{name: smoke, models: [alpha, beta], prompts: prompts.jsonl}}]
        serving: {{ray_address: "127.0.0.1:{ray}", proxy_location: HeadOnly, port: {free_block(1)}}}
        airflow: {{schedule: "0 2 * * *", start_date: "2026-01-01", retries: 2, judge_chunks: 2, train_poke_s: 2}}
        stack: {{dir: stack, postgres_port: {pg}, airflow_port: {af}, head_cpus: 4, worker_cpus: 2}}
        """)
    )
    # The experiment beside it: the same file under another name with another K, triggered by hand only.
    text = cfg.read_text().replace("flywheel: live", f"flywheel: {K3}", 1)
    text = text.replace("  schedule: compact\n", "  schedule: compact\n  k_sft: 3.0\n  k_sft_first: 3.0\n", 1)
    (root / "arena-k3.yaml").write_text(text.replace('schedule: "0 2 * * *"', "schedule: null", 1))
    # A config with a typo, dropped into the same folder: reported by name, the others run.
    broken = text.replace(f"flywheel: {K3}", "flywheel: broken").replace("rating: {b", "rating: {zb")
    (root / "broken.yaml").write_text(broken)
    return cfg


def flywheel_folder(root: Path) -> Path:
    """The stack's default flywheel folder (`stack up` links arena.yaml there): the k3 experiment and the broken
    config are linked beside it, so their relative paths resolve against their own directory."""
    folder = root / "stack" / "flywheels"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("arena-k3.yaml", "broken.yaml"):
        (folder / name).symlink_to(root / name)
    return folder


class AirflowREST(AirflowAPI):
    """Airflow's REST API as the UI calls it (a JWT from /auth/token, then /api/v2), logged in as the stack's user."""

    def __init__(self, stack: Stack) -> None:
        self.user, self.password = next(iter(json.loads((stack.airflow_home / "passwords.json").read_text()).items()))
        super().__init__(stack.airflow_url, self.user, self.password)

    def wait_runs(self, dag_id: str, pick, n: int, timeout_s: float) -> list[dict]:
        """Wait until ``n`` runs chosen by ``pick`` have finished; return them."""
        deadline, chosen = time.monotonic() + timeout_s, []
        while time.monotonic() < deadline:
            chosen = [r for r in self.runs(dag_id) if pick(r)]
            if len(chosen) >= n and all(r["state"] in ("success", "failed") for r in chosen):
                return chosen
            time.sleep(5)
        raise AssertionError(
            f"{dag_id}: after {timeout_s:.0f} s the runs are {[(r['run_id'], r['state']) for r in chosen]}"
        )


@dataclass
class Live:
    stack: Stack
    api: AirflowREST
    store: ArtifactStore
    env: dict[str, str]
    up_s: float
    manual_run: str  # the REST-triggered round (iteration 40)
    manual_run_k3: str = ""  # the k3 flywheel's round, triggered at the same time

    def arena(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ARENA, "--config", str(self.stack.config_path), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )

    def airflow(self, *args: str) -> str:
        res = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"airflow {' '.join(args)}: {res.stdout[-2000:]}{res.stderr[-3000:]}"
        return res.stdout

    def board(self) -> set[str]:
        key = "live/leaderboard/leaderboard.json"
        return {row["model"] for row in self.store.read_json(key)} if self.store.exists(key) else set()

    def reported(self, iteration: int) -> bool:
        return self.store.exists(f"live/iter={iteration}/report/round/_MANIFEST.json")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`arena stack up` (the CLI, as `make up` runs it), the DAGs unpaused — the scheduler then creates the nightly
    run of the most recent 02:00 — and one round triggered as the UI does. `arena stack down` at the end, and no
    process of the stack may be left."""
    root = tmp_path_factory.mktemp("live")
    config = stack_config(root)
    flywheel_folder(root)
    stack = Stack(load_config(config), config)
    env = {**os.environ, **stack.client_env()}
    live = Live(stack, None, None, env, 0.0, "")  # type: ignore[arg-type]
    t0 = time.monotonic()
    res = live.arena("stack", "up")
    try:
        assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
        live.up_s = time.monotonic() - t0
        print(f"arena stack up: {live.up_s:.0f} s")
        os.environ.update(stack.client_env())  # the store resolves the S3 connection as a shell would
        live.store = ArtifactStore.from_config(stack.cfg.storage)
        live.api = api = AirflowREST(stack)
        api.wait_for_dags([ROUND, ELO, ROUND_K3, ELO_K3])
        for dag_id in (ROUND, ELO, ROUND_K3, ELO_K3):
            assert api.http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        # Both flywheels' rounds triggered at the same time, as the UI's Trigger button does.
        runs = [
            api.http.post(f"/api/v2/dags/{dag}/dagRuns", json={"logical_date": None, "conf": {"iteration": 40}})
            for dag in (ROUND, ROUND_K3)
        ]
        assert all(r.status_code == 200 for r in runs), [r.text for r in runs]
        live.manual_run, live.manual_run_k3 = (r.json()["dag_run_id"] for r in runs)
        yield live
    finally:
        down = live.arena("stack", "down", timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
        assert stack.marked() == []


def test_stack_is_real_and_up_is_idempotent(live: Live) -> None:
    stack = live.stack
    status = live.arena("stack", "status")
    assert status.returncode == 0, status.stdout
    # Without --config (a fresh shell after `make up`): the running stack's own config, and it says which.
    env = {k: v for k, v in live.env.items() if k != "ARENA_CONFIG"}
    bare = subprocess.run([ARENA, "stack", "status"], capture_output=True, text=True, env=env, timeout=300,
                          cwd=stack.config_path.parent)  # fmt: skip
    assert bare.returncode == 0, bare.stdout + bare.stderr
    assert "the running stack's config" in bare.stderr and stack.config_path.name in bare.stderr
    pids = {c.name: c.pid for c in stack.status()}
    again = live.arena("stack", "up")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {c.name: c.pid for c in stack.status()} == pids  # nothing restarted
    # Airflow's metadata database is the stack's PostgreSQL.
    conn = live.airflow("config", "get-value", "database", "sql_alchemy_conn")
    assert conn.startswith("postgresql") and f":{stack.pg_port}/airflow" in conn
    # The S3 server refuses unsigned requests; the Airflow connection's keys are accepted.
    assert httpx.get(f"http://127.0.0.1:{stack.s3_port}/arena-test").status_code == 403
    # Two Ray nodes, the worker with its own resources.
    nodes = stack._ray_nodes()
    assert len(nodes) == 2 and sum("worker" in n["resourcesTotal"] for n in nodes) == 1


def test_ui_trigger_runs_a_round_with_its_conf(live: Live) -> None:
    (run,) = live.api.wait_runs(ROUND, lambda r: r["dag_run_id"] == live.manual_run, 1, timeout_s=900)
    assert run["state"] == "success", run
    assert live.reported(40)
    # The judge's canary ran as its own task, and its gate before the training data; the report shows both.
    states = {t["task_id"]: t["state"] for t in live.api.task_instances(ROUND, live.manual_run)}
    assert states["judge_canary"] == "success" and states["judge_gate"] == "success", states
    canary = live.store.read_json("live/iter=40/report/round/report.json")["canary"]
    assert canary["agreement"] == 1.0 and canary["breaches"] == [] and canary["pairs"] == 4


def test_a_declared_benchmark_runs_as_its_own_dag_with_the_ui_params(live: Live) -> None:
    """`benchmarks:` in the flywheel config → `arena_bench__live__smoke`; triggered as the UI does, with a conf that
    changes the pairing; its board lands in the flywheel's store as scope bench-smoke."""
    api, dag = live.api, "arena_bench__live__smoke"
    api.wait_for_dags([dag])
    api.set_paused(dag, False)
    run = api.trigger(dag, {"models": "beta,alpha", "pairing": "anchor"})
    (done,) = api.wait_runs(dag, lambda r: r["dag_run_id"] == run["dag_run_id"], 1, timeout_s=600)
    assert done["state"] == "success", done
    summary = live.store.read_json("live/bench/smoke/bench.json")
    assert summary["models"] == ["alpha", "beta"] and summary["pairing"] == "anchor" and summary["battles"] == 6
    assert [r["model"] for r in summary["board"]] == ["alpha", "beta"]  # alpha answers right, beta never
    assert live.store.exists("live/leaderboard/bench-smoke/leaderboard.json")


def test_two_flywheels_side_by_side_each_rated_on_its_own_asset(live: Live) -> None:
    """Two flywheels of one folder, triggered at the same time: both rounds succeed, each on its own config; each
    Elo DAG runs on its own flywheel's Asset only and rates only its own battles; the broken config of the folder is
    a DAG that names the file and key, and breaks nothing else."""
    api = live.api
    for dag, run_id in ((ROUND, live.manual_run), (ROUND_K3, live.manual_run_k3)):
        (run,) = api.wait_runs(dag, lambda r, run_id=run_id: r["dag_run_id"] == run_id, 1, timeout_s=900)
        assert run["state"] == "success", run
    records = {fw: live.store.read_json(f"{fw}/iter=40/round/round.json") for fw in ("live", K3)}
    assert records[K3]["config"]["training"]["k_sft"] == 3.0 and "k_sft" not in records["live"]["config"]["training"]
    for elo, fw in ((ELO, "live"), (ELO_K3, K3)):
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = [r for r in api.runs(elo) if r["run_type"] == "asset_triggered" and r["state"] == "success"]
            if done and live.store.exists(f"{fw}/leaderboard/leaderboard.json"):
                break
            time.sleep(5)
        assert done, api.runs(elo)
        for r in api.runs(elo):
            events = api.http.get(f"/api/v2/dags/{elo}/dagRuns/{r['dag_run_id']}/upstreamAssetEvents").json()
            uris = {e.get("uri") or e.get("name") for e in events["asset_events"]}
            assert uris <= {f"arena://{fw}/battles"}, (elo, uris)
        own = sum(
            live.store.manifest(f"{fw}/iter={it}/battles/{run}").meta["battles"]
            for it in live.store.list_iterations(fw)
            for run in live.store.list_artifacts(fw, it, "battles")
        )
        board = live.store.read_json(f"{fw}/leaderboard/leaderboard.json")
        assert sum(row["battles"] for row in board) == 2 * own, (fw, board)  # each battle counts for both models
    shown = api.http.get("/api/v2/dags/arena_flywheel_round__broken").json()
    assert "broken.yaml" in shown["description"] and "zbootstrap_rounds" in shown["description"], shown
    assert api.http.get("/api/v2/importErrors").json()["import_errors"] == []


def test_nightly_schedule_runs_the_latest_round(live: Live) -> None:
    """Unpaused with catchup off, the scheduler runs the most recent 02:00 (as a nightly round does); its iteration
    follows the logical date."""
    (run,) = live.api.wait_runs(ROUND, lambda r: r["run_type"] == "scheduled", 1, timeout_s=900)
    assert run["state"] == "success", run
    when = datetime.fromisoformat(run["logical_date"].replace("Z", "+00:00"))
    assert when.hour == 2 and (datetime.now(UTC) - when).total_seconds() < 86400
    assert live.reported((when.date() - START).days)


def test_backfill_of_three_past_iterations_beside_the_scheduler(live: Live) -> None:
    """Two days by `airflow backfill create`, then one by the REST backfill API (Airflow runs one backfill of a DAG at
    a time), while the scheduler runs rounds; each run's iteration follows its logical date, the Elo DAG runs on the
    battles Asset, the board has them all."""
    live.airflow("backfill", "create", "--dag-id", ROUND, "--from-date", "2026-01-05T00:00:00+00:00",
                 "--to-date", "2026-01-06T23:00:00+00:00")  # fmt: skip
    live.api.wait_runs(ROUND, lambda r: r["run_type"] == "backfill", 2, timeout_s=1200)
    deadline = time.monotonic() + 120  # the scheduler closes a backfill once its runs are done
    while time.monotonic() < deadline:
        backfills = live.api.http.get("/api/v2/backfills", params={"dag_id": ROUND}).json()["backfills"]
        if all(b["completed_at"] for b in backfills):
            break
        time.sleep(3)
    res = live.api.http.post(
        "/api/v2/backfills",
        json={"dag_id": ROUND, "from_date": "2026-01-07T00:00:00Z", "to_date": "2026-01-07T23:00:00Z"},
    )
    assert res.status_code == 200, res.text
    runs = live.api.wait_runs(ROUND, lambda r: r["run_type"] == "backfill", 3, timeout_s=1200)
    assert len(runs) == 3 and all(r["state"] == "success" for r in runs), runs
    iterations = {(datetime.fromisoformat(r["logical_date"].replace("Z", "+00:00")).date() - START).days for r in runs}
    assert iterations == {4, 5, 6}
    assert all(live.reported(i) for i in iterations)

    want = {f"alpha@{i}" for i in (4, 5, 6, 40)} | {"beta"}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not live.board() >= want:
        time.sleep(5)
    assert live.board() >= want
    elo = live.api.runs(ELO)
    assert any(r["state"] == "success" and r["run_type"] == "asset_triggered" for r in elo), elo


NIGHTLY = "nightly"  # a flywheel on date partitions, dropped into the folder of the running stack
ROUND_N, INGEST_N = "arena_flywheel_round__nightly", "arena_ingest__nightly"
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")  # iterations 0, 1, 2; the third day's data never arrives


def nightly_data(live: Live) -> tuple[Path, dict]:
    """Day 1: 200 instructions; day 2: 200 new ones, 50 near-duplicates of day 1 (a quarter) and 3 test-set items;
    day 3: nothing. Uploaded to the stack's S3 (SeaweedFS) under s3://arena-test/incoming/ds=<day>/."""
    from arena_ops.data.sources import filesystem

    root = live.stack.config_path.parent
    tests = [
        {"id": f"t{i}", "instruction": f"What is {i} plus {i + 7}? Reply with the number.", "output": str(2 * i + 7)}
        for i in range(12)
    ]
    (root / "nightly-tests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tests))
    day1, fresh = daily_instructions(0, 200), daily_instructions(1, 200)
    near = [{**r, "id": f"near-{i}", "instruction": r["instruction"].rstrip(".") + ", please."}
            for i, r in enumerate(day1[:50])]  # fmt: skip
    rows = day1 + fresh + near + tests
    for name, answer in (("n-alpha", lambda r: r["output"]), ("n-beta", lambda r: "no idea")):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps({"prompt_id": r["id"], "response": answer(r)}) + "\n" for r in rows)
        )
    cfg = root / "nightly.yaml"
    text = (root / "arena.yaml").read_text().replace("flywheel: live", f"flywheel: {NIGHTLY}", 1)
    text = text.replace("alpha.jsonl", "n-alpha.jsonl").replace("beta.jsonl", "n-beta.jsonl")
    data = (
        "data: {mode: partitioned, sources: ['s3://arena-test/incoming/ds={ds}/*.jsonl'], testset_sources: "
        "[nightly-tests.jsonl], min_rows_per_slice: 50, prefix_dedup_chars: 0, testset_clusters: 3, hard_size: 1}"
    )
    text = "\n".join(data if line.startswith("data:") else line for line in text.splitlines()) + "\n"
    cfg.write_text(text)
    fs, base, _ = filesystem("s3://arena-test/incoming", load_config(cfg).storage)
    for day, part in (("2026-01-01", day1[:100]), ("2026-01-01", day1[100:]), ("2026-01-02", fresh + near)):
        name = f"{base}/ds={day}/part-{len(fs.get_file_info(fs_selector(f'{base}/ds={day}')))}.jsonl"
        with fs.open_output_stream(name) as f:
            f.write("".join(json.dumps(r) + "\n" for r in part).encode())
    return cfg, {"day1": day1, "fresh": fresh, "near": near, "tests": tests, "fs": fs, "base": base}


def fs_selector(path: str):  # noqa: ANN201
    import pyarrow.fs as pafs

    return pafs.FileSelector(path, allow_not_found=True)


def wait_backfills_closed(api: AirflowREST, dag_id: str, n: int, timeout_s: float = 900) -> None:
    """Until the DAG has ``n`` backfills and the scheduler has closed them all."""
    deadline, backfills = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        backfills = api.http.get("/api/v2/backfills", params={"dag_id": dag_id}).json()["backfills"]
        if len(backfills) == n and all(b["completed_at"] for b in backfills):
            return
        time.sleep(3)
    raise AssertionError(f"{dag_id}: after {timeout_s:.0f} s the backfills are {backfills}")


def store_state(store: ArtifactStore, flywheel: str) -> dict[str, str]:
    """Every committed artifact of the flywheel and when it was committed."""
    out = {}
    for key in store.list(f"{flywheel}/", recursive=True):
        if key.endswith("_MANIFEST.json"):
            out[key] = store.read_json(key).get("committed_at", "")
    return out


def test_nightly_rounds_on_date_partitions_from_s3(live: Live) -> None:
    """A flywheel on date partitions dropped into the running stack's folder: its test set is built from fixed files,
    two days of data land in S3, a third never does. The ingest DAG and a backfill of the round DAG for the three
    days: days 1 and 2 battle their own partitions only (no day-1 prompt in a day-2 battle; the near-duplicates of
    day 1 and the test items counted in day 2's report), day 3 is skipped with the reason in its log; a second
    backfill of day 2 writes nothing."""
    from arena_ops import catalogue, layout

    api, store = live.api, live.store
    cfg, days = nightly_data(live)
    (live.stack.flywheels_dir / "nightly.yaml").symlink_to(cfg)
    api.wait_for_dags([ROUND_N, INGEST_N], timeout_s=600)
    res = subprocess.run([ARENA, "--config", str(cfg), "data", "testset"], capture_output=True, text=True,
                         env=live.env, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert store.is_committed(layout.testset(NIGHTLY, "mix")), res.stdout[-3000:] + res.stderr[-3000:]
    mix = store.read_artifact_table(layout.testset(NIGHTLY, "mix"))
    # A few test-set items arrive with day 2's data (they must not reach a battle).
    fs, base = days["fs"], days["base"]
    picked = [t for t in days["tests"] if t["id"] in set(mix["source_id"].to_pylist())][:3]
    with fs.open_output_stream(f"{base}/ds=2026-01-02/leak.jsonl") as f:
        f.write("".join(json.dumps(r) + "\n" for r in picked).encode())

    for dag in (INGEST_N, ROUND_N):
        assert api.http.patch(f"/api/v2/dags/{dag}", json={"is_paused": False}).status_code == 200
    window = {"from_date": f"{DAYS[0]}T00:00:00Z", "to_date": f"{DAYS[-1]}T23:00:00Z"}
    res = api.http.post("/api/v2/backfills", json={"dag_id": INGEST_N, **window})
    assert res.status_code == 200, res.text
    ingest = api.wait_runs(INGEST_N, lambda r: r["run_type"] == "backfill", 3, timeout_s=900)
    assert all(r["state"] == "success" for r in ingest), ingest
    events = api.http.get("/api/v2/assets/events", params={"limit": 100}).json()["asset_events"]
    extras = {e["extra"].get("ds"): e["extra"] for e in events if e.get("uri") == f"arena://{NIGHTLY}/data"}
    assert set(extras) == {DAYS[0], DAYS[1]}, extras  # day 3 skipped: no event

    res = api.http.post("/api/v2/backfills", json={"dag_id": ROUND_N, **window})
    assert res.status_code == 200, res.text
    runs = api.wait_runs(ROUND_N, lambda r: r["run_type"] == "backfill", 3, timeout_s=1500)
    by_day = {r["logical_date"][:10]: r for r in runs}
    assert all(r["state"] == "success" for r in runs), runs  # a skipped day is not a failed one
    day3 = by_day[DAYS[2]]["dag_run_id"]
    states = {t["task_id"]: t["state"] for t in api.task_instances(ROUND_N, day3)}
    assert states["resolve"] == "skipped", states
    log = json.dumps(api.http.get(f"/api/v2/dags/{ROUND_N}/dagRuns/{day3}/taskInstances/resolve/logs/1").json())
    assert "no data for 2026-01-03" in log, log[-2000:]
    assert not store.exists(f"{NIGHTLY}/iter=2/round/_MANIFEST.json")

    # Each day battled its own partition only.
    day_ids = {}
    for it, ds in ((0, DAYS[0]), (1, DAYS[1])):
        part = store.read_artifact_table(f"{NIGHTLY}/data/ds={ds}")
        day_ids[it] = set(part["prompt_id"].to_pylist())
        battled = set()
        for t in catalogue.battle_tables(store, NIGHTLY, iteration=it):
            if t.kind != "eval":
                battled |= set(catalogue.read(store, t)["prompt_id"].to_pylist())
        assert battled and battled <= day_ids[it], (it, len(battled - day_ids[it]))
    assert not day_ids[0] & day_ids[1]
    assert not day_ids[1] & set(mix["prompt_id"].to_pylist())
    res = subprocess.run([ARENA, "--config", str(cfg), "data", "partitions", "--json"], capture_output=True,
                         text=True, env=live.env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    reports = {r["ds"]: r for r in json.loads(res.stdout)}
    assert set(reports) == {DAYS[0], DAYS[1]}
    assert reports[DAYS[0]]["kept"] == 200 and reports[DAYS[1]]["rows_read"] == 253
    assert reports[DAYS[1]]["removed"].get("seen_near") == 50, reports[DAYS[1]]
    assert reports[DAYS[1]]["removed"].get("decontam") == 3 and reports[DAYS[1]]["kept"] == 200

    # A second backfill of day 2 reprocesses its run and changes nothing (Airflow runs one backfill of a DAG at a
    # time: the first must have closed).
    wait_backfills_closed(api, ROUND_N, 1)
    before = store_state(store, NIGHTLY)
    n_runs = len(api.runs(ROUND_N))
    res = api.http.post(
        "/api/v2/backfills",
        json={"dag_id": ROUND_N, "from_date": f"{DAYS[1]}T00:00:00Z", "to_date": f"{DAYS[1]}T23:00:00Z",
              "reprocess_behavior": "completed"},
    )  # fmt: skip
    assert res.status_code == 200, res.text
    wait_backfills_closed(api, ROUND_N, 2)
    runs = [r for r in api.runs(ROUND_N) if r["logical_date"][:10] == DAYS[1]]
    assert all(r["state"] == "success" for r in runs), runs
    assert len(api.runs(ROUND_N)) >= n_runs
    after = store_state(store, NIGHTLY)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed <= {k for k in after if "/leaderboard/" in k}, sorted(changed)


def test_arena_ui_in_browser(live: Live) -> None:
    """The Arena plugin inside the real Airflow UI: its endpoints refuse anonymous callers; a user who logs in on
    Airflow's own login page sees the leaderboard in the Arena view, opens a battle, and hostile markup in a
    response stays text. Screenshots go to $ARENA_TEST_ARTIFACTS (default .arena/test-artifacts)."""
    from playwright.sync_api import expect, sync_playwright

    api = live.api
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not {"alpha@40", "beta"} <= live.board():
        time.sleep(5)
    assert {"alpha@40", "beta"} <= live.board(), "the Elo DAG never rated the triggered round"

    anon = httpx.Client(base_url=api.url, timeout=30)
    for path in ("/arena/", "/arena/api/flywheels", "/arena/api/leaderboard?flywheel=live", "/arena/battles"):
        assert anon.get(path).status_code == 401, path
        assert anon.get(path, cookies={"_token": "not-a-jwt"}).status_code in (401, 403), path
    rows = api.http.get("/arena/api/leaderboard", params={"flywheel": "live"}).json()["rows"]  # bearer token
    assert {"alpha@40", "beta"} <= {r["model"] for r in rows}

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{api.url}/plugin/arena")
            page.get_by_label("Username").fill(api.user)
            page.get_by_label("Password").fill(api.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/plugin/arena", timeout=60_000)
            arena = page.frame_locator("iframe")
            expect(arena.locator("#leaderboard tbody tr[data-model='alpha@40']")).to_be_visible(timeout=60_000)
            expect(arena.locator("#leaderboard tbody tr[data-model='beta']")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "arena-ui.png"))
            arena.get_by_role("link", name=K3, exact=True).first.click()  # the other flywheel of the folder
            expect(arena.locator("h1")).to_contain_text(K3, timeout=60_000)
            expect(arena.locator("#leaderboard tbody tr[data-model='alpha@40']")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "arena-ui-k3.png"))
            arena.get_by_role("link", name="live", exact=True).first.click()
            expect(arena.locator("h1")).not_to_contain_text(K3, timeout=60_000)

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

            # The page of the UI-triggered round: its DAG run and task instances, read from Airflow's database.
            page.goto(f"{api.url}/arena/rounds/40?flywheel=live")
            expect(page.locator("#dag-run")).to_have_text(live.manual_run, timeout=60_000)
            tis = {t["task_id"]: t for t in api.http.get(
                f"/api/v2/dags/{ROUND}/dagRuns/{live.manual_run}/taskInstances").json()["task_instances"]}  # fmt: skip
            expect(page.locator("#tasks tr[data-task='resolve'] td.state")).to_have_text(tis["resolve"]["state"])
            assert page.locator("#tasks tr[data-task]").count() == len(tis)
            step = live.store.read_artifact_json("live/iter=40/round", "round.json")["steps"][0]
            expect(page.locator(f"#steps tr[data-step='{step['name']}'] td.battled")).to_have_text("alpha@40")
            page.screenshot(path=str(ARTIFACTS / "arena-round.png"), full_page=True)
        finally:
            browser.close()
