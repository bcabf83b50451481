"""Bradley–Terry Elo on aggregated outcome counts, its bootstrap, and online Elo for comparison.

Conventions (LMSYS / FastChat): Elo scale 400, base 10, initial rating 1000; a tie (``tie`` or ``tie_bothbad``)
counts as half a win for each side. Without an anchor the ratings have mean 1000; with ``anchor=(model, value)``
that model is pinned (the paper pins Llama-2-70B-Chat at 1100). Each bootstrap round is normalised the same way.

Why our own solver instead of FastChat's per-battle ``LogisticRegression``: battles are first aggregated into
counts per model pair and outcome (a few hundred cells for 20 models, whatever the number of battles), and every
bootstrap round is a multinomial redraw of those counts. All rounds are then fitted *together* by batched Newton
steps on the (tiny) pair graph. ``benchmarks/bench_rating.py`` measures this against the per-battle baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pacompute

from arena_ops.errors import RatingError

SCALE = 400.0
BASE = 10.0
INIT = 1000.0
ALPHA = math.log(BASE) / SCALE  # natural-log units per Elo point

WIN_A, WIN_B, TIE = 0, 1, 2
_OUTCOME = {"model_a": WIN_A, "model_b": WIN_B, "tie": TIE, "tie_bothbad": TIE}


@dataclass(frozen=True)
class PairCounts:
    """Outcome counts per unordered model pair: ``counts[p] = (wins of i[p], wins of j[p], ties)``, i < j."""

    models: list[str]
    i: np.ndarray
    j: np.ndarray
    counts: np.ndarray  # (P, 3) int64

    @property
    def num_battles(self) -> int:
        return int(self.counts.sum())


def encode(battles: pa.Table) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Model names (sorted) and per-battle integer codes: index of model_a, index of model_b, outcome."""
    n = battles.num_rows
    both = pa.concat_arrays([_flat(battles["model_a"]), _flat(battles["model_b"])])
    encoded = pacompute.dictionary_encode(both)  # Arrow-native: no Python string objects for a million rows
    names = encoded.dictionary.to_pylist()
    order = np.argsort(np.array(names, dtype=object))
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    codes = rank[encoded.indices.to_numpy()]
    found = pacompute.index_in(battles["winner"], value_set=pa.array(list(_OUTCOME)))
    if found.null_count:
        raise RatingError(f"{found.null_count} battle(s) with an unknown winner; validate the table first")
    outcome = np.array(list(_OUTCOME.values()), dtype=np.int8)[found.to_numpy(zero_copy_only=False)]
    return [names[k] for k in order], codes[:n], codes[n:], outcome


