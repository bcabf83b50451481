"""Three iterations of the paper's schedule, end to end on CPU: the session's tiny target on Ray Serve (vLLM), the
reference solver as a recorded competitor, the verifier judge, real TRL/DeepSpeed jobs for SFT, DPO, RM and RL, and a
Mix test set built first (Diverse by K-Means over MiniLM embeddings, Hard rated by the served tiny judge).

What it shows: every round succeeds and every stage trains; each step's battles were fought by the model the
previous step produced (fingerprints in the battle records); DPO-I2's data holds the DPO slices of I0…I2 and no SFT
slice; no evaluation battle reaches a training table; iterations 0, 1, 2 with none skipped; a rerun does no new work.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from arena_ops import layout
from arena_ops.config import load_config
from arena_ops.data.tasks import write_tasks
from arena_ops.flywheel import elo_update, round_status, run_round
from arena_ops.revisions import weights_revision
from arena_ops.round import Round
from arena_ops.store import ArtifactStore
from tests.conftest import free_port
from tests.integration.conftest import Serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = {"sft": 0, "dpo": 1, "rl": 2}


def rounds_config(serving: Serving, root: Path) -> Path:
    tasks, solver = write_tasks(root / "tasks", n=44, seed=1)
    cfg = yaml.safe_load(serving.config.read_text())
    base = serving.config.parent
    for spec in (cfg["models"]["target"], cfg["models"]["judge"]):  # the session deployment: tiny-a, tiny-b
        spec["source"]["path"] = str((base / spec["source"]["path"]).resolve())
    cfg["models"]["target"]["sampling"] = {"temperature": 0.0, "max_tokens": 6}
    cfg["models"]["judge"]["sampling"] = {"temperature": 0.0, "max_tokens": 32}
    cfg["models"]["competitors"] = [{"name": "solver", "source": {"kind": "recorded", "path": str(solver)}}]
    steps = {"max_steps": 2, "max_length": 128, "per_device_batch_size": 2, "epochs": 1}
    cfg.update(
        flywheel="rounds",
        storage={"root": f"file://{root}/store"},
        data={
            "sources": [str(tasks)],
            "min_instruction_chars": 0,
            "prefix_dedup_chars": 0,
            "minhash_threshold": None,
            "languages": None,
            "decontam_top_k": 0,
            "decontam_ngram": None,
            "num_shards": 9,
            "testset_clusters": 2,
            "diverse_per_cluster": 2,
            "hard_candidates_per_cluster": 2,
            "hard_size": 2,
        },
        battle={"concurrency": 8, "chunk_size": 8},
        judge={"kind": "verifier", "verifier": "exact"},
        training={
            "schedule": "paper",
            "stages": ["sft", "dpo", "rl"],
            "sft": {**steps, "learning_rate": 1.0e-3},
            "dpo": {**steps, "learning_rate": 1.0e-4, "beta": 0.1},
            "rm": {**steps, "learning_rate": 1.0e-4},
            "rl": {**steps, "learning_rate": 1.0e-5, "num_generations": 2, "max_completion_length": 6},
            "deepspeed": {"zero_stage": 2},
        },
        rating={"bootstrap_rounds": 20},
    )
    path = root / "rounds.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_three_paper_iterations(serving: Serving, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("ARENA_RAY_STATE", "ARENA_RAY_TMP", "ARENA_RAY_PORT"):
        monkeypatch.setenv(k, serving.env[k])
    import arena_ops.serving.deploy as deploy  # its module constants read the env at import

    monkeypatch.setattr(deploy, "STATE_DIR", Path(serving.env["ARENA_RAY_STATE"]))
    monkeypatch.setattr(deploy, "LOCAL_HEAD_PORT", int(serving.env["ARENA_RAY_PORT"]))
    config = rounds_config(serving, tmp_path)

    # The Mix test set first: its items never reach a slice; every policy is evaluated on it.
    res = serving.arena("--config", str(config), "data", "testset")
    assert res.returncode == 0, res.stderr[-3000:]
    res = serving.arena("--config", str(config), "data", "prepare")
    assert res.returncode == 0, res.stderr[-3000:]

    outs = [run_round(str(config)) for _ in range(3)]  # no iteration given: each run takes the next one
    assert [o["iteration"] for o in outs] == [0, 1, 2]
    store = ArtifactStore.from_uri(f"file://{tmp_path}/store")
    store_storage = load_config(config).storage
    assert store.list_iterations("rounds") == [0, 1, 2]
    mix = set(store.read_artifact_table(layout.testset("rounds", "mix"))["prompt_id"].to_pylist())
    assert mix

    for it in range(3):
        rnd = Round.load(store, "rounds", it)
        status = round_status(rnd, store)
        assert [s["stage"] for s in status["steps"]] == ["sft", "dpo", "rl"]
        assert [s["slice"] for s in status["steps"]] == [3 * it, 3 * it + 1, 3 * it + 2]
        for st in status["steps"]:
            for stage, p in st["produced"].items():
                assert p["model"] is not None, (it, stage, st)  # every stage trained
            assert all(n and n > 0 for n in st["training_rows"].values()), (it, st)
        # Each step battled the model of the step before (weights recorded in every battle record).
        expected = [
            rnd.start.uri,
            status["steps"][0]["produced"]["sft"]["model"],
            status["steps"][1]["produced"]["dpo"]["model"],
        ]
        for st, uri in zip(status["steps"], expected, strict=True):
            assert st["battled_model"] == uri
            table = store.read_artifact_table(layout.battles("rounds", it, st["run"]))
            revisions = set(table.filter(pc.equal(table["model_a"], "tiny-a"))["revision_a"].to_pylist()) | set(
                table.filter(pc.equal(table["model_b"], "tiny-a"))["revision_b"].to_pylist()
            )
            # answers are keyed by the content of the weights they came from, never by the path
            assert revisions == {weights_revision(uri, store_storage)}, (it, st["stage"], revisions)
            assert not mix & set(table["prompt_id"].to_pylist())  # test items never battle in a step
        if it > 0:  # the start is a policy of the previous iteration (the best on the Mix board)
            prev = Round.load(store, "rounds", it - 1)
            assert rnd.start in prev.policies(store) or rnd.start == prev.start

    # DPO-I2 trains on the DPO slices of I0, I1, I2 (D1 ∪ D4 ∪ D7) and nothing else.
    dpo = store.read_artifact_table(layout.train_data("rounds", 2, "dpo"))
    assert set(dpo["run"].to_pylist()) <= {"dpo-shard-001", "dpo-shard-004", "dpo-shard-007"}
    assert set(dpo["iteration"].to_pylist()) == {0, 1, 2}
    dpo_slices = set()
    for k in (1, 4, 7):
        dpo_slices |= set(store.read_artifact_table(layout.shard("rounds", k))["prompt_id"].to_pylist())
    assert set(dpo["prompt_id"].to_pylist()) <= dpo_slices
    # No evaluation battle reaches a training table; evaluations live under eval/, one table per evaluated model.
    for it in range(3):
        for stage in ("sft", "dpo", "rm", "rl"):
            rows = store.read_artifact_table(layout.train_data("rounds", it, stage))
            assert not mix & set(rows["prompt_id"].to_pylist()), (it, stage)
    evaluated = store.list_artifacts_at("rounds/eval/mix/battles")
    assert {"base", "i0-sft", "i0-dpo", "i0-rl", "i2-rl"} <= set(evaluated)
    report = store.read_json(layout.round_report("rounds", 2) + "/report.json")
    assert report["elo"]["scope"] == "eval-mix" and any(r["model"] == "tiny-a@i2-rl" for r in report["elo"]["board"])

    # A rerun of iteration 1 does no new work: same battle tables, same models, nothing re-judged or retrained.
    before = {k: store.manifest(k).committed_at for k in _committed(store, "rounds", 1)}
    again = run_round(str(config), iteration=1)
    assert again["iteration"] == 1
    after = {k: store.manifest(k).committed_at for k in _committed(store, "rounds", 1)}
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed <= {layout.round_report("rounds", 1)}, changed
    res = serving.arena("--config", str(config), "round", "show", "1", "--json")
    shown = json.loads(res.stdout)
    assert shown["iteration"] == 1 and [s["stage"] for s in shown["steps"]] == ["sft", "dpo", "rl"]
    assert os.environ.get("ARENA_RAY_PORT") == serving.env["ARENA_RAY_PORT"]

    elo_update(str(config))  # the Elo DAG's step: the boards the Arena view reads
    arena_view_tells_the_story(store, "rounds", "tiny-a", 3, ("sft", "dpo", "rl"))


def arena_view_tells_the_story(
    store: ArtifactStore, flywheel: str, target: str, iterations: int, stages: tuple[str, ...]
) -> None:
    """The Arena view of this run in Chromium: the progress chart shows the target's versions in stage order across
    the iterations with their Mix ratings, the kept version marked; a round's page shows each step and stage as the
    store has them. Screenshots go to $ARENA_TEST_ARTIFACTS (default .arena/test-artifacts)."""
    import threading

    import uvicorn
    from playwright.sync_api import expect, sync_playwright

    from arena_ops import promotion
    from arena_ops.ui.app import create_app
    from arena_ops.ui.screenshot import CHROMIUM, CHROMIUM_ARGS

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(lambda: store, lambda: "tester"), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    board = {
        r["model"]: r for r in store.read_artifact_json(layout.leaderboard(flywheel, "eval-mix"), "leaderboard.json")
    }
    order = ["base"] + [f"i{it}-{stage}" for it in range(iterations) for stage in stages]
    versions = [f"{target}@{tag}" for tag in order]
    assert set(versions) <= set(board), (versions, sorted(board))  # every policy of every iteration was evaluated
    kept = [promotion.read(store, flywheel, it)["chosen"]["label"] for it in range(iterations)]
    artifacts = Path(
        os.environ.get("ARENA_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / ".arena/test-artifacts")
    )
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/?flywheel={flywheel}")
                chart = page.locator("#progress")
                expect(chart).to_be_visible(timeout=60_000)
                shown = chart.locator("g.version").evaluate_all("gs => gs.map(g => g.dataset.model)")
                assert shown == versions, (shown, versions)  # every version, in stage order
                ratings = chart.locator("g.version").evaluate_all("gs => gs.map(g => Number(g.dataset.rating))")
                assert ratings == pytest.approx([board[v]["rating"] for v in versions])
                assert chart.locator("g.version.current").get_attribute("data-model") == kept[-1]
                ringed = set(chart.locator("g.version.kept").evaluate_all("gs => gs.map(g => g.dataset.model)"))
                assert ringed == set(kept) & set(versions)
                refs = sorted((m for m in board if not m.startswith(f"{target}@")), key=lambda m: -board[m]["rating"])
                assert chart.locator("g.reference").evaluate_all("gs => gs.map(g => g.dataset.model)") == refs
                chart.screenshot(path=str(artifacts / f"{flywheel}-progress.png"))

                page.locator("#rounds td a", has_text="1").first.click()  # round 1's page from the rounds table
                expect(page.locator("h1")).to_contain_text("Round 1")
                status = round_status(Round.load(store, flywheel, 1), store)
                rows = page.locator("#steps tr[data-stage]")
                want = [(st["stage"], stage) for st in status["steps"] for stage in st["produced"]]
                got = rows.evaluate_all("rs => rs.map(r => [r.dataset.step, r.dataset.stage])")
                assert [tuple(g) for g in got] == want
                for st in status["steps"]:
                    first = page.locator(f"#steps tr[data-step='{st['stage']}']").first
                    expect(first.locator("td.battled")).to_have_text(st["battled_label"])
                    expect(first.locator("td.battles")).to_have_text(str(st["battles"]["count"]))
                    for stage, produced in st["produced"].items():
                        row = page.locator(f"#steps tr[data-step='{st['stage']}'][data-stage='{stage}']")
                        expect(row.locator("td.rows")).to_have_text(str(st["training_rows"][stage]))
                        expect(row.locator("td.produced")).to_have_text(produced["label"])
                expect(page.locator("#kept")).to_have_text(kept[1])
                expect(page.locator("#start")).to_have_text(Round.load(store, flywheel, 1).start.label)
                page.screenshot(path=str(artifacts / f"{flywheel}-round-1.png"), full_page=True)
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _committed(store: ArtifactStore, flywheel: str, iteration: int) -> list[str]:
    out = []
    for stage in store.list_stages(flywheel, iteration):
        base = f"{flywheel}/iter={iteration}/{stage}"
        if store.is_committed(base):
            out.append(base)
        out += [f"{base}/{n}" for n in store.list_artifacts(flywheel, iteration, stage)]
    return out


def test_two_days_of_partitions_each_battle_and_train_on_their_own(
    serving: Serving, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.mode partitioned on the same served target: day 1's round battles and trains SFT on day 1's partition,
    day 2's on day 2's only — its repeats of day 1 removed and counted — and day 2 starts from day 1's policy."""
    for k in ("ARENA_RAY_STATE", "ARENA_RAY_TMP", "ARENA_RAY_PORT"):
        monkeypatch.setenv(k, serving.env[k])
    import arena_ops.serving.deploy as deploy

    monkeypatch.setattr(deploy, "STATE_DIR", Path(serving.env["ARENA_RAY_STATE"]))
    monkeypatch.setattr(deploy, "LOCAL_HEAD_PORT", int(serving.env["ARENA_RAY_PORT"]))
    config = rounds_config(serving, tmp_path)
    tasks = [json.loads(line) for line in (tmp_path / "tasks" / "tasks.jsonl").read_text().splitlines()]
    for ds, rows in (("2026-01-01", tasks[:22]), ("2026-01-02", tasks[22:] + tasks[:5])):
        (tmp_path / "days" / f"ds={ds}").mkdir(parents=True)
        (tmp_path / "days" / f"ds={ds}" / "part.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = yaml.safe_load(config.read_text())
    raw["flywheel"] = "days"
    raw["data"].update(mode="partitioned", sources=[f"{tmp_path}/days/ds={{ds}}/*.jsonl"], min_rows_per_slice=5)
    raw["training"].update(schedule="compact", stages=["sft"])
    raw["airflow"] = {**raw.get("airflow", {}), "start_date": "2026-01-01"}
    config.write_text(yaml.safe_dump(raw))

    assert [run_round(str(config), iteration=i)["iteration"] for i in (0, 1)] == [0, 1]
    store = ArtifactStore.from_uri(f"file://{tmp_path}/store")
    for it, ds in ((0, "2026-01-01"), (1, "2026-01-02")):
        day = set(store.read_artifact_table(layout.dataset("days", f"ds={ds}"))["prompt_id"].to_pylist())
        rnd = Round.load(store, "days", it)
        (st,) = rnd.steps
        assert (st.partition, st.run) == (ds, f"all-ds={ds}-0")
        battled = set(store.read_artifact_table(layout.battles("days", it, st.run))["prompt_id"].to_pylist())
        sft = store.read_artifact_table(layout.train_data("days", it, "sft"))
        assert battled and battled <= day, (it, len(battled - day))
        assert sft.num_rows > 0 and set(sft["prompt_id"].to_pylist()) <= day, it
        assert rnd.produced(store, "sft") is not None  # trained
    day2 = store.manifest(layout.dataset("days", "ds=2026-01-02")).meta
    assert day2["removed"] == {"seen_exact": 5} and day2["kept"] == 22, day2
    assert Round.load(store, "days", 1).start.label == "tiny-a@i0-sft"  # the next day starts from day 1's policy
