"""Bad input never corrupts a rating: newcomers cannot move established models, groups that never met are refused,
duplicates are not counted twice, names are normalised, numbers validated, outputs strict JSON, errors name the row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arena_ops.errors import RatingError
from arena_ops.rating import bt
from arena_ops.rating.battles import BattleFormatError, read_battles
from arena_ops.rating.consistency import read_board
from arena_ops.rating.leaderboard import compute_leaderboard, leaderboard_files
from tests.unit.rating.test_bt import synthetic_battles

ARENA = str(Path(sys.executable).parent / "arena")
ESTABLISHED = {"A": 1100.0, "B": 1000.0, "C": 900.0}


def board(table: pa.Table, rounds: int = 100) -> dict[str, dict]:
    return {r["model"]: r for r in compute_leaderboard(table, rounds=rounds, seed=0).records()}


@pytest.fixture(scope="module")
def base() -> tuple[pa.Table, dict[str, dict]]:
    table = synthetic_battles(ESTABLISHED, 3_000, seed=3)
    return table, board(table)


@pytest.mark.parametrize(
    ("opponent", "winner"),
    [("A", "model_a"), ("A", "model_b"), ("B", "tie"), ("C", "model_a"), ("C", "model_b")],
)
def test_one_battle_of_a_newcomer_cannot_move_established_models(base, opponent: str, winner: str) -> None:
    """Property: one battle between a new model and an established one moves no established rating by more than 2 Elo
    and no interval bound by more than 6 (a different bootstrap redraw; before: ~500 Elo, CIs ~17 → ~550 wide)."""
    table, before = base
    one = pa.table({"model_a": ["D"], "model_b": [opponent], "winner": [winner]})
    after = board(pa.concat_tables([table, one.cast(table.schema)]))
    for m in ESTABLISHED:
        assert abs(after[m]["rating"] - before[m]["rating"]) < 2.0, (m, before[m], after[m])
        for key in ("ci_low", "ci_high"):
            assert abs(after[m][key] - before[m][key]) < 6.0, (m, key, before[m], after[m])
        assert not after[m]["provisional"]
    d = after["D"]
    assert d["provisional"] and d["battles"] == 1  # flagged: one battle says little, and the board says so
    assert d["ci_low"] <= d["rating"] <= d["ci_high"]
    assert abs(d["rating"] - after[opponent]["rating"]) < 400  # held by the prior, not flung to ±1500


def test_absent_from_a_bootstrap_sample_is_nan_not_the_mean(base) -> None:
    table, _ = base
    one = pa.table({"model_a": ["D"], "model_b": ["A"], "winner": ["model_a"]}).cast(table.schema)
    lb = compute_leaderboard(pa.concat_tables([table, one]), rounds=200, seed=0)
    d = lb.models.index("D")
    absent = np.isnan(lb.samples[:, d])
    assert 0.2 < absent.mean() < 0.5  # a one-battle model misses ~e^-1 of the redraws
    assert not np.isclose(lb.samples[~absent, d], bt.INIT).any()  # never stands in as the mean
    assert lb.records()[0]["bootstrap_mean"] is not None


def test_groups_that_never_met_are_refused_by_name() -> None:
    table = pa.table(
        {"model_a": ["A", "B", "C", "D"] * 10, "model_b": ["B", "A", "D", "C"] * 10, "winner": ["model_a"] * 40}
    )
    with pytest.raises(RatingError, match=r"2 separate groups.*\{A, B\}; \{C, D\}.*Rate each group"):
        compute_leaderboard(table, rounds=20)


def test_duplicate_battle_ids_and_repeated_files_are_counted_once(tmp_path: Path) -> None:
    rows = [{"battle_id": f"b{k}", "model_a": "A", "model_b": "B", "winner": "model_a"} for k in range(30)]
    rows += [{"battle_id": f"c{k}", "model_a": "B", "model_b": "A", "winner": "tie"} for k in range(30)]
    path = tmp_path / "battles.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = tmp_path / "copy.jsonl"
    again.write_text(path.read_text())  # the same battles under another name: duplicate ids
    data = read_battles([path, path, again])
    assert data.table.num_rows == 60 and data.duplicate_inputs == 1
    assert data.quarantine.num_rows == 60
    assert set(data.quarantine["reason"].to_pylist()) >= {"duplicate battle_id 'b0' (first in " + str(path) + ")"}
    assert data.quarantine["row"].to_pylist()[:3] == [1, 2, 3]  # line numbers, counted from 1


def test_duplicate_ids_within_and_across_files_name_where_each_was_first(tmp_path: Path) -> None:
    """Three files, ids repeated within a file, across files (the first sighting named), and missing ids (never
    duplicates); the kept rows are each id's first occurrence, in order."""
    files = {
        "one.jsonl": ["x", "y", None, "x", "z"],
        "two.jsonl": ["w", None, "w", "v"],
        "three.jsonl": ["v", "y", "u", "w", "u"],
    }
    paths = []
    for name, ids in files.items():
        path = tmp_path / name
        rows = [{"battle_id": i, "model_a": "A", "model_b": "B", "winner": "tie"} for i in ids]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(path)
    data = read_battles(paths)
    assert data.table["battle_id"].to_pylist() == ["x", "y", None, "z", "w", None, "v", "u"]
    got = {(Path(q["source"]).name, q["row"], q["reason"]) for q in data.quarantine.to_pylist()}
    one, two = str(paths[0]), str(paths[1])
    assert got == {
        ("one.jsonl", 4, f"duplicate battle_id 'x' (first in {one})"),
        ("two.jsonl", 3, f"duplicate battle_id 'w' (first in {two})"),
        ("three.jsonl", 1, f"duplicate battle_id 'v' (first in {two})"),
        ("three.jsonl", 2, f"duplicate battle_id 'y' (first in {one})"),
        ("three.jsonl", 4, f"duplicate battle_id 'w' (first in {two})"),
        ("three.jsonl", 5, f"duplicate battle_id 'u' (first in {paths[2]})"),
    }


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty or 'nan' model name"),
        ("   ", "empty or 'nan' model name"),
        ("NaN", "empty or 'nan' model name"),
        (None, "missing model name"),
    ],
)
def test_empty_blank_and_nan_names_are_quarantined(tmp_path: Path, name: str | None, reason: str) -> None:
    path = tmp_path / "b.jsonl"
    lines = [{"model_a": "A", "model_b": "B", "winner": "model_a"}, {"model_a": name, "model_b": "B", "winner": "tie"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    data = read_battles([path])
    assert data.table.num_rows == 1 and data.quarantine.to_pylist() == [
        {"source": str(path), "row": 2, "reason": reason}
    ]


def test_names_are_normalised(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("model_a,model_b,winner\nA ,B,model_a\n A,B,tie\nCafe\u0301,B,model_b\nCaf\u00e9,A,tie\n")
    data = read_battles([path])
    assert data.models == ["A", "B", "Caf\u00e9"]


def test_a_broken_jsonl_line_is_one_quarantined_row(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    good = json.dumps({"model_a": "A", "model_b": "B", "winner": "model_a"})
    path.write_bytes(
        "\n".join(
            [
                good,
                "{not json",
                good,
                '["a list"]',
                json.dumps({"model_a": "A", "model_b": 3, "winner": "tie"}),
                json.dumps({"model_a": "A", "model_b": "B", "winner": "tie", "iteration": "two"}),
                good,
            ]
        ).encode()
        + b"\n\xff\xfe garbage\n"
    )
    data = read_battles([path])
    assert data.table.num_rows == 3
    q = {r["row"]: r["reason"] for r in data.quarantine.to_pylist()}
    assert sorted(q) == [2, 4, 5, 6, 8]  # line numbers as an editor shows them
    assert q[2].startswith("not JSON") and "not a JSON object" in q[4]
    assert q[5] == "field 'model_b': expected a string, got int"
    assert q[6] == "field 'iteration': expected an integer, got str" and q[8].startswith("not UTF-8")


def test_unreadable_inputs_name_the_file(tmp_path: Path) -> None:
    table = pa.table({"model_a": ["A"] * 100, "model_b": ["B"] * 100, "winner": ["model_a"] * 100})
    pq.write_table(table, tmp_path / "ok.parquet")
    blob = (tmp_path / "ok.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(blob[:40] + blob[-200:])  # the footer intact, the data cut
    for path, match in [
        (tmp_path / "cut.parquet", "cut.parquet: cannot parse as parquet"),
        (tmp_path, "is a directory"),
        (tmp_path / "missing.jsonl", "missing.jsonl: no such file"),
    ]:
        with pytest.raises(BattleFormatError, match=match):
            read_battles([path])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "abc", ""])
def test_anchor_values_must_be_finite_numbers(value: str) -> None:
    with pytest.raises(RatingError, match="finite number"):
        bt.parse_anchor(f"A={value}")


def test_few_bootstrap_rounds_are_marked_unreliable_and_outputs_are_strict_json() -> None:
    table = synthetic_battles(ESTABLISHED, 300, seed=1)
    lb = compute_leaderboard(table, rounds=5, seed=0)
    assert lb.params["ci_reliable"] is False and "unreliable" in lb.to_markdown()
    assert compute_leaderboard(table, rounds=20, seed=0).params["ci_reliable"] is True
    for name, blob in leaderboard_files(lb, plots=False).items():
        if name.endswith(".json"):
            json.loads(blob, parse_constant=_refuse)


def _refuse(constant: str) -> None:
    pytest.fail(f"a bare {constant} in a JSON output")


def _arena(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ARENA, *args], capture_output=True, text=True, timeout=120, env=os.environ.copy())


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"model_a": "A", "model_b": "B", "winner": "tie"}] * 30))
    (tmp_path / "file").write_text("")
    (tmp_path / "board.json").write_text("not json")
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "typed.json").write_text(json.dumps([{"model": "A", "rating": "high", "ci_low": 1, "ci_high": 2}]))
    cases = [
        (["elo", str(path), "--anchor", "A=nan", "--out", str(tmp_path / "o1")], "finite number"),
        (["elo", str(path), "--anchor", "A=abc", "--out", str(tmp_path / "o2")], "finite number"),
        (["elo", str(path), "--out", str(tmp_path / "file")], "exists and is not a directory"),
        (["elo", str(tmp_path), "--out", str(tmp_path / "o3")], "is a directory"),
        (["consistency", str(tmp_path / "board.json"), str(tmp_path / "board.json")], "cannot read a leaderboard"),
        (["consistency", str(tmp_path / "empty.json"), str(tmp_path / "empty.json")], "no rows"),
        (["consistency", str(tmp_path / "nope.json"), str(tmp_path / "nope.json")], "no such file"),
        (["consistency", str(tmp_path / "typed.json"), str(tmp_path / "typed.json")], "must be a finite number"),
    ]
    for args, message in cases:
        res = _arena(*args)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)


def test_consistency_prints_strict_json_when_a_metric_is_undefined(tmp_path: Path) -> None:
    flat = [{"model": m, "rating": 1000, "ci_low": 990, "ci_high": 1010} for m in "ABC"]  # all tied: no correlation
    (tmp_path / "a.json").write_text(json.dumps(flat))
    res = _arena("consistency", str(tmp_path / "a.json"), str(tmp_path / "a.json"))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert report["spearman"] is None and report["models"] == 3


def test_read_board_rejects_duplicate_and_empty_names(tmp_path: Path) -> None:
    rows = [{"model": "A", "rating": 1, "ci_low": 0, "ci_high": 2}] * 2
    (tmp_path / "dup.json").write_text(json.dumps(rows))
    with pytest.raises(RatingError, match="listed twice"):
        read_board(str(tmp_path / "dup.json"))
    (tmp_path / "blank.json").write_text(json.dumps([{"model": " ", "rating": 1, "ci_low": 0, "ci_high": 2}]))
    with pytest.raises(RatingError, match="non-empty string"):
        read_board(str(tmp_path / "blank.json"))
