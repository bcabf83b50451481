"""`make bench`: the README's benchmark table is the recorded results file, and the comparison flags a ratio that got
worse than the recorded one (a real quick run of a benchmark against recorded results that claim a better ratio)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from results import BEGIN, END, RESULTS, read, recorded, table_markdown  # noqa: E402


def test_the_readme_table_is_the_recorded_results() -> None:
    newest = recorded(RESULTS, exclude=None)
    full = sorted(p for p in RESULTS.glob("*.json") if not read(p)[0].get("quick"))
    assert full, "no recorded full-size results in benchmarks/results/: run `make bench BENCH_ARGS=--readme`"
    meta, figures = read(full[-1])
    text = (REPO / "README.md").read_text()
    embedded = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert embedded == table_markdown(meta, figures).strip(), (
        f"the README's benchmark table is not {full[-1].name}: run `make bench BENCH_ARGS=--readme` (or regenerate "
        "it from the file)"
    )
    assert newest is not None and {f.benchmark for f in figures} >= {"benchmarks/bench_rating.py"}


def bench(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--only", "rating", "--quick", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_a_ratio_worse_than_the_recorded_one_is_a_regression(tmp_path: Path) -> None:
    first = bench("--out", str(tmp_path / "a.json"), "--against", str(tmp_path / "none.json"))
    assert first.returncode == 0, first.stdout + first.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    (fig,) = [f for f in data["figures"] if f["figure"].startswith("BT fit + bootstrap")]
    assert fig["ratio"] > 1 and fig["better"] == "higher"
    fig["ratio"] *= 10  # recorded: ten times better than any run can measure
    (tmp_path / "b.json").write_text(json.dumps(data))
    second = bench("--out", str(tmp_path / "c.json"), "--against", str(tmp_path / "b.json"))
    assert second.returncode == 1, second.stdout + second.stderr
    assert "REGRESSION BT fit + bootstrap" in second.stdout and f"recorded {fig['ratio']:.3g}" in second.stdout
