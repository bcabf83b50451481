"""The round resolution rules (iteration from param / logical date / store; shard; target from the registry) and
the Elo step over stored battles, without Airflow."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from arena_ops.config import load_config
from arena_ops.errors import ConfigError
from arena_ops.flywheel import elo_update, iteration_for, render_report, resolve_round
from arena_ops.store import ArtifactStore


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt_id": "q", "response": "x"}) + "\n")
    path = tmp_path / "arena.yaml"
    path.write_text(
        textwrap.dedent("""\
        flywheel: fw
        storage: {root: file://store}
        models:
          target: {name: tgt, source: {kind: served, path: ./base}}
          competitors:
            - {name: c1, source: {kind: recorded, path: a.jsonl}}
            - {name: c2, source: {kind: recorded, path: a.jsonl}}
          judge: {name: c1, source: {kind: recorded, path: a.jsonl}}
        data: {num_shards: 3}
        airflow: {start_date: "2026-01-01"}
        """)
    )
    return path


def test_iteration_from_param_then_logical_date_then_store(config: Path) -> None:
    cfg = load_config(config)
    store = ArtifactStore.from_config(cfg.storage)
    assert iteration_for(cfg, store, 7, datetime(2026, 3, 1, tzinfo=UTC)) == 7
    assert iteration_for(cfg, store, None, datetime(2026, 1, 11, 2, tzinfo=UTC)) == 10
    assert iteration_for(cfg, store, None, None) == 0  # a new flywheel
    with store.artifact("fw", 4, "battles", "shard-001") as w:
        w.write_json("summary.json", {})
    assert iteration_for(cfg, store, None, None) == 5  # one past the last round with battles
    with pytest.raises(ConfigError, match="before airflow.start_date"):
        iteration_for(cfg, store, None, datetime(2025, 12, 1, tzinfo=UTC))


def test_resolve_round_picks_shard_target_and_overrides(config: Path) -> None:
    rnd = resolve_round(str(config), iteration=4, competitors=["c2"], sample_limit=5, stages=["rl", "sft"])
    assert rnd["iteration"] == 4 and rnd["shard"] == 1  # 4 mod 3
    assert rnd["target"].endswith("/base") and rnd["stages"] == ["sft", "rm", "rl"]
    cfg = load_config(rnd["config_path"], rnd["overrides"])
    assert [c.name for c in cfg.models.competitors] == ["c2"] and cfg.battle.sample_limit == 5
    store = ArtifactStore.from_config(cfg.storage)
    with store.artifact("fw", 2, "model", "sft", meta={"iteration": 2, "stage": "sft"}) as w:
        w.write_json("registry.json", {})
    assert resolve_round(str(config), iteration=3)["target"] == store.key_uri("fw/iter=2/model/sft")
    assert resolve_round(str(config), iteration=2)["target"].endswith("/base")  # only earlier rounds count
    with pytest.raises(ConfigError, match="not in models.competitors"):
        resolve_round(str(config), iteration=1, competitors=["nope"])


def test_elo_over_stored_battles_versions_the_target(config: Path) -> None:
    cfg = load_config(config)
    store = ArtifactStore.from_config(cfg.storage)
    for it, wins in ((0, 2), (1, 8)):
        rows = [
            {"model_a": "tgt", "model_b": "c1", "winner": "model_a" if i < wins else "model_b", "iteration": it}
            for i in range(10)
        ]
        with store.artifact("fw", it, "battles", "shard-000") as w:
            w.write_table("data.parquet", pa.Table.from_pylist(rows))
    out = elo_update(str(config))
    assert out["battles"] == 20 and out["models"] == 3
    board = {r["model"]: r["rating"] for r in json.loads(store.get_bytes("fw/leaderboard/leaderboard.json"))}
    assert board["tgt@1"] > board["c1"] > board["tgt@0"]
    history = store.read_json("fw/leaderboard/history.json")
    assert [h["iteration"] for h in history] == [1] and "tgt@1" in history[0]["ratings"]


def test_report_markdown_lists_models_and_stages() -> None:
    md = render_report(
        {
            "flywheel": "fw",
            "iteration": 3,
            "shard": 0,
            "target": "t",
            "battles": {
                "battles": 4,
                "invalid": 1,
                "tokens_generated": 9,
                "judge_tokens": 20,
                "per_model": {"t": {"wins": 1, "losses": 2, "ties": 1}},
            },
            "wall_s": {"generate": 1.5},
            "training": [{"stage": "sft", "metrics": {"steps": 2}}, {"stage": "dpo", "skipped": "no training rows"}],
        }
    )
    assert "| t | 1 | 2 | 1 |" in md and "- sft: 2 steps" in md and "- dpo: no training rows" in md
