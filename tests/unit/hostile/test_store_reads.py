"""Second hostile pass, store reads: JSON records and every UI read are checked against the manifest (a file changed
behind it is an IntegrityError, not a wrong answer); a board is one artifact (a reader never pairs a new board with
old win rates); a manifest nested 100k deep is a corrupt manifest, not a RecursionError."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from arena_ops import layout
from arena_ops.errors import IntegrityError
from arena_ops.round import Round, resolve
from arena_ops.store import MANIFEST, ArtifactStore
from arena_ops.ui.data import ArenaReader as Reader
from arena_ops.ui.data import BattleFilter
from tests.unit.ui.conftest import seed


def test_a_deeply_nested_manifest_is_not_a_commit(tmp_path: Path) -> None:
    store = ArtifactStore.from_uri(f"file://{tmp_path}/s")
    with store.artifact_at("fw/iter=0/x/a") as w:
        w.write_json("r.json", {"ok": 1})
    store.put_bytes(f"fw/iter=0/x/a/{MANIFEST}", b"[" * 100_000 + b"]" * 100_000)
    assert not store.is_committed("fw/iter=0/x/a")


def test_a_round_record_changed_behind_its_manifest_is_refused(tmp_path: Path) -> None:
    cfg_path = tmp_path / "arena.yaml"
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt_id": "q", "response": "x"}) + "\n")
    cfg_path.write_text(
        "flywheel: fw\nstorage: {root: file://store}\n"
        "models:\n  target: {name: tgt, source: {kind: served, path: ./b}}\n"
        "  competitors: [{name: c1, source: {kind: recorded, path: a.jsonl}}]\n"
        "  judge: {name: c1, source: {kind: recorded, path: a.jsonl}}\ndata: {num_shards: 3}\n"
    )
    rnd = resolve(str(cfg_path), iteration=0)
    store = rnd.store()
    key = f"{layout.round_record('fw', 0)}/round.json"
    body = store.read_json(key)
    body["start"]["uri"] = "s3://attacker/weights"
    store.write_json(key, body)
    with pytest.raises(IntegrityError, match="does not match manifest"):
        Round.load(store, "fw", 0)


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[ArtifactStore, Reader]:
    from arena_ops.config import load_config

    config = seed(tmp_path)
    store = ArtifactStore.from_config(load_config(config).storage)
    return store, Reader(store)


def test_boards_are_artifacts_and_ui_reads_are_checked(seeded) -> None:
    store, reader = seeded
    assert store.is_committed("ui/leaderboard") and store.is_committed("ui/leaderboard/eval-mix")
    assert reader.win_rates("ui")["models"]
    # Win rates of another fit dropped beside the board: the reader refuses them instead of pairing them.
    other = store.read_table("ui/leaderboard/win_rates.parquet").slice(0, 1)
    store.write_table("ui/leaderboard/win_rates.parquet", other)
    with pytest.raises(IntegrityError):
        reader.win_rates("ui")


def test_a_battle_table_changed_behind_its_manifest_is_refused_by_the_browser(seeded) -> None:
    store, reader = seeded
    assert reader.battles("ui", BattleFilter())["total"] > 0
    key = layout.battles("ui", 0, "sft-shard-000")
    table = store.read_artifact_table(key)
    flipped = table.set_column(table.schema.get_field_index("winner"), "winner", pa.array(["model_a"] * table.num_rows))
    store.write_table(f"{key}/data.parquet", flipped)
    with pytest.raises(IntegrityError):
        Reader(store).battles("ui", BattleFilter())
