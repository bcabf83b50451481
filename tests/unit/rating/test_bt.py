"""Bradley–Terry fit, bootstrap and online Elo: synthetic truths, invariances, edge cases, a reference solver."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from arena_ops.rating import bt
from arena_ops.rating.leaderboard import compute_leaderboard


def synthetic_battles(strengths: dict[str, float], n: int, seed: int = 0, tie_rate: float = 0.1) -> pa.Table:
    """Battles between random pairs; P(a beats b) follows BT with the given Elo strengths; some ties."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    elo = np.array([strengths[m] for m in names])
    a = rng.integers(0, len(names), n)
    b = (a + rng.integers(1, len(names), n)) % len(names)
    p_a = 1 / (1 + 10 ** ((elo[b] - elo[a]) / 400))
    # Ties scored half each keep BT's expected score: draw a tie, else a win with the adjusted probability.
    u, tie = rng.random(n), rng.random(n) < tie_rate
    p_win_given_no_tie = np.clip((p_a - 0.5 * tie_rate) / (1 - tie_rate), 0, 1)
    winner = np.where(tie, "tie", np.where(u < p_win_given_no_tie, "model_a", "model_b"))
    return pa.table({"model_a": np.array(names)[a], "model_b": np.array(names)[b], "winner": winner})


def reference_fit(battles: pa.Table) -> dict[str, float]:
    """Independent per-battle MLE (FastChat's formulation: each battle twice, a tie = one win each way)."""
    from scipy.optimize import minimize

    models, ia, ib, outcome = bt.encode(battles)
    y = np.array([1.0, 0.0, 0.5])[outcome]

    def nll(beta: np.ndarray) -> tuple[float, np.ndarray]:
        x = beta[ia] - beta[ib]
        p = 1 / (1 + np.exp(-x))
        loss = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
        g = np.bincount(ia, p - y, len(models)) - np.bincount(ib, p - y, len(models))
        return loss, g

    beta = minimize(nll, np.zeros(len(models)), jac=True, method="L-BFGS-B", tol=1e-14).x
    elo = beta * 400 / math.log(10)
    return dict(zip(models, elo - elo.mean() + 1000, strict=True))


def _table(rows: list[tuple[str, str, str]]) -> pa.Table:
    a, b, w = zip(*rows, strict=True)
    return pa.table({"model_a": list(a), "model_b": list(b), "winner": list(w)})


STRENGTHS = {"a": 1200.0, "b": 1100.0, "c": 1000.0, "d": 950.0, "e": 750.0}


def test_recovers_known_strengths_within_ci() -> None:
    battles = synthetic_battles(STRENGTHS, 20_000, seed=1)
    lb = compute_leaderboard(battles, rounds=200, seed=0)
    truth = np.array([STRENGTHS[m] for m in lb.models])
    truth = truth - truth.mean() + 1000
    inside = (lb.ci_low <= truth) & (truth <= lb.ci_high)
    assert inside.sum() >= 4, list(zip(lb.models, lb.ci_low, truth, lb.ci_high, strict=True))
    assert np.abs(lb.rating - truth).max() < 25
    assert [r["model"] for r in lb.records()] == ["a", "b", "c", "d", "e"]


def test_matches_an_independent_per_battle_solver() -> None:
    battles = synthetic_battles(STRENGTHS, 3_000, seed=2, tie_rate=0.2)
    ours = bt.fit_bt(bt.aggregate(battles), prior_games=0)  # the maximum-likelihood fit
    ref = reference_fit(battles)
    assert np.abs(ours - np.array([ref[m] for m in sorted(ref)])).max() < 1e-3
    # the default prior (one virtual tie per model) moves 600-battle ratings by under an Elo point
    assert np.abs(bt.fit_bt(bt.aggregate(battles)) - ours).max() < 1.0


def test_mean_is_1000_without_anchor_and_anchor_shifts() -> None:
    battles = synthetic_battles(STRENGTHS, 2_000)
    pc = bt.aggregate(battles)
    free = bt.fit_bt(pc)
    assert free.mean() == pytest.approx(1000)
    pinned = bt.fit_bt(pc, anchor=("c", 1100.0))
    assert pinned[pc.models.index("c")] == pytest.approx(1100)
    assert np.allclose(pinned - free, pinned[0] - free[0])  # a pure shift: differences are unchanged
    samples = bt.bootstrap_bt(pc, rounds=20, seed=0, anchor=("c", 1100.0))
    assert np.allclose(samples[:, pc.models.index("c")], 1100)  # every bootstrap round is anchored too
    with pytest.raises(ValueError, match="anchor model 'zz'"):
        bt.fit_bt(pc, anchor=("zz", 1.0))


def test_row_order_and_side_invariance() -> None:
    battles = synthetic_battles(STRENGTHS, 2_000, seed=3)
    perm = np.random.default_rng(0).permutation(battles.num_rows)
    swapped = pa.table(
        {
            "model_a": battles["model_b"],
            "model_b": battles["model_a"],
            "winner": pa.array(
                [{"model_a": "model_b", "model_b": "model_a"}.get(w, w) for w in battles["winner"].to_pylist()]
            ),
        }
    )
    base = compute_leaderboard(battles, rounds=50, seed=7)
    for variant in (battles.take(perm), swapped):
        other = compute_leaderboard(variant, rounds=50, seed=7)
        assert np.allclose(other.mle, base.mle, atol=1e-8)
        assert np.allclose(other.samples, base.samples, atol=1e-8)  # bootstrap works on aggregated counts


