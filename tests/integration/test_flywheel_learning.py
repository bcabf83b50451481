"""The flywheel learns: a round's battles → pair-judge SFT data → TRL SFT under DeepSpeed → registry → the next round
starts from that model (only the target is redeployed) → its battles score the target higher.

A synthetic task with checkable answers (small additions), the tiny target model served by vLLM on Ray Serve (the
session deployment's ``tiny-a``), a competitor that is recorded correct answers, and a regex verifier as the judge.
Both rounds go through ``arena_ops.flywheel.run_round``, the functions the DAG calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from arena_ops import layout
from arena_ops.config import load_config
from arena_ops.flywheel import run_round
from arena_ops.round import Round
from arena_ops.store import ArtifactStore
from arena_ops.training.run import registry
from tests.integration.conftest import Serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBLEMS = [(a, b) for a in range(1, 9) for b in range(1, 3)]


def write_task(root: Path, serving: Serving) -> Path:
    (root / "tasks.jsonl").write_text(
        "".join(
            json.dumps({"id": f"add-{a}-{b}", "instruction": f"What is {a} plus {b}?", "output": rf"^\s*{a + b}(?!\d)"})
            + "\n"
            for a, b in PROBLEMS
        )
    )
    (root / "oracle.jsonl").write_text(
        "".join(json.dumps({"prompt_id": f"add-{a}-{b}", "response": str(a + b)}) + "\n" for a, b in PROBLEMS)
    )
    # Target and judge exactly as the session deployment serves them (tiny-a, tiny-b): nothing else is redeployed.
    cfg = yaml.safe_load(serving.config.read_text())
    for spec in (cfg["models"]["target"], cfg["models"]["judge"]):
        spec["source"]["path"] = str((serving.config.parent / spec["source"]["path"]).resolve())
    cfg["models"]["target"]["sampling"] = {"temperature": 0.0, "max_tokens": 6}
    cfg["models"]["competitors"] = [{"name": "oracle", "source": {"kind": "recorded", "path": "oracle.jsonl"}}]
    cfg.update(
        flywheel="learn",
        storage={"root": "file://store"},
        data={
            "sources": ["tasks.jsonl"],
            "num_shards": 1,
            "min_instruction_chars": 0,
            "prefix_dedup_chars": 0,
            "minhash_threshold": None,
            "languages": None,
        },
        judge={"kind": "verifier", "verifier": "regex"},
        training={
            "schedule": "compact",
            "stages": ["sft"],
            "sft": {
                "learning_rate": 3.0e-3,
                "epochs": 1000,
                "max_steps": 160,
                "per_device_batch_size": 4,
                "max_length": 256,
                "lr_scheduler_type": "constant",
            },
            "deepspeed": {"zero_stage": 2},
        },
    )
    path = root / "arena.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def score(summary: dict, model: str) -> float:
    c = summary["per_model"][model]
    return (c["wins"] + 0.5 * c["ties"]) / max(c["wins"] + c["losses"] + c["ties"], 1)


def test_one_round_of_training_raises_the_targets_score(
    serving: Serving, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import arena_ops.serving.deploy as deploy

    monkeypatch.setattr(deploy, "STATE_DIR", Path(serving.env["ARENA_RAY_STATE"]))
    monkeypatch.setattr(deploy, "LOCAL_HEAD_PORT", int(serving.env["ARENA_RAY_PORT"]))
    path = write_task(tmp_path, serving)
    cfg = load_config(path)
    store = ArtifactStore.from_config(cfg.storage)

    first = run_round(str(path), iteration=0)
    before = store.manifest(layout.battles("learn", 0, "all-shard-000")).meta
    assert before["battles"] == len(PROBLEMS) and before["invalid"] == 0
    losses = before["per_model"]["tiny-a"]["losses"]
    assert store.manifest(layout.train_data("learn", 0, "sft")).rows == losses > 0  # every loss: 10 vs 1 ≥ K_sft = 3
    m = store.manifest(layout.model("learn", 0, "sft")).meta["metrics"]
    assert m["steps"] == 160 and m["last_loss"] < m["first_loss"] / 3
    assert [e["stage"] for e in registry(cfg, store)] == ["sft"] and first["iteration"] == 0

    # The next round starts from the registered checkpoint (no Mix board: the last policy) and only battles.
    run_round(str(path), iteration=1, policies=[])
    rnd = Round.load(store, "learn", 1)
    assert rnd.start.uri == store.key_uri(layout.model("learn", 0, "sft")) and rnd.start.label == "tiny-a@i0-sft"
    after = store.manifest(layout.battles("learn", 1, "all-shard-000")).meta
    assert after["battles"] == len(PROBLEMS) and after["battled_model"] == rnd.start.uri
    assert score(after, "tiny-a") >= score(before, "tiny-a") + 0.25, (before["per_model"], after["per_model"])
    assert after["per_model"]["tiny-a"]["losses"] <= losses // 2
