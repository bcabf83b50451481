"""Battle files: formats, validation with row numbers, quarantine."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arena_ops.rating import BATTLE_SCHEMA, BattleFormatError, read_battles, validate_battles

ROWS = [
    {"model_a": "x", "model_b": "y", "winner": "model_a", "prompt_id": "p1", "score_a": 8, "score_b": 3},
    {"model_a": "y", "model_b": "z", "winner": "tie", "prompt_id": "p2"},
    {"model_a": "x", "model_b": "x", "winner": "model_b", "prompt_id": "p3"},
    {"model_a": "x", "model_b": "z", "winner": "draw", "prompt_id": "p4"},
    {"model_a": "z", "model_b": "x", "winner": "tie_bothbad", "prompt_id": "p5"},
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_formats_and_quarantine(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"b.{fmt}"
    table = pa.Table.from_pylist(ROWS)
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    data = read_battles([path])
    assert data.table.schema == BATTLE_SCHEMA
    assert data.table["prompt_id"].to_pylist() == ["p1", "p2", "p5"]
    assert data.table["score_a"].to_pylist()[0] == 8.0
    q = data.quarantine.to_pylist()
    assert [(r["row"], r["source"]) for r in q] == [(3, str(path)), (4, str(path))]
    assert q[0]["reason"] == "a model battles itself"
    assert "unknown winner" in q[1]["reason"] and "'draw'" in q[1]["reason"]
    assert data.models == ["x", "y", "z"]


def test_missing_column_and_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(BattleFormatError, match=r"missing required column\(s\) \['winner'\]"):
        validate_battles(pa.table({"model_a": ["x"], "model_b": ["y"]}), source="f.csv")
    p = tmp_path / "b.txt"
    p.write_text("x")
    with pytest.raises(BattleFormatError, match=r"b\.txt: unknown battle file type"):
        read_battles([p])
    with pytest.raises(BattleFormatError, match="no such file"):
        read_battles([tmp_path / "absent.csv"])


def test_missing_model_name_is_quarantined() -> None:
    data = validate_battles(pa.table({"model_a": ["x", None], "model_b": ["y", "y"], "winner": ["tie", "tie"]}))
    assert data.table.num_rows == 1
    assert data.quarantine.to_pylist()[0]["reason"] == "missing model name"


def test_bad_optional_type_names_column() -> None:
    with pytest.raises(BattleFormatError, match="column 'score_a'"):
        validate_battles(pa.table({"model_a": ["x"], "model_b": ["y"], "winner": ["tie"], "score_a": ["high"]}))
