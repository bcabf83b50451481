"""Bradley–Terry Elo on aggregated outcome counts, its bootstrap, and online Elo for comparison.

Conventions (LMSYS / FastChat): Elo scale 400, base 10, initial rating 1000; a tie (``tie`` or ``tie_bothbad``)
counts as half a win for each side. Without an anchor the ratings have mean 1000; with ``anchor=(model, value)``
that model is pinned (the paper pins Llama-2-70B-Chat at 1100). Each bootstrap round is normalised the same way.

Prior: every model also plays ``prior_games`` (default 1) virtual ties against a reference player fixed at the
initial rating — the "virtual draws" prior of Whole-History Rating (Coulom 2008), a Gaussian-like prior in log-odds.
It keeps ratings finite for models that never lost or never won and makes a model with one battle move little; with
hundreds of battles per model it moves ratings by well under an Elo point. Ratings are then centred on the
*established* models (:func:`provisional` marks the others), so a newcomer cannot shift everybody else; each
bootstrap sample is centred on their battle-weighted mean (inverse-variance weights), so that a model with a few
battles, whose rating swings from sample to sample, does not swing the established models' intervals with it. A model
absent from a bootstrap sample is NaN in that sample (never the mean). The comparison graph must be connected
(:func:`components`): ratings of groups that never met are not comparable.

Why our own solver instead of FastChat's per-battle ``LogisticRegression``: battles are first aggregated into
counts per model pair and outcome (a few hundred cells for 20 models, whatever the number of battles), and every
bootstrap round is a multinomial redraw of those counts. All rounds are then fitted *together* by batched Newton
steps on the (tiny) pair graph. ``benchmarks/bench_rating.py`` measures this against the per-battle baseline.
"""

from __future__ import annotations

import math
import unicodedata
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


PRIOR_GAMES = 1.0
#: A model with fewer battles, one that won every point or none, or one without a decisive battle (all ties) is
#: ``provisional``: shown, flagged, left out of the centring of the scale, with an interval its record supports.
MIN_BATTLES = 10


def fit_bt(
    pc: PairCounts,
    counts: np.ndarray | None = None,
    anchor: tuple[str, float] | None = None,
    l2: float = 1e-6,
    max_iter: int = 200,
    tol: float = 1e-10,
    prior_games: float = PRIOR_GAMES,
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Maximum-a-posteriori Bradley–Terry ratings in Elo units (the prior: ``prior_games`` virtual ties of each model
    against a reference at the initial rating; 0 gives the maximum-likelihood fit).

    ``counts`` defaults to ``pc.counts`` (P, 3); a (B, P, 3) array fits B count tables at once and returns (B, M).
    A model without battles in a count table is NaN in it. ``centre``: the models whose mean is the initial rating
    (default: all). ``l2`` is a tiny ridge (in log-odds units) for numerical safety.
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
        sp = sigmoid(beta)  # against the reference at rating 0
        grad = (score - total * s) @ d - l2 * beta + prior_games * (0.5 - sp)
        w = total * s * (1.0 - s)
        hess = np.zeros((c.shape[0], m * m))  # negative Hessian: weighted graph Laplacian + ridge
        hess[:, off_ij] = -w
        hess[:, off_ji] = -w
        hess = hess.reshape(-1, m, m) + (w @ np.abs(d) + prior_games * sp * (1.0 - sp) + l2)[:, :, None] * eye
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        # Damping: at most 2 log-odds (~350 Elo) per coordinate per step keeps Newton stable far from the optimum
        # (models that never win or never lose walk out to the ridge's equilibrium).
        step *= np.minimum(1.0, 2.0 / np.maximum(np.abs(step).max(axis=1, keepdims=True), 1e-300))
        beta += step
        if np.abs(step).max() < tol:
            break
    ratings = beta / ALPHA
    played = (total @ np.abs(d)) > 0  # (B, M)
    ratings = np.where(played, ratings, np.nan)
    ratings = normalise(ratings, pc.models, anchor, centre)
    return ratings if batched else ratings[0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def normalise(
    ratings: np.ndarray, models: list[str], anchor: tuple[str, float] | None, centre: np.ndarray | None = None
) -> np.ndarray:
    """Pin the scale: ``anchor`` model at its value, else the mean of the ``centre`` models (a mask, default all; or
    weights: a weighted mean; NaN — a model absent from a sample — ignored) at the initial rating."""
    if anchor is None:
        w = np.ones(ratings.shape[-1]) if centre is None or not np.any(centre) else np.asarray(centre, np.float64)
        ww = np.where(np.isnan(ratings), 0.0, w)
        with np.errstate(invalid="ignore", divide="ignore"):  # a row without weight: nothing to centre on (NaN)
            mean = np.nansum(ratings * ww, axis=1, keepdims=True) / ww.sum(axis=1, keepdims=True)
        return ratings - mean + INIT
    name, value = anchor
    if name not in models:
        raise RatingError(f"anchor model {name!r} is not among the rated models {models}")
    k = models.index(name)
    return ratings - ratings[:, k : k + 1] + value


MAX_ANCHOR = 1e6  # an Elo rating; 1e308 only overflows the plots and the JSON


def parse_anchor(text: str | None) -> tuple[str, float] | None:
    """``"llama-2-70b-chat=1100"`` → ``("llama-2-70b-chat", 1100.0)``; the value must be a finite number."""
    if not text:
        return None
    model, sep, value = text.rpartition("=")
    if not sep or not model.strip():
        raise RatingError(f"anchor must look like MODEL=VALUE, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or abs(number) > MAX_ANCHOR:
        raise RatingError(
            f"anchor value must be a finite number within ±{MAX_ANCHOR:g} (e.g. {model.strip()}=1100), got {value!r}"
        )
    return unicodedata.normalize("NFC", model.strip()), number  # named as the battles' names are normalised


def components(pc: PairCounts) -> list[list[str]]:
    """The connected groups of the comparison graph (models linked by at least one battle), largest first.

    Union-find over the model pairs (a few hundred edges): scipy.sparse.csgraph did the same but its import alone
    took ~0.5 s of `arena elo`'s whole-process time."""
    parent = list(range(len(pc.models)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(pc.i.tolist(), pc.j.tolist(), strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[str]] = {}
    for k, name in enumerate(pc.models):
        groups.setdefault(root(k), []).append(name)
    return sorted(groups.values(), key=lambda g: (-len(g), g))


def provisional(pc: PairCounts, min_battles: int = MIN_BATTLES) -> np.ndarray:
    """Models whose rating rests on too little: fewer than ``min_battles`` battles, or every point won or none
    (their maximum-likelihood rating is infinite; only the prior holds it)."""
    r = record(pc)
    points = r["wins"] + 0.5 * r["ties"]
    decisive = r["wins"] + r["losses"]
    return (r["battles"] < min_battles) | (points == 0) | (points == r["battles"]) | (decisive == 0)


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
    prior_games: float = PRIOR_GAMES,
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """(rounds, M) bootstrap ratings (NaN where a model drew no battle); fitted in chunks of ``chunk`` rounds."""
    samples = bootstrap_counts(pc, rounds, seed)
    parts = [
        fit_bt(pc, samples[k : k + chunk], anchor=anchor, l2=l2, prior_games=prior_games, centre=centre)
        for k in range(0, rounds, chunk)
    ]
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
