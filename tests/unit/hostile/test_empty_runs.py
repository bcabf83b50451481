"""Second hostile pass, runs that succeed with nothing valid: a battle run whose judge never gave a usable verdict,
a source that is entirely quarantined, a cleaning that keeps nothing and an empty slice each fail with the counts and
the likeliest cause — and commit nothing a rerun would take as done."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from arena_ops.battle.run import BattleRun, plan
from arena_ops.config import load_config
from arena_ops.data.pipeline import ensure_shards, read_shard
from arena_ops.errors import BattleError, DataError
from arena_ops.store import ArtifactStore
from tests.unit.battle.test_battle_run import ScriptedJudge, arena  # noqa: F401 - the fixture


def test_a_run_whose_judge_never_answers_usably_fails_and_commits_nothing(arena) -> None:  # noqa: F811
    judge = ScriptedJudge(lambda _user: "I cannot decide.")
    try:
        cfg = arena(judge.url)
        store = ArtifactStore.from_config(cfg.storage)
        ensure_shards(cfg, store)
        run = BattleRun(cfg, store, 0, "shard-000", plan(cfg, read_shard(cfg, store, 0)))
        with pytest.raises(BattleError, match=r"only 0 of \d+ battles are valid, below battle.min_valid_fraction 0.5"):
            asyncio.run(run.run_all())
    finally:
        judge.close()
    assert not store.is_committed(run.table_key)
    assert "no JSON verdict" in str(pytest.raises(BattleError, run.build).value)  # the likeliest cause is named
    lenient = BattleRun(cfg.model_copy(update={"battle": cfg.battle.model_copy(update={"min_valid_fraction": 0.0})}),
                        store, 0, "shard-000", run.plan)  # fmt: skip
    assert lenient.build()["battles"] == 0  # asked for: committed, as invalid battles


def write(root: Path, lines: str, **data: object) -> Path:
    (root / "src.jsonl").write_text(lines)
    extra = "".join(f", {k}: {v}" for k, v in data.items())
    (root / "arena.yaml").write_text(
        "flywheel: empty\nstorage: {root: file://store}\n"
        "models:\n  target: {name: a, source: {kind: recorded, path: src.jsonl}}\n"
        "  competitors: [{name: b, source: {kind: recorded, path: src.jsonl}}]\n"
        "  judge: {name: b, source: {kind: recorded, path: src.jsonl}}\n"
        f"data: {{sources: [src.jsonl], num_shards: 2{extra}}}\ntraining: {{schedule: compact}}\n"
    )
    return root / "arena.yaml"


def test_a_fully_quarantined_source_fails_naming_the_reasons(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "not json\n{broken\n"))
    store = ArtifactStore.from_config(cfg.storage)
    with pytest.raises(
        DataError, match=r"no instruction could be read: all 2 records were quarantined .*not valid JSON"
    ):
        ensure_shards(cfg, store)
    with pytest.raises(DataError, match="quarantine.parquet"):  # a rerun reads the sources again, and fails again
        ensure_shards(cfg, store)


def test_a_cleaning_that_keeps_nothing_fails(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '{"instruction": "hi"}\n', min_instruction_chars=50))
    with pytest.raises(DataError, match="cleaning removed all 1 instructions"):
        ensure_shards(cfg, ArtifactStore.from_config(cfg.storage))


def test_an_empty_slice_is_no_battle_run(arena) -> None:  # noqa: F811
    cfg = arena("http://127.0.0.1:9/v1")
    store = ArtifactStore.from_config(cfg.storage)
    ensure_shards(cfg, store)
    run = BattleRun(cfg, store, 0, "empty", plan(cfg, read_shard(cfg, store, 0).slice(0, 0)))
    with pytest.raises(BattleError, match="no battles to build .*is the slice empty"):
        asyncio.run(run.run_all())
