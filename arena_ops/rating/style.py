"""Style control (LMSYS / arena-hard-auto): Bradley–Terry with a response-length covariate.

logit P(a beats b) = ln(10)/400 · (r_a − r_b) + θ · z, where z is the normalised length difference
(len_a − len_b) / (len_a + len_b), standardised over the battles. θ measures how much the judge prefers longer
answers; the ratings r are what remains once length is accounted for. Unlike plain BT this cannot be aggregated
into pair counts (z is per battle), so it is a per-battle Newton fit; the bootstrap reweights battles with
multinomial counts. Ties count half a win each, as in the plain fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from arena_ops.errors import RatingError
from arena_ops.rating import bt


@dataclass
class StyleFit:
    models: list[str]
    ratings: np.ndarray  # (M,) or (B, M), style-controlled Elo
    length_coef: np.ndarray  # θ in log-odds per standard deviation of z; () or (B,)


def length_feature(battles: pa.Table) -> np.ndarray:
    """Standardised normalised length difference per battle; raises when lengths are missing."""
    if "len_a" not in battles.column_names or "len_b" not in battles.column_names:
        raise RatingError("style control needs len_a and len_b columns (response lengths)")
    la = battles["len_a"].to_numpy(zero_copy_only=False).astype(float)
    lb = battles["len_b"].to_numpy(zero_copy_only=False).astype(float)
    if np.isnan(la).any() or np.isnan(lb).any():
        raise RatingError(f"style control: {int(np.isnan(la).sum() + np.isnan(lb).sum())} missing length(s)")
    total = la + lb
    z = np.divide(la - lb, total, out=np.zeros_like(total), where=total > 0)
    sd = z.std()
    return (z - z.mean()) / sd if sd > 0 else z - z.mean()


def fit_style(
    battles: pa.Table,
    rounds: int = 0,
    seed: int = 0,
    anchor: tuple[str, float] | None = None,
    l2: float = 1e-6,
) -> tuple[StyleFit, StyleFit | None]:
    """Point fit, and (when ``rounds`` > 0) a bootstrap by multinomial reweighting of the battles."""
    models, ia, ib, outcome = bt.encode(battles)
    z = length_feature(battles)
    y = np.array([1.0, 0.0, 0.5])[outcome]
    ones = np.ones(len(y))
    point = _newton(len(models), ia, ib, z, y, ones, l2)
    boot = None
    if rounds:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=rounds)
        fits = [_newton(len(models), ia, ib, z, y, w.astype(float), l2) for w in draws]
        boot = StyleFit(
            models,
            bt.normalise(np.stack([f[0] for f in fits]) / bt.ALPHA, models, anchor),
            np.array([f[1] for f in fits]),
        )
    ratings = bt.normalise(point[0][None, :] / bt.ALPHA, models, anchor)[0]
    return StyleFit(models, ratings, np.asarray(point[1])), boot


def _newton(
    m: int, ia: np.ndarray, ib: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float
) -> tuple[np.ndarray, float]:
    beta, theta = np.zeros(m), 0.0
    for _ in range(100):
        x = beta[ia] - beta[ib] + theta * z
        p = bt.sigmoid(x)
        r = w * (y - p)
        v = w * p * (1 - p)
        g = np.append(np.bincount(ia, r, m) - np.bincount(ib, r, m) - l2 * beta, np.dot(r, z))
        pair = np.bincount(ia * m + ib, v, m * m).reshape(m, m)  # curvature summed per ordered pair
        h = np.zeros((m + 1, m + 1))
        h[:m, :m] = np.diag(pair.sum(axis=0) + pair.sum(axis=1)) - pair - pair.T
        vz = v * z
        h[:m, m] = h[m, :m] = np.bincount(ia, vz, m) - np.bincount(ib, vz, m)
        h[m, m] = np.dot(vz, z)
        h[:m, :m] += l2 * np.eye(m)
        step = np.linalg.solve(h + 1e-12 * np.eye(m + 1), g)
        step *= min(1.0, 2.0 / max(np.abs(step).max(), 1e-300))
        beta, theta = beta + step[:m], theta + step[m]
        if np.abs(step).max() < 1e-10:
            break
    return beta, theta
