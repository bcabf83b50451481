"""Win rate against a reference model, AlpacaEval style.

A preference lies in [1, 2]: 1 = the reference wins, 2 = the model wins, 1.5 (or the legacy 0) = a draw; weighted
judges give values in between. Definitions follow alpaca_eval's ``AbsoluteScoringRule.describe_head2head`` (win
rate) and ``ZeroOneScoringRule`` (discrete win rate), so recomputed numbers equal its published leaderboards.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from arena_ops.errors import RatingError


def describe_preferences(preferences: np.ndarray) -> dict[str, float | int]:
    """win_rate, standard_error (both in %), n_wins, n_wins_base, n_draws, n_total, discrete_win_rate."""
    pref = np.asarray(preferences, dtype=np.float64)
    pref = np.where(pref == 0, 1.5, pref)
    n_draws = int(np.sum(pref == 1.5))
    valid = pref[~np.isnan(pref)]
    if np.any((valid < 1) | (valid > 2)):
        bad = valid[(valid < 1) | (valid > 2)][:5].tolist()
        raise RatingError(f"preferences must lie in [1, 2] (or be 0 for a draw); got e.g. {bad}")
    p = valid - 1.0
    n = len(p)
    discrete = np.where(valid == 1.5, 0.5, np.round(valid) - 1.0)
    return {
        "win_rate": float(p.mean() * 100) if n else float("nan"),
        "standard_error": float(p.std(ddof=1) / np.sqrt(n) * 100) if n > 1 else float("nan"),
        "n_wins": int(np.sum(p > 0.5)),
        "n_wins_base": int(np.sum(p < 0.5)),
        "n_draws": n_draws,
        "n_total": n,
        "discrete_win_rate": float(discrete.mean() * 100) if n else float("nan"),
    }


def battles_to_preferences(battles: pa.Table, reference: str) -> dict[str, np.ndarray]:
    """Per model, its preferences against ``reference`` from a battle table (win 2, loss 1, any tie 1.5)."""
    a = battles["model_a"].to_numpy(zero_copy_only=False)
    b = battles["model_b"].to_numpy(zero_copy_only=False)
    w = battles["winner"].to_numpy(zero_copy_only=False)
    out: dict[str, list[float]] = {}
    for side, other, win in ((a, b, "model_a"), (b, a, "model_b")):
        rows = np.flatnonzero((other == reference) & (side != reference))
        for k in rows.tolist():
            pref = 2.0 if w[k] == win else 1.5 if w[k] in ("tie", "tie_bothbad") else 1.0
            out.setdefault(side[k], []).append(pref)
    return {m: np.array(v) for m, v in out.items()}


def win_rates_vs_reference(battles: pa.Table, reference: str) -> dict[str, dict[str, float | int]]:
    return {m: describe_preferences(p) for m, p in sorted(battles_to_preferences(battles, reference).items())}