def _flat(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def aggregate(battles: pa.Table) -> PairCounts:
    """Count outcomes per unordered pair; the result does not depend on row order or on which side is 'a'."""
    models, ia, ib, outcome = encode(battles)
    m = len(models)
    swap = ia > ib
    lo, hi = np.where(swap, ib, ia), np.where(swap, ia, ib)
    flipped = np.where(swap & (outcome != TIE), 1 - outcome, outcome)
    cells = np.bincount((lo * m + hi) * 3 + flipped, minlength=m * m * 3).reshape(m * m, 3)
    pair_ids = np.flatnonzero(cells.sum(axis=1))
    return PairCounts(models, pair_ids // m, pair_ids % m, cells[pair_ids].astype(np.int64))


def fit_bt(
    pc: PairCounts,
    counts: np.ndarray | None = None,
    anchor: tuple[str, float] | None = None,
    l2: float = 1e-6,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> np.ndarray:
    """Maximum-likelihood Bradley–Terry ratings in Elo units.

    ``counts`` defaults to ``pc.counts`` (P, 3); a (B, P, 3) array fits B count tables at once and returns (B, M).
    ``l2`` is a tiny ridge (in log-odds units) that keeps ratings finite for models that never win or never lose
    and fixes the translation of disconnected comparison graphs; it moves connected ratings by far less than 0.01.
    """
    c = pc.counts if counts is None else counts
    batched = c.ndim == 3
    c = c.reshape(-1, *pc.counts.shape).astype(np.float64)
    m = len(pc.models)
    score = c[..., 0] + 0.5 * c[..., 2]  # (B, P): points of i against j
    total = c.sum(axis=-1)
    beta = np.zeros((c.shape[0], m))
    d = np.zeros((len(pc.i), m))  # pair-model incidence: +1 for i, -1 for j
    d[np.arange(len(pc.i)), pc.i] = 1.0
    d[np.arange(len(pc.i)), pc.j] = -1.0
    off_ij, off_ji = pc.i * m + pc.j, pc.j * m + pc.i
    eye = np.eye(m)
    for _ in range(max_iter):
        x = beta[:, pc.i] - beta[:, pc.j]
        s = sigmoid(x)
        grad = (score - total * s) @ d - l2 * beta
        w = total * s * (1.0 - s)
        hess = np.zeros((c.shape[0], m * m))  # negative Hessian: weighted graph Laplacian + ridge
        hess[:, off_ij] = -w
        hess[:, off_ji] = -w
        hess = hess.reshape(-1, m, m) + (w @ np.abs(d))[:, :, None] * eye + l2 * eye
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        # Damping: at most 2 log-odds (~350 Elo) per coordinate per step keeps Newton stable far from the optimum
        # (models that never win or never lose walk out to the ridge's equilibrium).
        step *= np.minimum(1.0, 2.0 / np.maximum(np.abs(step).max(axis=1, keepdims=True), 1e-300))
        beta += step
        if np.abs(step).max() < tol:
            break
    ratings = beta / ALPHA
    ratings = normalise(ratings, pc.models, anchor)
    return ratings if batched else ratings[0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def normalise(ratings: np.ndarray, models: list[str], anchor: tuple[str, float] | None) -> np.ndarray:
    if anchor is None:
        return ratings - ratings.mean(axis=1, keepdims=True) + INIT
    name, value = anchor
    if name not in models:
        raise RatingError(f"anchor model {name!r} is not among the rated models {models}")
    k = models.index(name)
    return ratings - ratings[:, k : k + 1] + value


def parse_anchor(text: str | None) -> tuple[str, float] | None:
    """``"llama-2-70b-chat=1100"`` → ``("llama-2-70b-chat", 1100.0)``."""
    if not text:
        return None
    model, sep, value = text.rpartition("=")
    if not sep or not model:
        raise RatingError(f"anchor must look like MODEL=VALUE, got {text!r}")
    return model, float(value)


def bootstrap_counts(pc: PairCounts, rounds: int, seed: int) -> np.ndarray:
    """Multinomial redraws of the aggregated counts — equivalent to resampling battles with replacement."""
    rng = np.random.default_rng(seed)
    flat = pc.counts.ravel()
    n = int(flat.sum())
    return rng.multinomial(n, flat / n, size=rounds).reshape(rounds, *pc.counts.shape)


def bootstrap_bt(
    pc: PairCounts,
    rounds: int = 100,
    seed: int = 0,
    anchor: tuple[str, float] | None = None,
    l2: float = 1e-6,
    chunk: int = 256,
) -> np.ndarray:
    """(rounds, M) bootstrap ratings; fitted in chunks of ``chunk`` rounds to bound memory."""
    samples = bootstrap_counts(pc, rounds, seed)
    parts = [fit_bt(pc, samples[k : k + chunk], anchor=anchor, l2=l2) for k in range(0, rounds, chunk)]
    return np.concatenate(parts, axis=0)


def online_elo(battles: pa.Table, k: float = 4.0) -> dict[str, float]:
    """Sequential Elo updates in row order (order-dependent by design; for comparison with the BT fit)."""
    models, ia, ib, outcome = encode(battles)
    points = np.array([1.0, 0.0, 0.5])[outcome]
    # Inherently sequential. Plain Python floats in a list: numpy scalar indexing per step was 3x slower (0.86 s for
    # 1M battles, most of `arena elo`'s time).
    rating = [float(INIT)] * len(models)
    base, scale = float(BASE), float(SCALE)
    for a, b, sa in zip(ia.tolist(), ib.tolist(), points.tolist(), strict=True):
        ra, rb = rating[a], rating[b]
        delta = k * (sa - 1.0 / (1.0 + base ** ((rb - ra) / scale)))
        rating[a] = ra + delta
        rating[b] = rb - delta  # k * ((1 - sa) - (1 - ea)) = -delta
    return dict(zip(models, rating, strict=True))


def predicted_win_rate(ratings: np.ndarray) -> np.ndarray:
    """``P[a, b]``: BT probability that a beats b."""
    return 1.0 / (1.0 + BASE ** ((ratings[None, :] - ratings[:, None]) / SCALE))


def empirical_win_rate(pc: PairCounts) -> np.ndarray:
    """``W[a, b]``: a's share of points against b (ties half); NaN where the pair never met."""
    m = len(pc.models)
    points = np.zeros((m, m))
    games = np.zeros((m, m))
    wi, wj, t = pc.counts.T
    np.add.at(points, (pc.i, pc.j), wi + 0.5 * t)
    np.add.at(points, (pc.j, pc.i), wj + 0.5 * t)
    np.add.at(games, (pc.i, pc.j), wi + wj + t)
    np.add.at(games, (pc.j, pc.i), wi + wj + t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, points / games, np.nan)


def record(pc: PairCounts) -> dict[str, np.ndarray]:
    """Per-model wins, losses, ties and battles."""
    m = len(pc.models)
    wi, wj, t = pc.counts.T
    wins = np.bincount(pc.i, wi, m) + np.bincount(pc.j, wj, m)
    losses = np.bincount(pc.i, wj, m) + np.bincount(pc.j, wi, m)
    ties = np.bincount(pc.i, t, m) + np.bincount(pc.j, t, m)
    return {
        "wins": wins.astype(int),
        "losses": losses.astype(int),
        "ties": ties.astype(int),
        "battles": (wins + losses + ties).astype(int),
    }
