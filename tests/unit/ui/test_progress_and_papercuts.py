"""The progress chart's geometry, and the newcomer's papercuts of issue 34: the screenshot tool without Chromium,
`arena stack …` without --config, and no RuntimeDirWarning in a shell without XDG_RUNTIME_DIR. The chart and the
round page on a real run are checked in Chromium by tests/integration/test_rounds.py (three paper iterations) and on
the live stack by tests/integration/test_stack.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arena_ops.cli.main import app
from arena_ops.local import stack as stack_mod
from arena_ops.ui import charts

REPO = Path(__file__).resolve().parents[3]


def version(model: str, rating: float, iteration: int | None, stage: str, kept: list[int], current: bool) -> dict:
    tag = model.rsplit("@", 1)[1]
    return {"model": model, "rating": rating, "ci_low": rating - 20, "ci_high": rating + 20, "tag": tag,
            "iteration": iteration, "stage": stage, "kept_after": kept, "current": current}  # fmt: skip


def test_progress_chart_orders_versions_marks_the_kept_and_keeps_labels_apart() -> None:
    versions = [
        version("t@base", 840, None, "base", [], False),
        version("t@i0-sft", 1090, 0, "sft", [0], False),
        version("t@i0-dpo", 1100, 0, "dpo", [1], True),
        version("t@i1-sft", 1070, 1, "sft", [], False),
    ]
    refs = [{"model": m, "rating": r, "ci_low": r - 10, "ci_high": r + 10} for m, r in
            (("solver", 1290), ("tiny-qwen2", 862), ("tiny-llama", 861))]  # fmt: skip
    c = charts.progress({"versions": versions, "references": refs})
    xs = [p["x"] for p in c["points"]]
    assert xs == sorted(xs) and [p["model"] for p in c["points"]] == [v["model"] for v in versions]
    ys = {p["model"]: p["y"] for p in c["points"]}
    assert ys["t@i0-dpo"] < ys["t@i0-sft"] < ys["t@base"]  # higher Elo, higher on the chart (smaller y)
    assert [p["model"] for p in c["points"] if p["kept"]] == ["t@i0-sft", "t@i0-dpo"]
    assert [p["model"] for p in c["points"] if p["current"]] == ["t@i0-dpo"]
    assert len(c["separators"]) == 2  # base | iteration 0 | iteration 1
    labels = sorted(b["label_y"] for b in c["bands"])
    assert all(b - a >= 13 for a, b in zip(labels, labels[1:], strict=False))  # 862 and 861 do not overprint
    for p in c["points"]:
        assert c["top"] <= p["y_hi"] <= p["y"] <= p["y_lo"] <= c["bottom"]
    assert charts.progress({"versions": [], "references": refs})["points"] == []


def test_screenshot_tool_without_chromium_names_make_browser() -> None:
    env = {**os.environ, "ARENA_CHROMIUM": "/nonexistent/chromium"}
    res = subprocess.run([sys.executable, "-m", "arena_ops.ui.screenshot", "--out", "/tmp/never"],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert res.returncode != 0
    assert "make browser" in res.stderr and "/nonexistent/chromium" in res.stderr
    assert "Traceback" not in res.stderr


def test_stack_commands_default_to_the_running_stacks_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {k: v for k, v in os.environ.items() if k != "ARENA_CONFIG"}
    monkeypatch.delenv("ARENA_CONFIG", raising=False)
    monkeypatch.setattr(stack_mod, "running_stacks", lambda: [])
    res = runner.invoke(app, ["stack", "status"], env=env)
    assert res.exit_code == 2 and "no stack is running" in res.output and "--config" in res.output

    config = tmp_path / "a.yaml"
    config.write_text((REPO / "configs" / "demo.yaml").read_text().replace("flywheel: demo", "flywheel: a", 1))
    (tmp_path / "datasets").symlink_to(REPO / "configs" / "datasets")
    monkeypatch.setattr(stack_mod, "running_stacks", lambda: [(tmp_path / ".arena" / "stack", config)])
    res = runner.invoke(app, ["stack", "status"], env=env)
    assert "the running stack's config" in res.output and "a.yaml" in res.output, res.output
    assert res.exit_code == 1  # nothing of that stack runs here: each component "no"

    other = tmp_path / "elsewhere"
    two = [(tmp_path / ".arena" / "stack", config), (other / ".arena" / "stack", other / "b.yaml")]
    monkeypatch.setattr(stack_mod, "running_stacks", lambda: two)
    assert stack_mod.running_config(cwd=other) == other / "b.yaml"  # the one started from here
    with pytest.raises(stack_mod.StackError, match="several stacks are running.*a.yaml.*b.yaml"):
        stack_mod.running_config(cwd=Path("/"))


def test_no_runtime_dir_warning_in_a_fresh_shell() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    code = "from arena_ops.local.stack import Stack; import os; p = Stack._pg_bin(None, 'postgres'); print(p)"
    res = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "RuntimeDirWarning" not in res.stderr and Path(res.stdout.strip()).is_file()


def test_round_page_shows_steps_tasks_and_every_problem_with_its_reason(seeded, tmp_path: Path) -> None:
    """Round 1 of the seeded store: its DAG run's tasks (read for the logged-in user), a task that failed once before
    succeeding and one that failed outright listed as problems beside the canary's breach; without Airflow's answer
    the page links the run instead."""
    from fastapi.testclient import TestClient

    from arena_ops.airflow.auth import airflow_user
    from arena_ops.config import load_config
    from arena_ops.round import ModelRef, Round, Step
    from arena_ops.store import ArtifactStore
    from arena_ops.ui.app import create_app

    shutil.copytree(seeded.uri.removeprefix("file://"), tmp_path / "store")  # the session's store stays as it was
    store = ArtifactStore.from_uri(f"file://{tmp_path}/store")
    run = ("arena_flywheel_round", "manual__2026-01-02T00:00:00+00:00")
    Round(
        flywheel="ui",
        iteration=1,
        schedule="paper",
        config=load_config(Path(seeded.uri.removeprefix("file://")).parent / "arena.yaml").model_dump(mode="json"),
        start=ModelRef(uri="alpha.jsonl#0", label="alpha@base"),
        steps=[Step(name="sft", slice=1, stages=["sft"])],
        evaluation=["mix"],
        dag_run=dict(zip(("dag_id", "run_id"), run, strict=True)),
    ).save(store)
    asked = []

    def dag_runs(dag_id: str, run_id: str, user: str) -> dict | None:
        asked.append((dag_id, run_id, user))
        if user != "tester":
            return None  # Airflow's auth manager said no
        task = {"map_index": -1, "start": "2026-01-02T00:00:00+00:00", "end": None, "duration_s": 1.5}
        return {"state": "failed", "start": None, "end": None, "tasks": [
            {**task, "task_id": "resolve", "state": "success", "try_number": 1, "failed_tries": []},
            {**task, "task_id": "wait_sft", "state": "success", "try_number": 2, "failed_tries": [1]},
            {**task, "task_id": "report", "state": "failed", "try_number": 3, "failed_tries": [1, 2]},
        ]}  # fmt: skip

    app = create_app(lambda: store, airflow_user, dag_runs=dag_runs)
    user = {"name": "tester"}
    app.dependency_overrides[airflow_user] = lambda: user["name"]
    client = TestClient(app)
    data = client.get("/api/rounds/1", params={"flywheel": "ui"}).json()
    assert asked == [(*run, "tester")] and data["dag_run"] == dict(zip(("dag_id", "run_id"), run, strict=True))
    problems = {p["where"]: p["reason"] for p in data["problems"]}
    assert problems["task wait_sft"] == "try 1 failed; success on try 2"
    assert problems["task report"] == "failed (try 3)"
    assert "drift 0.300 > judge.gate.max_drift 0.2" in problems["judge canary"]
    assert "task resolve" not in problems
    page = client.get("/rounds/1", params={"flywheel": "ui"}).text
    assert page.count('<tr data-task="') == 3 and '<tr data-task="report" class="err">' in page
    assert "/tasks/wait_sft?try_number=1" in page and 'id="problems"' in page
    assert 'data-step="sft"' in page  # the round's step, from the store
    user["name"] = "stranger"
    page = client.get("/rounds/1", params={"flywheel": "ui"}).text
    assert 'data-task="' not in page and "The task instances are in the Airflow UI" in page
    assert client.get("/rounds/7", params={"flywheel": "ui"}).status_code == 404
