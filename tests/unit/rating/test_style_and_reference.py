"""Style control (length covariate) and win rates against a reference model, inside the leaderboard."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from arena_ops.errors import RatingError
from arena_ops.rating import compute_leaderboard, describe_preferences, win_rates_vs_reference
from arena_ops.rating.style import fit_style

ELO = {"a": 1100.0, "b": 1000.0, "c": 1000.0, "d": 900.0}


def length_biased_battles(n: int, theta: float, seed: int = 0) -> pa.Table:
    """BT battles where the judge also rewards the longer answer with log-odds ``theta`` per SD of the feature."""
    rng = np.random.default_rng(seed)
    names = np.array(list(ELO))
    elo = np.array(list(ELO.values()))
    a = rng.integers(0, 4, n)
    b = (a + rng.integers(1, 4, n)) % 4
    # Model "d" writes long answers: with a length bias, plain BT overrates it.
    la = rng.integers(50, 500, n) + np.where(a == 3, 600, 0)
    lb = rng.integers(50, 500, n) + np.where(b == 3, 600, 0)
    z = (la - lb) / (la + lb)
    z = (z - z.mean()) / z.std()
    x = np.log(10) / 400 * (elo[a] - elo[b]) + theta * z
    win = rng.random(n) < 1 / (1 + np.exp(-x))
    return pa.table(
        {
            "model_a": names[a],
            "model_b": names[b],
            "winner": np.where(win, "model_a", "model_b"),
            "len_a": la.astype(float),
            "len_b": lb.astype(float),
        }
    )


def test_style_control_recovers_strengths_and_length_coefficient() -> None:
    battles = length_biased_battles(30_000, theta=0.6)
    fit, boot = fit_style(battles, rounds=20, seed=0)
    assert fit.length_coef == pytest.approx(0.6, abs=0.05)
    truth = np.array([ELO[m] for m in fit.models])
    assert np.abs(fit.ratings - (truth - truth.mean() + 1000)).max() < 15
    assert boot is not None and boot.ratings.shape == (20, 4)

    lb = compute_leaderboard(battles, rounds=20, style_control=True)
    rec = {r["model"]: r for r in lb.records()}
    # Plain BT credits d's verbosity; the style-controlled rating takes it back.
    assert rec["d"]["rating"] - rec["d"]["style_rating"] > 30
    assert rec["d"]["style_ci_low"] <= rec["d"]["style_rating"] <= rec["d"]["style_ci_high"]
    assert lb.params["length_coef"] == pytest.approx(fit.length_coef)


def test_style_control_needs_lengths() -> None:
    battles = pa.table({"model_a": ["a"], "model_b": ["b"], "winner": ["tie"]})
    with pytest.raises(RatingError, match="len_a and len_b"):
        compute_leaderboard(battles, rounds=5, style_control=True)


def test_reference_win_rate_in_the_board() -> None:
    battles = pa.table(
        {
            "model_a": ["x", "ref", "x", "y", "y"],
            "model_b": ["ref", "x", "ref", "ref", "x"],
            "winner": ["model_a", "model_a", "tie", "model_a", "model_b"],
        }
    )
    rates = win_rates_vs_reference(battles, "ref")
    # x vs ref: win (2), loss as model_b (1), tie (1.5) → mean(1, 0, 0.5) = 50%; y: one win → 100%.
    assert rates["x"]["win_rate"] == pytest.approx(50.0) and rates["x"]["n_total"] == 3
    assert rates["y"]["win_rate"] == pytest.approx(100.0) and "ref" not in rates
    lb = compute_leaderboard(battles, rounds=5, reference="ref")
    rec = {r["model"]: r for r in lb.records()}
    assert rec["x"]["reference_win_rate"] == pytest.approx(50.0) and rec["ref"]["reference_win_rate"] is None
    with pytest.raises(RatingError, match="reference model 'nobody'"):
        compute_leaderboard(battles, rounds=5, reference="nobody")


def test_describe_preferences_edge_cases() -> None:
    d = describe_preferences(np.array([2.0, 1.0, 0.0, 1.5, np.nan, 1.8]))
    assert d["n_total"] == 5 and d["n_draws"] == 2 and d["n_wins"] == 2 and d["n_wins_base"] == 1
    assert d["discrete_win_rate"] == pytest.approx(60.0)  # (1 + 0 + .5 + .5 + 1) / 5
    with pytest.raises(RatingError, match=r"must lie in \[1, 2\]"):
        describe_preferences(np.array([3.0]))
