"""`arena judge audit`: GPT-4's verdicts on the Vicuna-80 questions against the crowd's votes on the same questions
and pairs (../shared/validation; skipped where it is absent), the references counted directly in the test."""

from __future__ import annotations

import csv
import json
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from arena_ops.rating.judge_audit import Verdict, audit, cohen_kappa, read_verdicts
from tests.unit.rating.test_bad_input import ARENA


@pytest.fixture(scope="module")
def votes(shared_dir: Path) -> tuple[Path, Path, Path]:
    d = shared_dir / "validation"
    return d / "battles" / "vicuna80_gpt4_judge.csv", d / "battles" / "vicuna80_human_votes.csv", d / "judge_meta"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _count(judge: list[dict], humans: list[dict], with_ties: bool) -> tuple[int, int, Counter]:
    """Every judge verdict against every human vote on the same question and pair; both in FastChat's orientation
    (the pair's names sorted, the winner flipped where the row listed them the other way)."""
    flip = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}

    def oriented(row: dict) -> str:
        return row["winner"] if row["model_a"] < row["model_b"] else flip[row["winner"]]

    human = defaultdict(list)
    for h in humans:
        human[(h["question_id"], frozenset((h["model_a"], h["model_b"])))].append(oriented(h))
    agree = total = 0
    labels: Counter = Counter()
    for j in judge:
        mine = oriented(j)
        for theirs in human[(j["question_id"], frozenset((j["model_a"], j["model_b"])))]:
            if not with_ties and "tie" in (mine, theirs):
                continue
            total += 1
            agree += mine == theirs
            labels[(mine, theirs)] += 1
    return agree, total, labels


def test_gpt4_against_the_crowd_as_counted_directly(votes: tuple[Path, Path, Path]) -> None:
    judge_file, human_file, _ = votes
    judge, humans = _rows(judge_file), _rows(human_file)
    got = audit(read_verdicts(judge_file), read_verdicts(human_file))
    agree, total, labels = _count(judge, humans, with_ties=True)
    assert got["n_comparisons"] == total and got["agreement_with_ties"] == pytest.approx(agree / total)
    agree_nt, total_nt, _ = _count(judge, humans, with_ties=False)
    assert got["agreement_without_ties"] == pytest.approx(agree_nt / total_nt)
    assert 0.6 < agree_nt / total_nt < 0.7  # GPT-4 vs humans without ties: 0.646 on these files
    # Kappa from the confusion counts (three classes in that orientation).
    n = sum(labels.values())
    observed = sum(c for (a, b), c in labels.items() if a == b) / n
    left, right = Counter(), Counter()
    for (a, b), c in labels.items():
        left[a] += c
        right[b] += c
    expected = sum(left[k] * right[k] for k in left) / n**2
    assert got["kappa"] == pytest.approx((observed - expected) / (1 - expected))
    # Position consistency: both presentation orders of a question and pair, compared verdict against verdict.
    by_order = defaultdict(lambda: defaultdict(list))
    for j in judge:
        a, b = j["model_a"], j["model_b"]
        oriented = j["winner"] if a < b else {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}[j["winner"]]
        by_order[(j["question_id"], min(a, b), max(a, b))][a < b].append(oriented)
    flags = [x == y for o in by_order.values() for x in o[True] for y in o[False]]
    assert got["n_position_pairs"] == len(flags) and got["position_consistency"] == pytest.approx(
        sum(flags) / len(flags)
    )
    assert got["first_position_win_rate"] == pytest.approx(sum(j["winner"] == "model_a" for j in judge) / len(judge))


def test_length_preference_and_board_correlation(votes: tuple[Path, Path, Path]) -> None:
    judge_file, human_file, answers = votes
    lengths = {}
    for f in sorted(answers.glob("answers_*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            lengths[(str(row["question_id"]), f.stem.removeprefix("answers_"))] = len(row["text"])
    from arena_ops.rating.judge_audit import read_answer_lengths

    got = audit(read_verdicts(judge_file), read_verdicts(human_file), read_answer_lengths(answers.glob("answers_*")))
    hits = []
    for j in _rows(judge_file):
        la, lb = lengths.get((j["question_id"], j["model_a"])), lengths.get((j["question_id"], j["model_b"]))
        if j["winner"] == "tie" or la is None or lb is None or la == lb:
            continue
        hits.append((j["winner"] == "model_a") == (la > lb))
    assert got["n_length_verdicts"] == len(hits) and got["prefers_longer"] == pytest.approx(sum(hits) / len(hits))
    assert got["spearman_boards"] > 0.5 and "gpt4" in got["board_models"]


def test_a_judge_that_always_picks_the_first_answer_is_caught() -> None:
    verdicts = [Verdict(str(q), a, b, "model_a") for q in range(10) for a, b in (("x", "y"), ("y", "x"))]
    humans = [Verdict(str(q), "x", "y", "model_a") for q in range(10)]
    got = audit(verdicts, humans)
    assert got["position_consistency"] == 0.0 and got["first_position_win_rate"] == 1.0
    assert got["agreement_without_ties"] == 0.5  # right whenever x happened to be shown first
    assert cohen_kappa([("a", "a"), ("b", "b")]) == 1.0


def test_cli_prints_the_scripted_fields(votes: tuple[Path, Path, Path]) -> None:
    judge_file, human_file, answers = votes
    res = subprocess.run(
        [ARENA, "judge", "audit", "--verdicts", str(judge_file), "--humans", str(human_file), "--answers",
         str(answers), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    keys = ("agreement_with_ties", "agreement_without_ties", "kappa", "position_consistency", "n_comparisons")
    assert all(k in out for k in keys) and out["n_comparisons"] == 13401
    res = subprocess.run(
        [ARENA, "judge", "audit", "--verdicts", str(answers / "vicuna80_questions.jsonl"), "--humans", str(human_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and "row 1: needs the columns question_id" in res.stderr
    assert "Traceback" not in res.stderr
