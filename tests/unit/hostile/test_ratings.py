"""Second hostile pass, ratings: a newcomer with a few battles must not move the established models' ranks or widen
their intervals; a provisional model must not outrank an established one on a handful of battles, and its interval
must say how little it rests on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from arena_ops.rating.leaderboard import compute_leaderboard

STRENGTH = {"m1": 1.0, "m2": 0.5, "m3": 0.0, "m4": -0.5}  # log-odds: about 87 Elo apart


def established(n: int = 2000, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    names = list(STRENGTH)
    rows = []
    for _ in range(n):
        a, b = (names[k] for k in rng.choice(len(names), 2, replace=False))
        p = 1 / (1 + np.exp(STRENGTH[b] - STRENGTH[a]))
        rows.append({"model_a": a, "model_b": b, "winner": "model_a" if rng.random() < p else "model_b"})
    return rows


def board(rows: list[dict]) -> dict[str, dict]:
    lb = compute_leaderboard(pa.Table.from_pylist(rows), rounds=100, seed=0)
    return {r["model"]: r for r in lb.records()}


@pytest.mark.parametrize("n", [1, 10, 20, 50])
def test_a_newcomer_does_not_collapse_the_established_ranks_or_widen_their_intervals(n: int) -> None:
    base = established()
    before = board(base)
    newcomer = [{"model_a": "new", "model_b": "m2", "winner": "model_a" if i % 2 == 0 else "model_b"} for i in range(n)]
    after = board(base + newcomer)
    ranks = [after[m]["rank"] for m in STRENGTH]
    assert ranks == sorted(ranks) and len(set(ranks)) == 4, ranks  # still four distinct, ordered ranks
    for m in STRENGTH:
        width = lambda r: r["ci_high"] - r["ci_low"]  # noqa: E731
        assert width(after[m]) < 1.3 * width(before[m]), (m, width(before[m]), width(after[m]))


def test_a_provisional_model_does_not_outrank_an_established_one_and_its_interval_says_so() -> None:
    base = established()
    after = board(base + [{"model_a": "lucky", "model_b": "m4", "winner": "model_a"}])  # one won battle
    lucky, leader = after["lucky"], after["m1"]
    assert lucky["provisional"] and lucky["rank"] > max(after[m]["rank"] for m in STRENGTH)
    assert lucky["ci_low"] < after["m4"]["rating"] and lucky["ci_high"] - lucky["ci_low"] > 300  # wide, honest
    assert leader["rank"] == 1


def test_one_battle_has_no_zero_width_interval_and_all_ties_are_provisional() -> None:
    one = board([{"model_a": "a", "model_b": "b", "winner": "model_a"}])
    assert all(r["ci_high"] - r["ci_low"] > 100 and r["provisional"] for r in one.values())
    ties = board([{"model_a": "a", "model_b": "b", "winner": "tie"}] * 30)
    assert all(r["provisional"] for r in ties.values())
