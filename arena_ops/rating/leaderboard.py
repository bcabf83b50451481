"""The leaderboard: BT fit + bootstrap + records, rendered as Parquet, JSON, Markdown and PNG plots.

The rating of a model is the **median** of its bootstrap ratings (as in the paper); the CI at level L uses the
percentiles (1-L)/2 and (1+L)/2 — 2.5 and 97.5 for the default 95%. ``rank`` is 1 + the number of models whose
lower bound exceeds this model's upper bound (LMSYS's rank by CI).

Bad input is refused or flagged, never silently rated: a comparison graph in separate groups is an error (naming the
groups); ``provisional`` models (too few battles, or all points won or lost) are flagged and do not centre the scale;
with fewer than :data:`MIN_RELIABLE_ROUNDS` bootstrap rounds the intervals and ranks are marked unreliable
(``params.ci_reliable``). Every number written is finite or null: the JSON files are strict JSON.
"""

from __future__ import annotations

import io
import json
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arena_ops.errors import RatingError
from arena_ops.rating import bt

RECORD_FIELDS = ("model", "rating", "ci_low", "ci_high", "rank", "wins", "losses", "ties", "battles", "provisional")
MIN_RELIABLE_ROUNDS = 20


@dataclass
class Leaderboard:
    models: list[str]
    rating: np.ndarray  # bootstrap median
    ci_low: np.ndarray
    ci_high: np.ndarray
    rank: np.ndarray
    mle: np.ndarray  # point estimate on all battles
    online_elo: np.ndarray
    record: dict[str, np.ndarray]
    samples: np.ndarray  # (rounds, models)
    win_rate: np.ndarray  # empirical, (M, M), NaN where a pair never met
    predicted_win_rate: np.ndarray
    params: dict[str, object] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-model columns (style control, …)
    provisional: np.ndarray | None = None  # (M,) bool

    def order(self) -> np.ndarray:
        return np.lexsort((np.array(self.models), -self.rating))

    def records(self) -> list[dict[str, object]]:
        """Rows sorted by rating: the fields of ``leaderboard.json``."""
        out = []
        for k in self.order().tolist():
            out.append(
                {
                    "model": self.models[k],
                    "rating": _plain(self.rating[k], 2),
                    "ci_low": _plain(self.ci_low[k], 2),
                    "ci_high": _plain(self.ci_high[k], 2),
                    "rank": int(self.rank[k]),
                    **{key: int(self.record[key][k]) for key in ("wins", "losses", "ties", "battles")},
                    "provisional": bool(self.provisional[k]) if self.provisional is not None else False,
                    "mle": _plain(self.mle[k], 2),
                    "online_elo": _plain(self.online_elo[k], 2),
                    "bootstrap_mean": _plain(_nan_stat(np.nanmean, self.samples[:, k]), 6),
                    "bootstrap_var": _plain(_nan_stat(np.nanvar, self.samples[:, k]), 6),
                    **{key: _plain(values[k]) for key, values in self.extra.items()},
                }
            )
        return out

    def to_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.records())

    def to_markdown(self) -> str:
        level = self.params.get("ci_level", 0.95)
        lines = [
            f"| rank | model | Elo | {level:.0%} CI | W / L / T | battles |",
            "| ---: | --- | ---: | --- | --- | ---: |",
        ]
        for r in self.records():
            ci = f"{r['ci_low'] - r['rating']:+.1f} / {r['ci_high'] - r['rating']:+.1f}"
            wlt = f"{r['wins']} / {r['losses']} / {r['ties']}"
            name = f"{r['model']} (provisional)" if r["provisional"] else r["model"]
            lines.append(f"| {r['rank']} | {name} | {r['rating']:.1f} | {ci} | {wlt} | {r['battles']} |")
        notes = []
        if any(r["provisional"] for r in self.records()):
            notes.append(
                f"provisional: fewer than {bt.MIN_BATTLES} battles, or every point won or lost; its rating rests on "
                "the prior and does not centre the scale."
            )
        if not self.params.get("ci_reliable", True):
            notes.append(
                f"only {self.params.get('bootstrap_rounds')} bootstrap rounds: intervals and ranks are unreliable "
                f"(use at least {MIN_RELIABLE_ROUNDS})."
            )
        return "\n".join(lines) + "\n" + "".join(f"\n{n}" for n in notes) + ("\n" if notes else "")

    def matrices_table(self) -> pa.Table:
        """Long form of both win-rate matrices: model_a, model_b, empirical, predicted."""
        m = len(self.models)
        a, b = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        keep = (a != b).ravel()
        names = np.array(self.models, dtype=object)
        return pa.table(
            {
                "model_a": names[a.ravel()[keep]],
                "model_b": names[b.ravel()[keep]],
                "empirical": self.win_rate.ravel()[keep],
                "predicted": self.predicted_win_rate.ravel()[keep],
            }
        )


