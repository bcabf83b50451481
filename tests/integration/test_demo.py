"""A short `make demo` on the stack: configs/demo.yaml on free ports with one tiny competitor fewer, one iteration of
SFT on 24 prompts of the first slice, through the demo's own command (`python -m arena_ops.local.demo`): stack up, the
test-set DAG, a REST backfill of iteration 0, the Elo DAG, the summary. A training stage must have run on non-empty
data, and the target's Elo on the Mix board must have moved up from the base model's. The full demo's figures
(two iterations, non-overlapping intervals) are measured by running `make demo` (README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arena_ops import layout
from arena_ops.config import load_config
from arena_ops.local.demo_model import prepare_gemma
from arena_ops.local.stack import Stack
from arena_ops.store import ArtifactStore
from tests.conftest import free_block

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# The demo model is converted once per machine, outside any clone (about a minute; never committed).
GEMMA = Path.home() / ".cache" / "arena-flywheel" / "models" / "gemma-3-270m"


def demo_config(root: Path) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    here = REPO / "configs"
    s3, ray, dashboard, pg, af, serve = (
        free_block(5, also=(10000,)), free_block(2), free_block(1), free_block(1), free_block(3), free_block(1)
    )  # fmt: skip
    cfg["storage"] = {
        "root": "s3://arena-test/demo",
        "s3": {"endpoint_url": f"http://127.0.0.1:{s3}", "conn_id": "arena_s3"},
    }
    target = cfg["models"]["target"]
    target["source"]["path"] = str(GEMMA)
    cfg["models"]["competitors"] = [c for c in cfg["models"]["competitors"] if c["name"] != "tiny-llama"]
    cfg["cost"]["prices"].pop("tiny-llama")  # a price names a model of the config
    for spec in [*cfg["models"]["competitors"], cfg["models"]["judge"]]:
        path = Path(spec["source"]["path"])
        spec["source"]["path"] = str(path if spec["source"]["kind"] == "served" and path.is_absolute() else
                                     (here / path).resolve())  # fmt: skip
    cfg["data"]["sources"] = [str((here / s).resolve()) for s in cfg["data"]["sources"]]
    cfg["judge"]["canary"]["path"] = str((here / cfg["judge"]["canary"]["path"]).resolve())
    cfg["training"]["launcher"]["ray_address"] = f"http://127.0.0.1:{dashboard}"
    cfg["serving"].update(ray_address=f"127.0.0.1:{ray}", port=serve)
    cfg["airflow"]["retries"] = 2
    cfg["stack"] = {"dir": str(root / "stack"), "postgres_port": pg, "airflow_port": af, "head_cpus": 8,
                    "worker_cpus": 4}  # fmt: skip
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_short_demo_trains_and_moves_the_targets_elo(tmp_path: Path) -> None:
    prepare_gemma(GEMMA)
    config = demo_config(tmp_path)
    stack = Stack(load_config(config), config)
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "arena_ops.local.demo", "--config", str(config), "--iterations", "1",
           "--stages", "sft", "--sample-limit", "24", "--out", str(out)]  # fmt: skip
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=2400, cwd=REPO, env=dict(os.environ))
        print(res.stdout[-6000:])
        assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"

        summary = json.loads((out / "summary.json").read_text())
        assert summary["iterations"] == 1 and summary["stages"] == ["sft"] and summary["judge"] == "verifier:exact"
        labels = [e["model"] for e in summary["target_by_stage"]]
        assert labels == ["gemma-3-270m@base", "gemma-3-270m@i0-sft"]
        base, sft = summary["target_by_stage"]
        assert sft["rating"] > base["rating"], summary["board"]  # the trained target climbed the Mix board
        # The promotion decision of iteration 0 (with its probability) chose where iteration 1 starts.
        (decision,) = summary["promotion"]
        assert summary["final"]["model"] == decision["chosen"]["label"] and summary["start"]["model"] == base["model"]
        assert decision["challengers"][0]["label"] == sft["model"] and 0 <= decision["challengers"][0]["p_better"] <= 1
        assert (
            "Promotion after iteration 0:" in res.stdout and "P(gemma-3-270m@i0-sft > gemma-3-270m@base)" in res.stdout
        )
        # The judge's canary (verifier-labelled pairs) ran before the training data and passed its gate.
        (canary,) = summary["canary"]
        assert canary["agreement"] == 1.0 and canary["position_flips"] == 0.0
        assert "Judge canary, iteration 0 (20 labelled pairs" in res.stdout and "gate passed" in res.stdout
        # The round's cost ledger: the served models' tokens as vLLM reported them, the SFT job's seconds, money.
        (cost,) = summary["cost"]
        assert cost["cost"] > 0 and cost["cost_per_1k_judgments"] > 0 and cost["battles_per_hour"] > 0
        assert "Cost ledger, iteration 0:" in res.stdout and "USD per 1k judgments" in res.stdout
        assert "gemma-3-270m (answers):" in res.stdout and "train-sft:" in res.stdout
        assert set(summary["phases"]) >= {"stack", "serving", "generation", "judging", "training", "elo", "total"}
        assert "Result: the target" in res.stdout and "Airflow UI: http://127.0.0.1:" in res.stdout
        assert (out / "elo_ci.png").stat().st_size > 0 and (out / "round-0-report.md").is_file()

        os.environ.update(stack.client_env())
        store = ArtifactStore.from_config(stack.cfg.storage)
        rows = store.manifest(layout.train_data("demo", 0, "sft")).rows
        metrics = store.manifest(layout.model("demo", 0, "sft")).meta["metrics"]
        assert rows and rows > 0 and metrics["steps"] > 0, (rows, metrics)  # trained on non-empty data
        assert metrics["last_loss"] < metrics["first_loss"]
    finally:
        down = subprocess.run([sys.executable, "-m", "arena_ops.cli", "--config", str(config), "stack", "down"],
                              capture_output=True, text=True, timeout=300, env=dict(os.environ))  # fmt: skip
        assert down.returncode == 0, down.stdout + down.stderr
        assert stack.marked() == []
