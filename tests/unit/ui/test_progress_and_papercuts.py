"""The progress chart's geometry, and the newcomer's papercuts of issue 34: the screenshot tool without Chromium,
`arena stack …` without --config, and no RuntimeDirWarning in a shell without XDG_RUNTIME_DIR. The chart and the
round page on a real run are checked in Chromium by tests/integration/test_rounds.py (three paper iterations) and on
the live stack by tests/integration/test_stack.py."""

from __future__ import annotations

import os
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