def compute_leaderboard(
    battles: pa.Table,
    rounds: int = 100,
    seed: int = 0,
    ci_level: float = 0.95,
    anchor: tuple[str, float] | None = None,
    online_k: float | None = 4.0,
    style_control: bool = False,
    reference: str | None = None,
    prior_games: float = bt.PRIOR_GAMES,
) -> Leaderboard:
    """Fit, bootstrap and summarise a validated battle table (see :mod:`arena_ops.rating.battles`).

    ``style_control`` adds length-controlled ratings (``style_rating``, ``style_ci_low``, ``style_ci_high``; needs
    ``len_a``/``len_b``); ``reference`` adds each model's AlpacaEval-style win rate against that model.
    ``prior_games``: virtual ties per model against the initial rating (:mod:`arena_ops.rating.bt`); 0 is plain
    maximum likelihood, FastChat's ``compute_mle_elo`` (``mle`` then reproduces LMSYS/Arena-Hard boards exactly).
    ``online_k``: K of the sequential online Elo shown beside the fit (None: not computed — it is a Python loop over
    every battle, most of `arena elo`'s time on a million battles, so the CLI asks for it with --online-elo).
    """
    if battles.num_rows == 0:
        raise RatingError("no battles to rate")
    if not 0 < ci_level < 1:
        raise RatingError(f"ci_level must lie in (0, 1), got {ci_level}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise RatingError(f"bootstrap rounds must be a positive integer, got {rounds!r}")
    if online_k is not None and (not np.isfinite(online_k) or online_k <= 0):
        raise RatingError(f"online Elo K must be a positive finite number, got {online_k!r}")
    if isinstance(prior_games, bool) or not np.isfinite(prior_games) or prior_games < 0:
        raise RatingError(
            f"prior_games must be a finite number >= 0 (0 = plain maximum likelihood), got {prior_games!r}"
        )
    pc = bt.aggregate(battles)
    groups = bt.components(pc)
    if len(groups) > 1:
        shown = "; ".join(f"{{{', '.join(g[:6])}{', …' if len(g) > 6 else ''}}}" for g in groups[:5])
        raise RatingError(
            f"the battles form {len(groups)} separate groups of models that never met, whose ratings are not "
            f"comparable: {shown}. Rate each group on its own (filter the battles), or add battles between them."
        )
    flagged = bt.provisional(pc)
    centre = ~flagged
    mle = bt.fit_bt(pc, anchor=anchor, centre=centre, prior_games=prior_games)
    # Each sample centred on the established models weighted by their battles (a newcomer's rating swings from sample
    # to sample; a plain mean would swing every established model's interval with it), then the whole set shifted
    # once so that the established models' medians keep the mean the point estimate has.
    weights = np.where(flagged, 0.0, bt.record(pc)["battles"].astype(np.float64))
    samples = bt.bootstrap_bt(pc, rounds=rounds, seed=seed, anchor=anchor, centre=weights, prior_games=prior_games)
    if anchor is None and centre.any():
        samples = samples + (bt.INIT - np.nanmean(_nan_stat(np.nanmedian, samples, axis=0)[centre]))
    tail = round((1 - ci_level) * 50, 9)  # 0.95 → 2.5 exactly, not 2.500000000000002
    lo, med, hi = _nan_stat(np.nanpercentile, samples, [tail, 50, 100 - tail], axis=0)
    # A model drawn in no bootstrap sample (few battles, few rounds): its point estimate, and its interval from its
    # record (provisional) or none at all (flagged by ci_reliable).
    absent = np.isnan(med)
    med, lo, hi = (np.where(absent, mle, x) for x in (med, lo, hi))
    lo, hi = _provisional_intervals(pc, med, lo, hi, flagged, ci_level)
    rank = _ranks(lo, hi, flagged)
    online = bt.online_elo(battles, k=online_k) if online_k is not None else {}
    params: dict[str, object] = {
        "bootstrap_rounds": rounds,
        "seed": seed,
        "ci_level": ci_level,
        "ci_percentiles": [tail, 100 - tail],
        "anchor": list(anchor) if anchor else None,
        "online_k": online_k,
        "battles": pc.num_battles,
        "prior_games": prior_games,
        "min_battles": bt.MIN_BATTLES,
        "ci_reliable": rounds >= MIN_RELIABLE_ROUNDS,
    }
    extra: dict[str, np.ndarray] = {}
    if style_control:
        from arena_ops.rating.style import fit_style

        fit, boot = fit_style(battles, rounds=rounds, seed=seed, anchor=anchor)
        assert boot is not None
        extra["style_rating"] = np.median(boot.ratings, axis=0)
        extra["style_ci_low"], extra["style_ci_high"] = np.percentile(boot.ratings, [tail, 100 - tail], axis=0)
        params["length_coef"] = float(fit.length_coef)
    if reference is not None:
        from arena_ops.rating.winrate import win_rates_vs_reference

        reference = unicodedata.normalize("NFC", reference.strip())  # as the battles' model names are
        if reference not in pc.models:
            raise RatingError(f"reference model {reference!r} is not among the rated models {pc.models}")
        rates = win_rates_vs_reference(battles, reference)
        nan = {"win_rate": np.nan, "standard_error": np.nan}
        extra["reference_win_rate"] = np.array([rates.get(m, nan)["win_rate"] for m in pc.models])
        extra["reference_standard_error"] = np.array([rates.get(m, nan)["standard_error"] for m in pc.models])
        params["reference"] = reference
    return Leaderboard(
        models=pc.models,
        rating=med,
        ci_low=lo,
        ci_high=hi,
        rank=rank,
        mle=mle,
        online_elo=np.array([online.get(m, np.nan) for m in pc.models]),
        record=bt.record(pc),
        samples=samples,
        win_rate=bt.empirical_win_rate(pc),
        predicted_win_rate=bt.predicted_win_rate(med),
        params=params,
        extra=extra,
        provisional=flagged,
    )


def leaderboard_files(lb: Leaderboard, plots: bool = True) -> dict[str, bytes]:
    """Every output file of a leaderboard, by name (the caller decides where they go: a directory or the store)."""
    files = {
        "leaderboard.json": json.dumps(lb.records(), indent=2, allow_nan=False).encode(),
        "leaderboard.parquet": _parquet_bytes(lb.to_table()),
        "leaderboard.md": lb.to_markdown().encode(),
        "bootstrap.parquet": _parquet_bytes(pa.table({m: lb.samples[:, k] for k, m in enumerate(lb.models)})),
        "win_rates.parquet": _parquet_bytes(lb.matrices_table()),
        "params.json": json.dumps(lb.params, indent=2, allow_nan=False).encode(),
    }
    if plots:
        from arena_ops.rating.plots import elo_ci_png, win_rate_heatmap_png

        files["elo_ci.png"] = elo_ci_png(lb)
        files["win_rate_heatmap.png"] = win_rate_heatmap_png(lb)
    return files


def _plain(value: float, digits: int = 4) -> float | None:
    """A finite number rounded, else None: outputs are strict JSON (no NaN or Infinity)."""
    return round(float(value), digits) if np.isfinite(value) else None


def _provisional_intervals(
    pc: bt.PairCounts, rating: np.ndarray, lo: np.ndarray, hi: np.ndarray, flagged: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """A provisional model's interval also covers what its record cannot rule out: the Clopper–Pearson interval of
    its score rate over its n battles (bounds kept within [1/(2(n+1)), 1 − 1/(2(n+1))]: a perfect record is not an
    infinite rating), in Elo against the mean rating of the opponents it met. The bootstrap alone gives one won
    battle a narrow interval (every resample that holds it is a win) — and rank 1 above a leader of 2,000 battles."""
    if not flagged.any():
        return lo, hi
    from scipy.special import betaincinv  # beta.ppf(q, a, b) without scipy.stats' ~1 s import

    lo, hi = lo.copy(), hi.copy()
    r = bt.record(pc)
    for k in np.flatnonzero(flagged):
        n = int(r["battles"][k])
        if n == 0:
            continue
        points = float(r["wins"][k] + 0.5 * r["ties"][k])
        rivals = np.concatenate([pc.j[pc.i == k], pc.i[pc.j == k]])
        games = np.concatenate([pc.counts[pc.i == k].sum(axis=1), pc.counts[pc.j == k].sum(axis=1)])
        opp = float(np.average(rating[rivals], weights=games))
        a = (1 - level) / 2
        p_lo = float(betaincinv(points, n - points + 1, a)) if points > 0 else 0.0
        p_hi = float(betaincinv(points + 1, n - points, 1 - a)) if points < n else 1.0
        floor = 1 / (2 * (n + 1))
        p_lo, p_hi = np.clip([p_lo, p_hi], floor, 1 - floor)
        elo_lo, elo_hi = (opp + bt.SCALE * np.log10(p / (1 - p)) for p in (p_lo, p_hi))
        lo[k], hi[k] = np.nanmin([lo[k], elo_lo]), np.nanmax([hi[k], elo_hi])
    return lo, hi


def _ranks(lo: np.ndarray, hi: np.ndarray, provisional: np.ndarray) -> np.ndarray:
    """1 + the models clearly better (their interval above this one's). A provisional model never outranks an
    established one on a handful of battles: it is placed below every established model that is not clearly worse,
    and established models are ranked among themselves."""
    better = lo[None, :] > hi[:, None]  # [i, j]: j clearly better than i
    established = ~provisional
    better[established] &= established[None, :]
    better[provisional] |= established[None, :] & ~(hi[None, :] < lo[provisional][:, None])
    np.fill_diagonal(better, False)
    return 1 + better.sum(axis=1)


def _nan_stat(fn, *args, **kwargs):  # noqa: ANN001, ANN202 - numpy's nan-aware reductions, quiet on all-NaN
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
