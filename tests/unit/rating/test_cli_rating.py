"""`arena elo` and `arena consistency` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ARENA = str(Path(sys.executable).parent / "arena")


def test_elo_on_shared_votes_writes_every_output(shared_dir: Path, tmp_path: Path) -> None:
    src = shared_dir / "validation" / "battles" / "vicuna80_human_votes.csv"
    res = subprocess.run(
        [ARENA, "elo", str(src), "--out", str(tmp_path), "--bootstrap", "50", "--anchor", "gpt35=1100"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    assert {"model", "rating", "ci_low", "ci_high", "rank", "wins", "losses", "ties", "battles"} <= set(board[0])
    assert next(r for r in board if r["model"] == "gpt35")["rating"] == 1100.0
    assert [r["rating"] for r in board] == sorted((r["rating"] for r in board), reverse=True)
    assert pq.read_table(tmp_path / "leaderboard.parquet").num_rows == 9
    assert pq.read_table(tmp_path / "bootstrap.parquet").num_rows == 50
    assert (tmp_path / "leaderboard.md").read_text().startswith("| rank | model | Elo | 95% CI |")
    for png in ("elo_ci.png", "win_rate_heatmap.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gpt4" in res.stdout


def test_elo_quarantines_bad_rows(tmp_path: Path) -> None:
    src = tmp_path / "b.csv"
    src.write_text("model_a,model_b,winner\nx,y,model_a\nx,y,model_b\ny,y,tie\nx,y,maybe\n")
    res = subprocess.run(
        [ARENA, "elo", str(src), "--out", str(tmp_path / "o"), "--no-plots"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "2 invalid row(s) quarantined" in res.stderr
    assert pq.read_table(tmp_path / "o" / "quarantine.parquet")["row"].to_pylist() == [3, 4]


def test_elo_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "b.csv"
    src.write_text("a,b,c\n1,2,3\n")
    res = subprocess.run([ARENA, "elo", str(src), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert res.returncode == 2 and "missing required column" in res.stderr and "Traceback" not in res.stderr


def test_consistency_prints_json(shared_dir: Path, tmp_path: Path) -> None:
    d = shared_dir / "validation" / "consistency"
    rename = {v: k for k, v in json.loads((d / "arena_to_arena_hard.json").read_text()).items()}
    # The benchmark file uses mixed-case names; its map is lower-case: write a case-matched copy of the map.
    names = [json.loads(line)["model"] for line in (d / "bootstrap_stats_arena_hard.jsonl").read_text().splitlines()]
    (tmp_path / "ours.json").write_text(json.dumps({n: rename[n.lower()] for n in names if n.lower() in rename}))
    (tmp_path / "ref.json").write_text(json.dumps({k: k for k in rename.values()}))
    res = subprocess.run(
        [
            ARENA,
            "consistency",
            str(d / "bootstrap_stats_arena_hard.jsonl"),
            str(d / "leaderboard_table_df.csv"),
            "--rename-ours",
            str(tmp_path / "ours.json"),
            "--rename-reference",
            str(tmp_path / "ref.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["models"] == 20
    assert abs(report["spearman"] - 0.932330827067669) < 1e-9
    assert abs(report["brier"] - 0.07047865504650436) < 1e-9
