"""The flywheel learns: battles → pair-judge SFT data → TRL SFT under DeepSpeed → registry → the served target is
updated → the next round's battles score the target higher.

A synthetic task with checkable answers (small additions), the tiny target model served by vLLM on Ray Serve (the
session deployment's ``tiny-a``), a competitor that is recorded correct answers, and a regex verifier as the judge.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from arena_ops.battle.run import BattleRun, plan
from arena_ops.config import ArenaConfig, load_config
from arena_ops.data.pipeline import ensure_shards, read_shard
from arena_ops.store import ArtifactStore
from arena_ops.training.build import build_training_data
from arena_ops.training.run import registry, round_target, train_stage
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
    engine = "{device: cpu, dtype: float32, max_model_len: 2048, kv_cache_gib: 0.25}"
    cfg = root / "arena.yaml"
    cfg.write_text(
        textwrap.dedent(f"""\
        flywheel: learn
        storage: {{root: file://store}}
        models:
          target:
            name: tiny-a
            source: {{kind: served, path: {serving.root}/models/a, engine: {engine}}}
            sampling: {{temperature: 0.0, max_tokens: 6}}
          competitors:
            - {{name: oracle, source: {{kind: recorded, path: oracle.jsonl}}}}
          judge: {{name: oracle, source: {{kind: recorded, path: oracle.jsonl}}}}
        data:
          sources: [tasks.jsonl]
          num_shards: 1
          min_instruction_chars: 0
          prefix_dedup_chars: 0
          minhash_threshold: null
          languages: null
        judge: {{kind: verifier, verifier: regex}}
        training:
          stages: [sft]
          sft: {{learning_rate: 3.0e-3, epochs: 1000, max_steps: 160, per_device_batch_size: 4, max_length: 256,
                lr_scheduler_type: constant}}
          deepspeed: {{zero_stage: 2}}
        serving: {{port: {serving.port}}}
        """)
    )
    return cfg


def battle_round(cfg: ArenaConfig, store: ArtifactStore, iteration: int) -> dict:
    ensure_shards(cfg, store)
    run = BattleRun(cfg, store, iteration, "shard-000", plan(cfg, read_shard(cfg, store, 0)))
    return asyncio.run(run.run_all())


def score(summary: dict, model: str) -> float:
    c = summary["per_model"][model]
    return (c["wins"] + 0.5 * c["ties"]) / max(c["wins"] + c["losses"] + c["ties"], 1)


def test_one_round_of_training_raises_the_targets_score(serving: Serving, tmp_path: Path) -> None:
    path = write_task(tmp_path, serving)
    cfg = load_config(path)
    store = ArtifactStore.from_config(cfg.storage)

    before = battle_round(cfg, store, iteration=0)
    assert before["battles"] == len(PROBLEMS) and before["invalid"] == 0
    data = build_training_data(cfg, store, iteration=0)
    losses = before["per_model"]["tiny-a"]["losses"]
    assert data["sft"]["rows"] == losses > 0  # every loss is by 10 vs 1 ≥ K_sft = 3
    entry = train_stage(cfg, store, 0, "sft")
    m = entry["metrics"]
    assert m["steps"] == 160 and m["last_loss"] < m["first_loss"] / 3

    # The registry hands the new checkpoint to the next round; serving swaps only the target's weights.
    assert [e["stage"] for e in registry(cfg, store)] == ["sft"]
    new_target = round_target(cfg, store, iteration=1)
    assert new_target == entry["model_uri"]
    res = serving.arena("serve", "update-target", new_target)
    assert res.returncode == 0, res.stderr[-3000:]

    cfg1 = load_config(path, {"models.target.source.path": new_target})
    after = battle_round(cfg1, ArtifactStore.from_config(cfg1.storage), iteration=1)
    assert after["battles"] == len(PROBLEMS)
    assert score(after, "tiny-a") >= score(before, "tiny-a") + 0.25, (before["per_model"], after["per_model"])
    assert after["per_model"]["tiny-a"]["losses"] <= losses // 2
