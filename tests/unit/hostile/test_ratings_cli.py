"""Second hostile pass, `arena elo` and the rating rules every path shares: one bootstrap round writes a board
whatever the seed; an --out that cannot be a directory, or would overwrite an input, is refused before the fit; a
repeated battle_id is one battle on the DAG's path too; placeholder, invisible and control-character model names are
quarantined; an anchor of 1e308 is refused; --anchor/--reference are normalised as battle names are; --no-plots leaves
no stale plot."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arena_ops.errors import RatingError
from arena_ops.rating.battles import validate_battles
from arena_ops.rating.bt import parse_anchor
from arena_ops.rating.leaderboard import compute_leaderboard

ARENA = [sys.executable, "-m", "arena_ops.cli"]


def sparse(path: Path) -> Path:
    rng = random.Random(0)
    rows = [{"model_a": a, "model_b": b, "winner": rng.choice(["model_a", "model_b", "tie"])}
            for a, b in [("x", "y"), ("y", "z"), ("x", "z")] * 10]  # fmt: skip
    rows.append({"model_a": "w", "model_b": "x", "winner": "model_a"})  # one battle: often in no resample
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def elo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ARENA, "elo", *args], capture_output=True, text=True, timeout=300)


def test_one_bootstrap_round_writes_a_board_for_every_seed(tmp_path: Path) -> None:
    battles = sparse(tmp_path / "b.parquet")
    table = pq.read_table(battles)
    for seed in range(8):
        lb = compute_leaderboard(table, rounds=1, seed=seed)
        assert all(r["rating"] is not None for r in lb.records()), seed
        lb.to_markdown()


def test_out_is_checked_before_the_fit(tmp_path: Path) -> None:
    battles = sparse(tmp_path / "b.parquet")
    (tmp_path / "afile").write_text("x")
    res = elo(str(battles), "--out", str(tmp_path / "afile" / "sub"))
    assert res.returncode != 0 and "exists and is not a directory" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    own = tmp_path / "out" / "leaderboard.parquet"
    own.parent.mkdir()
    pq.write_table(pq.read_table(battles), own)
    res = elo(str(own), "--out", str(own.parent))
    assert res.returncode != 0 and "would overwrite the input" in res.stdout + res.stderr
    assert pq.read_table(own).num_rows == 31  # untouched


def test_no_plots_leaves_no_stale_plot(tmp_path: Path) -> None:
    battles = sparse(tmp_path / "b.parquet")
    assert elo(str(battles), "--out", str(tmp_path / "o")).returncode == 0
    assert (tmp_path / "o" / "elo_ci.png").exists()
    assert elo(str(battles), "--out", str(tmp_path / "o"), "--no-plots").returncode == 0
    assert not (tmp_path / "o" / "elo_ci.png").exists()


def test_a_repeated_battle_id_is_one_battle_on_every_path() -> None:
    rows = [{"model_a": "a", "model_b": "b", "winner": "model_a", "battle_id": "same"}] * 3
    rows += [{"model_a": "a", "model_b": "b", "winner": "model_b", "battle_id": f"u{k}"} for k in range(2)]
    # The same battle content under another target label (a recorded target rated per iteration) is that label's.
    rows += [{"model_a": "a@2", "model_b": "b", "winner": "model_a", "battle_id": "same"}]
    b = validate_battles(pa.Table.from_pylist(rows), source="round battles")
    assert b.table.num_rows == 4 and b.quarantine.num_rows == 2
    assert "duplicate battle_id 'same'" in b.quarantine["reason"][0].as_py()


@pytest.mark.parametrize("name", ["\u200b", "None", "null", "N/A", "\x1b[2Jevil", "ok\x07"])
def test_placeholder_invisible_and_control_names_are_not_models(name: str) -> None:
    rows = [{"model_a": name, "model_b": "b", "winner": "model_a"}, {"model_a": "a", "model_b": "b", "winner": "tie"}]
    b = validate_battles(pa.Table.from_pylist(rows))
    assert b.table.num_rows == 1 and b.quarantine.num_rows == 1, b.quarantine.to_pylist()


def test_anchors_are_bounded_and_normalised() -> None:
    for bad in ("x=1e308", "x=nan", "x=inf", "x=-2e6"):
        with pytest.raises(RatingError, match="finite number within"):
            parse_anchor(bad)
    assert parse_anchor("Cafe\u0301 =1100") == ("Caf\u00e9", 1100.0)  # NFC, as the battle names are
    rows = [{"model_a": "Caf\u00e9", "model_b": "b", "winner": w} for w in ["model_a", "model_b"] * 10]
    lb = compute_leaderboard(pa.Table.from_pylist(rows), rounds=5, reference="Cafe\u0301")
    assert lb.params["reference"] == "Caf\u00e9"
