"""Faults on `arena stack`, each in a round of its own that must still complete with no battle or judgment lost or
done twice and no half-written artifact visible: the scheduler SIGKILLed mid-round, the target's vLLM replica killed
during generation, the S3 server stopped during writes, the training job killed (the sensor fails with the job's
last log lines; clearing submit_sft trains again), and the same iteration triggered twice at once.

The rounds are real: a tiny model served by Ray Serve on the stack's head node battles recorded right answers under a
regex verifier (it loses, so SFT has data), SFT runs as a Ray job (DeepSpeed) on the worker node, the SFT model is
served and evaluated. Each test prints its fault's recovery time."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from arena_ops import layout
from arena_ops.config import load_config
from arena_ops.local.stack import Stack
from arena_ops.procs import carries
from arena_ops.store import ArtifactStore
from tests.conftest import free_block
from tests.integration.conftest import TINY_ENGINE
from tests.integration.test_stack import AirflowREST, Live

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLYWHEEL = "faults"
ROUND = f"arena_flywheel_round__{FLYWHEEL}"  # generated from the stack's flywheel folder
BATTLES = 12  # prompts per round (one competitor): the battles each round must end with


def faults_config(root: Path) -> Path:
    problems = [(a, b) for a in range(1, 10) for b in range(1, 9)]
    (root / "tasks.jsonl").write_text(
        "".join(
            json.dumps({"id": f"add-{a}-{b}", "instruction": f"What is {a} plus {b}?", "output": rf"^\s*{a + b}(?!\d)"})
            + "\n"
            for a, b in problems
        )
    )
    (root / "oracle.jsonl").write_text(
        "".join(json.dumps({"prompt_id": f"add-{a}-{b}", "response": str(a + b)}) + "\n" for a, b in problems)
    )
    s3 = free_block(5, also=(10000,))
    ray, dashboard, pg, af, serve = free_block(2), free_block(1), free_block(1), free_block(3), free_block(1)
    cfg = root / "arena.yaml"
    cfg.write_text(
        textwrap.dedent(f"""\
        flywheel: {FLYWHEEL}
        storage:
          root: s3://arena-test/flywheel
          s3: {{endpoint_url: "http://127.0.0.1:{s3}", conn_id: arena_s3}}
        models:
          target:
            name: tiny-a
            source: {{kind: served, path: ./models/a, tiny: {{arch: llama, seed: 0}}, engine: {TINY_ENGINE}}}
            sampling: {{temperature: 0.8, max_tokens: 48}}
          competitors: [{{name: oracle, source: {{kind: recorded, path: oracle.jsonl}}}}]
          judge: {{name: oracle, source: {{kind: recorded, path: oracle.jsonl}}}}
        data:
          sources: [tasks.jsonl]
          num_shards: 4
          min_instruction_chars: 0
          prefix_dedup_chars: 0
          minhash_threshold: null
          languages: null
        battle: {{sample_limit: {BATTLES}, concurrency: 1, chunk_size: 1, max_retries: 2, request_timeout_s: 120}}
        judge: {{kind: verifier, verifier: regex}}
        training:
          schedule: compact
          stages: [sft]
          sft: {{learning_rate: 1.0e-4, epochs: 1, max_steps: 2, max_length: 256}}
          launcher: {{kind: ray_job, ray_address: "http://127.0.0.1:{dashboard}", ray_resources: {{worker: 1}}}}
        rating: {{bootstrap_rounds: 20}}
        serving: {{ray_address: "127.0.0.1:{ray}", proxy_location: HeadOnly, port: {serve}, deploy_timeout_s: 540}}
        airflow: {{schedule: null, retries: 3, judge_chunks: 1, train_poke_s: 2}}
        stack: {{dir: stack, postgres_port: {pg}, airflow_port: {af}, head_cpus: 8, worker_cpus: 2}}
        """)
    )
    return cfg


PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


@contextlib.contextmanager
def orphans_never_reaped() -> Iterator[None]:
    """The stack's components outlive `arena stack up`, so their parent is whatever adopts orphans. Here that is this
    process, which leaves a killed one a zombie as long as the module runs — as a container's init that never reaps
    does (CI's: there a killed scheduler stayed a zombie, its leftovers were kept, and the round never went on)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error, ChildProcessError):
                if child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("faults")
    config = faults_config(root)
    stack = Stack(load_config(config), config)
    env = {**os.environ, **stack.client_env()}
    live = Live(stack, None, None, env, 0.0, "")  # type: ignore[arg-type]
    with orphans_never_reaped():
        res = live.arena("stack", "up")
        try:
            assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
            os.environ.update(stack.client_env())
            live.store = ArtifactStore.from_config(stack.cfg.storage)
            live.api = AirflowREST(stack)
            live.api.wait_for_dags([ROUND])
            assert live.api.http.patch(f"/api/v2/dags/{ROUND}", json={"is_paused": False}).status_code == 200
            yield live
        finally:
            down = live.arena("stack", "down", timeout=300)
            assert down.returncode == 0, down.stdout + down.stderr
            assert stack.marked() == []


def trigger(live: Live, iteration: int) -> str:
    res = live.api.http.post(
        f"/api/v2/dags/{ROUND}/dagRuns", json={"logical_date": None, "conf": {"iteration": iteration}}
    )
    assert res.status_code == 200, res.text
    return res.json()["dag_run_id"]


def wait_run(live: Live, run_id: str, timeout_s: float = 1200) -> dict:
    (run,) = live.api.wait_runs(ROUND, lambda r: r["dag_run_id"] == run_id, 1, timeout_s=timeout_s)
    return run


def task_state(live: Live, run_id: str, task_id: str) -> str | None:
    res = live.api.http.get(f"/api/v2/dags/{ROUND}/dagRuns/{run_id}/taskInstances/{task_id}")
    return res.json().get("state") if res.status_code == 200 else None


def wait_until(what: str, check, timeout_s: float = 600, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def committed_parts(live: Live, iteration: int, stage: str) -> list[str]:
    return live.store.list_artifacts_at(f"{layout.iteration_base(FLYWHEEL, iteration)}/{stage}")


def assert_round_intact(live: Live, iteration: int) -> None:
    """The round's report exists; every committed artifact of the iteration holds exactly the files its manifest
    lists (sizes and hashes); each generation and judgment was committed once; the battle table has every battle
    once."""
    store, base = live.store, layout.iteration_base(FLYWHEEL, iteration)
    assert store.exists(f"{base}/report/round/_MANIFEST.json")
    manifests = [k for k in store.list(base, recursive=True) if k.endswith("/_MANIFEST.json")]
    assert manifests
    for key in manifests:
        prefix = key.rsplit("/", 1)[0]
        for f in store.manifest(prefix).files:
            data = store.get_bytes(f"{prefix}/{f.path}")
            assert len(data) == f.bytes and hashlib.sha256(data).hexdigest() == f.sha256, f"{prefix}/{f.path}"
    for stage in (layout.RESPONSES, layout.JUDGMENTS):
        keys = []
        for name in committed_parts(live, iteration, stage):
            table = store.read_artifact_table(f"{base}/{stage}/{name}")
            turns = table["turn"].to_pylist() if "turn" in table.column_names else [0] * table.num_rows
            keys += list(zip(table["key"].to_pylist(), turns, strict=True))
        assert keys and len(keys) == len(set(keys)), f"{stage}: {len(keys) - len(set(keys))} rows committed twice"
    tables = [k.rsplit("/", 1)[0] for k in manifests if f"/{layout.BATTLES}/" in k]
    battle_ids = []
    for prefix in tables:
        if "data.parquet" in {f.path for f in store.manifest(prefix).files}:
            battle_ids += store.read_artifact_table(prefix)["battle_id"].to_pylist()
    assert len(battle_ids) == len(set(battle_ids)) and len(set(battle_ids)) >= BATTLES, battle_ids


def of_stack(live: Live, needle: str) -> psutil.Process | None:
    """This stack's process whose command line holds ``needle`` (another test lane may run the same model names or
    training jobs on its own Ray cluster: those must not be touched)."""
    for p in psutil.process_iter(["cmdline"]):
        if needle in " ".join(p.info["cmdline"] or []) and carries(p.pid, "ARENA_STACK", str(live.stack.dir)):
            return p
    return None


def replica_of(live: Live, app_prefix: str) -> psutil.Process:
    p = of_stack(live, f"ServeReplica:{app_prefix}")
    assert p is not None, f"no replica process of {app_prefix} in this stack"
    return p


def start_what_stopped(live: Live) -> None:
    """The runbook's recovery: `arena stack up` (`make up`) starts what is not running."""
    up = live.arena("stack", "up")
    assert up.returncode == 0, up.stderr[-3000:]


def test_replica_killed_during_generation(live: Live) -> None:
    run_id = trigger(live, 0)
    wait_until("a first committed chunk of responses", lambda: committed_parts(live, 0, layout.RESPONSES))
    done_at_kill = len(committed_parts(live, 0, layout.RESPONSES))
    replica = replica_of(live, "arena-model-tiny-a")
    replica.kill()
    killed = time.monotonic()
    run = wait_run(live, run_id)
    print(
        f"replica killed after {done_at_kill} of {BATTLES} generations; "
        f"round done {time.monotonic() - killed:.0f} s later"
    )
    assert done_at_kill < BATTLES, "the generation finished before the kill: the test did not test anything"
    assert run["state"] == "success", run
    assert replica_of(live, "arena-model-tiny-a").pid != replica.pid  # Serve started a new replica
    assert_round_intact(live, 0)


def test_scheduler_killed_mid_round(live: Live) -> None:
    run_id = trigger(live, 1)
    wait_until("battles_1 running", lambda: task_state(live, run_id, "battles_1") == "running", every_s=1)
    scheduler = live.stack.pid("scheduler")
    os.kill(scheduler, signal.SIGKILL)
    killed = time.monotonic()
    wait_until("the scheduler to be gone", lambda: live.stack.pid("scheduler") is None, timeout_s=30)
    assert psutil.Process(scheduler).status() == psutil.STATUS_ZOMBIE  # as under an init that never reaps
    start_what_stopped(live)
    assert live.stack.pid("scheduler") not in (None, scheduler)
    run = wait_run(live, run_id)
    print(f"scheduler SIGKILLed mid-round; round done {time.monotonic() - killed:.0f} s later")
    assert run["state"] == "success", run
    assert_round_intact(live, 1)


def test_s3_stopped_during_writes(live: Live) -> None:
    run_id = trigger(live, 2)
    wait_until("a first committed chunk of responses", lambda: committed_parts(live, 2, layout.RESPONSES))
    s3 = live.stack.pid("s3")
    os.kill(s3, signal.SIGKILL)
    stopped = time.monotonic()
    time.sleep(15)  # the round's writes fail meanwhile
    start_what_stopped(live)
    run = wait_run(live, run_id)
    print(f"S3 server down for {time.monotonic() - stopped:.0f} s of the round; round done then")
    assert run["state"] == "success", run
    assert_round_intact(live, 2)


def test_training_job_killed(live: Live) -> None:
    run_id = trigger(live, 3)

    job = wait_until(
        "the SFT job's process", lambda: of_stack(live, "arena_ops.training.stages"), timeout_s=900, every_s=0.5
    )
    job.kill()
    killed = time.monotonic()
    run = wait_run(live, run_id)
    assert run["state"] == "failed" and task_state(live, run_id, "wait_sft") == "failed", run
    tries = live.api.http.get(f"/api/v2/dags/{ROUND}/dagRuns/{run_id}/taskInstances/wait_sft").json()["try_number"]
    log = json.dumps(  # the UI's log view: structured events
        live.api.http.get(f"/api/v2/dags/{ROUND}/dagRuns/{run_id}/taskInstances/wait_sft/logs/{tries}").json()
    )
    assert "last lines" in log and "clear submit_sft" in log, log[-3000:]
    first = (
        ""
        if tries == 1
        else json.dumps(
            live.api.http.get(f"/api/v2/dags/{ROUND}/dagRuns/{run_id}/taskInstances/wait_sft/logs/1").json()
        )
    )
    assert tries == 1, f"a failed job is not polled again; try 1 said: {first[-3000:]}"

    res = live.api.http.post(
        f"/api/v2/dags/{ROUND}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ["submit_sft"],
            "include_downstream": True,
            "only_failed": False,  # submit_sft itself succeeded: it submitted the job that was killed
        },
    )
    assert res.status_code == 200, res.text
    wait_until("the run to restart", lambda: wait_state(live, run_id) not in ("failed",), timeout_s=120, every_s=1)
    run = wait_run(live, run_id)
    print(f"training job killed; trained again after a clear, round done {time.monotonic() - killed:.0f} s later")
    assert run["state"] == "success", run
    assert live.store.is_committed(f"{layout.iteration_base(FLYWHEEL, 3)}/model/sft")
    assert_round_intact(live, 3)


def failed_tasks(live: Live, run_id: str) -> str:
    """The round's failed tasks with the end of each one's log (for an assertion's message)."""
    out = []
    for t in live.api.task_instances(ROUND, run_id):
        if t["state"] in ("failed", "upstream_failed"):
            log = live.api.http.get(f"/api/v2/dags/{ROUND}/dagRuns/{run_id}/taskInstances/{t['task_id']}/logs/1")
            text = json.dumps(log.json())[-3000:] if log.status_code == 200 else ""
            out.append(f"{t['task_id']} {t['state']}: {text}")
    return "the round finished without waiting: " + "\n".join(out)


def wait_state(live: Live, run_id: str) -> str:
    return live.api.http.get(f"/api/v2/dags/{ROUND}/dagRuns/{run_id}").json()["state"]


def test_same_iteration_triggered_twice(live: Live) -> None:
    first, second = trigger(live, 4), trigger(live, 4)
    for run_id in (first, second):
        assert wait_run(live, run_id)["state"] == "success"
    # One run did the work; the other (queued behind it: one active run per DAG) found every step done.
    assert sorted(reused(live, r, "battles_1") for r in (first, second)) == [False, True]
    assert sorted(reused(live, r, "wait_sft") for r in (first, second)) == [False, True]
    assert_round_intact(live, 4)


def reused(live: Live, run_id: str, task_id: str) -> bool:
    res = live.api.http.get(
        f"/api/v2/dags/{ROUND}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
        params={"deserialize": True},
    )
    assert res.status_code == 200, res.text
    value = res.json()["value"]
    value = json.loads(value) if isinstance(value, str) else value
    return bool(value.get("reused"))


def test_promotion_waits_in_the_hitl_task_until_answered_via_rest(live: Live) -> None:
    """A round triggered with the UI's promotion_approval param set to always: after its report the promotion waits
    in promotion_review (Airflow's human-in-the-loop operator, the evidence in its body) — the run is not done — and
    proceeds when a person answers through the REST API the UI uses; the record names them. The round's cost ledger
    holds the served target's tokens as vLLM reported them and the training job's seconds."""
    from arena_ops import ledger
    from arena_ops.promotion import KEEP, OPTIONS

    res = live.api.http.post(
        f"/api/v2/dags/{ROUND}/dagRuns",
        json={"logical_date": None, "conf": {"iteration": 5, "promotion_approval": "always"}},
    )
    assert res.status_code == 200, res.text
    run_id = res.json()["dag_run_id"]
    hitl = f"/api/v2/dags/{ROUND}/dagRuns/{run_id}/taskInstances/promotion_review/-1/hitlDetails"

    def waiting() -> dict | None:
        assert wait_state(live, run_id) not in ("success", "failed"), failed_tasks(live, run_id)
        r = live.api.http.get(hitl)
        return r.json() if r.status_code == 200 and task_state(live, run_id, "promotion_review") else None

    form = wait_until("the promotion_review task to wait for an answer", waiting, timeout_s=1500, every_s=5)
    assert form["options"] == OPTIONS and "P(better than" in form["body"] and form["subject"].startswith(FLYWHEEL)
    time.sleep(5)
    assert wait_state(live, run_id) == "running"  # it waits for the person, however long
    answer = live.api.http.patch(hitl, json={"chosen_options": [KEEP]})
    assert answer.status_code == 200, answer.text
    assert wait_run(live, run_id)["state"] == "success"
    assert task_state(live, run_id, "record_approval") == "success"
    rec = live.store.read_json(f"{layout.iteration_base(FLYWHEEL, 5)}/report/promotion/promotion.json")
    assert rec["decision"] == "keep" and rec["chosen"]["label"] == rec["incumbent"]["label"]
    assert rec["approval"]["status"] == "answered" and rec["approval"]["by"], rec["approval"]
    # The ledger: vLLM's usage of the served target, and the training job's seconds.
    entries = {e["entry"]: e for e in ledger.entries(live.store, FLYWHEEL, 5)}
    (battle,) = [e for e in entries.values() if e["kind"] == "battle"]
    (target,) = [r for r in battle["rows"] if r["role"] == "answers"]
    assert target["model"] == "tiny-a" and target["requests"] == BATTLES and target["completion_tokens"] > 0
    (train,) = entries["train-sft"]["rows"]
    assert train["wall_s"] > 0 and train["cpu_s"] > 0 and train["gpu_s"] is None