def test_ties_count_half() -> None:
    # Only ties between x and y, and y always beats z: x and y must be level.
    rows = [("x", "y", "tie")] * 10 + [("x", "y", "tie_bothbad")] * 10 + [("y", "z", "model_a")] * 5
    rows += [("x", "z", "model_a")] * 5 + [("z", "x", "model_a")] * 1 + [("y", "z", "model_b")] * 1
    battles = _table(rows)
    pc = bt.aggregate(battles)
    r = dict(zip(pc.models, bt.fit_bt(pc), strict=True))
    assert r["x"] == pytest.approx(r["y"], abs=1e-6)
    assert r["x"] > r["z"]
    rec = bt.record(bt.aggregate(battles))
    assert rec["ties"].tolist() == [20, 20, 0] and rec["battles"].tolist() == [26, 26, 12]


def test_never_winning_and_never_losing_models_stay_finite() -> None:
    rows = [("top", "mid", "model_a")] * 8 + [("mid", "low", "model_a")] * 8 + [("mid", "bot", "model_a")] * 3
    rows += [("low", "mid", "model_a")] * 4
    lb = compute_leaderboard(_table(rows), rounds=50, seed=0)
    assert np.isfinite(lb.mle).all() and np.isfinite(lb.rating).all() and not np.isinf(lb.samples).any()
    assert [r["provisional"] for r in lb.records()] == [True, False, False, True]  # top never lost, bot never won
    order = [r["model"] for r in lb.records()]
    assert order[0] == "top" and order[-1] == "bot"


def test_disconnected_graph_and_single_pair() -> None:
    battles = pa.table({"model_a": ["a", "c"], "model_b": ["b", "d"], "winner": ["model_a", "tie"]})
    r = bt.fit_bt(bt.aggregate(battles))
    assert np.isfinite(r).all() and r.mean() == pytest.approx(1000)


def test_bootstrap_is_seeded_and_ci_level_is_honoured() -> None:
    battles = synthetic_battles(STRENGTHS, 2_000)
    a = compute_leaderboard(battles, rounds=100, seed=5)
    b = compute_leaderboard(battles, rounds=100, seed=5)
    c = compute_leaderboard(battles, rounds=100, seed=6)
    assert np.array_equal(a.samples, b.samples) and not np.array_equal(a.samples, c.samples)
    assert np.allclose(a.ci_low, np.percentile(a.samples, 2.5, axis=0))
    assert np.allclose(a.ci_high, np.percentile(a.samples, 97.5, axis=0))
    assert np.allclose(a.rating, np.median(a.samples, axis=0))
    narrow = compute_leaderboard(battles, rounds=100, seed=5, ci_level=0.8)
    assert (narrow.ci_high - narrow.ci_low < a.ci_high - a.ci_low).all()
    assert a.params["ci_percentiles"] == [2.5, 97.5]


def test_rank_by_ci() -> None:
    battles = synthetic_battles({"p": 1300, "q": 1000, "r": 995, "s": 700}, 6_000)
    lb = compute_leaderboard(battles, rounds=100)
    ranks = {r["model"]: r["rank"] for r in lb.records()}
    assert ranks["p"] == 1 and ranks["q"] == ranks["r"] == 2 and ranks["s"] == 4


def test_bootstrap_counts_preserve_the_total() -> None:
    pc = bt.aggregate(synthetic_battles(STRENGTHS, 1_000))
    draws = bt.bootstrap_counts(pc, rounds=30, seed=0)
    assert draws.shape == (30, *pc.counts.shape)
    assert (draws.sum(axis=(1, 2)) == pc.num_battles).all()


def test_online_elo_matches_hand_computation() -> None:
    battles = pa.table(
        {"model_a": ["a", "a", "b"], "model_b": ["b", "b", "a"], "winner": ["model_a", "tie", "model_a"]}
    )
    r = bt.online_elo(battles, k=4)
    ra = rb = 1000.0
    for sa in (1.0, 0.5, 0.0):  # a's points: win, tie, loss
        ea = 1 / (1 + 10 ** ((rb - ra) / 400))
        ra, rb = ra + 4 * (sa - ea), rb - 4 * (sa - ea)
    assert r["a"] == pytest.approx(ra) and r["b"] == pytest.approx(rb)
    assert r["a"] + r["b"] == pytest.approx(2000)


def test_win_rate_matrices() -> None:
    battles = synthetic_battles(STRENGTHS, 4_000)
    lb = compute_leaderboard(battles, rounds=20)
    w, p = lb.win_rate, lb.predicted_win_rate
    off = ~np.eye(len(lb.models), dtype=bool)
    assert np.allclose(w[off] + w.T[off], 1.0) and np.allclose(p + p.T, 1.0)
    assert np.abs(w[off] - p[off]).max() < 0.1  # BT explains synthetic BT data
    assert lb.matrices_table().num_rows == len(lb.models) * (len(lb.models) - 1)
