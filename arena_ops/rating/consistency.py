"""Agreement between two leaderboards, defined exactly as Arena-Hard-Auto's benchmark notebook
(``notebook/benchmark_statistics.ipynb``, lmarena/arena-hard-auto; a copy with its printed outputs is in
``shared/validation/consistency``) — including its small quirks, so that our numbers reproduce the published ones:

- **separability**: the share of model pairs whose CIs do not overlap; intervals are sorted by lower bound and a
  pair overlaps when the later interval starts strictly before the earlier one ends (identical interval pairs are
  counted once, as in the notebook).
- **agreement with CI**: over the pairs the *reference* separates (its CIs do not overlap), +1 when ours orders the
  pair the same way with non-overlapping CIs, +0.5 when our CIs overlap, 0 when ours orders them the other way.
  The WizardArena paper (its Table 2 and ``shared/PAPER_NOTES.md``) scores the same three cases +1 / 0 / −1, i.e.
  ``2a − 1`` of the notebook's ``a``: reported as ``agreement_with_ci_paper`` (and ``average_consistency_paper``).
- **strict agreement**: over all pairs, the share ordered the same way by both point scores.
- **Brier score / log loss**: ours predicts P(a < b) = Φ(−(mean_a − mean_b) / √(var_a + var_b)) from its bootstrap
  samples (population variance); the label is whether the reference rates a below b.
- **average consistency** (WizardArena): the mean of Spearman, agreement with CI and separability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats

from arena_ops.errors import RatingError


@dataclass(frozen=True)
class Board:
    """A leaderboard: per model a point score, a CI and, for forecasts, the mean and (population) variance of its
    bootstrap samples."""

    models: list[str]
    score: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    mean: np.ndarray | None = None
    var: np.ndarray | None = None

    @classmethod
    def from_samples(
        cls, models: list[str], score: np.ndarray, lower: np.ndarray, upper: np.ndarray, samples: list[np.ndarray]
    ) -> Board:
        """``samples[k]``: bootstrap values of model k (lengths may differ, e.g. a fixed baseline has one)."""
        mean = np.array([np.mean(s) for s in samples])
        var = np.array([np.var(s) for s in samples])
        return cls(list(models), np.asarray(score), np.asarray(lower), np.asarray(upper), mean, var)

    def __post_init__(self) -> None:
        if len(set(self.models)) != len(self.models):
            raise RatingError("a board lists a model twice")
        for name in ("score", "lower", "upper"):
            if len(getattr(self, name)) != len(self.models):
                raise RatingError(f"board {name} has {len(getattr(self, name))} entries for {len(self.models)} models")

    def subset(self, models: list[str]) -> Board:
        idx = [self.models.index(m) for m in models]
        mean = None if self.mean is None else self.mean[idx]
        var = None if self.var is None else self.var[idx]
        return Board(list(models), self.score[idx], self.lower[idx], self.upper[idx], mean, var)


def separability(board: Board) -> float:
    """Share of model pairs whose confidence intervals do not overlap."""
    n = len(board.models)
    total = n * (n - 1) // 2
    if total == 0:
        return float("nan")
    intervals = sorted(zip(board.lower.tolist(), board.upper.tolist(), strict=True))
    overlapping: set[tuple[tuple[float, float], tuple[float, float]]] = set()
    for i in range(n):
        for j in range(i + 1, n):
            if intervals[j][0] < intervals[i][1]:
                pair = (intervals[i], intervals[j])
                if (intervals[j], intervals[i]) not in overlapping:
                    overlapping.add(pair)
            else:
                break
    return 1.0 - len(overlapping) / total


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


AGREEMENT_SCALES = {"arena-hard": (1.0, 0.5, 0.0), "paper": (1.0, 0.0, -1.0)}  # (agree, not separated, disagree)


def agreement_with_ci(ours: Board, reference: Board, scale: str = "arena-hard") -> float:
    """Agreement over the pairs the reference separates confidently (see the module docstring); ``scale`` is
    ``arena-hard`` (the notebook's 1 / 0.5 / 0) or ``paper`` (WizardArena's 1 / 0 / −1)."""
    if scale not in AGREEMENT_SCALES:
        raise RatingError(f"agreement scale must be one of {sorted(AGREEMENT_SCALES)}, got {scale!r}")
    agree, unseparated, disagree = AGREEMENT_SCALES[scale]
    ours, reference = _aligned(ours, reference)
    count = total = 0.0
    for a, b in combinations(range(len(ours.models)), 2):
        ref_a, ref_b = (reference.lower[a], reference.upper[a]), (reference.lower[b], reference.upper[b])
        if _overlap(ref_a, ref_b) > 0:
            continue
        total += 1
        our_a, our_b = (ours.lower[a], ours.upper[a]), (ours.lower[b], ours.upper[b])
        if _overlap(our_a, our_b) > 0:
            count += unseparated
        elif (our_a < our_b and ref_a < ref_b) or (our_a > our_b and ref_a > ref_b):
            count += agree
        else:
            count += disagree
    return count / total if total else float("nan")


def strict_agreement(ours: Board, reference: Board) -> float:
    ours, reference = _aligned(ours, reference)
    n = len(ours.models)
    agree = sum(
        1
        for a, b in combinations(range(n), 2)
        if (ours.score[a] < ours.score[b] and reference.score[a] < reference.score[b])
        or (ours.score[a] > ours.score[b] and reference.score[a] > reference.score[b])
    )
    return agree / (n * (n - 1) // 2)


def forecast_losses(ours: Board, reference: Board) -> tuple[float, float]:
    """(Brier score, log loss) of ours' bootstrap-based pairwise forecasts against the reference's order."""
    if ours.mean is None or ours.var is None:
        raise RatingError("forecast metrics need the mean and variance of ours' bootstrap samples")
    ours, reference = _aligned(ours, reference)
    mean, var = ours.mean, ours.var
    order = sorted(range(len(ours.models)), key=lambda k: ours.models[k])
    probs, labels = [], []
    for a, b in combinations(order, 2):
        probs.append(stats.norm(loc=mean[a] - mean[b], scale=np.sqrt(var[a] + var[b])).cdf(0))
        labels.append(float(reference.score[a] < reference.score[b]))
    p, y = np.asarray(probs), np.asarray(labels)
    brier = float(np.mean((y - p) ** 2))
    eps = np.finfo(np.float64).eps  # scikit-learn's log_loss clipping, as the notebook used
    pc = np.clip(p, eps, 1 - eps)
    log_loss = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    return brier, log_loss


def consistency_report(ours: Board, reference: Board) -> dict[str, float | int]:
    """All metrics over the models the two boards share."""
    ours, reference = _aligned(ours, reference)
    spearman = float(stats.spearmanr(reference.score, ours.score).statistic)
    kendall = float(stats.kendalltau(reference.score, ours.score).statistic)
    agree = agreement_with_ci(ours, reference)
    agree_paper = agreement_with_ci(ours, reference, scale="paper")
    sep = separability(ours)
    out: dict[str, float | int] = {
        "models": len(ours.models),
        "spearman": spearman,
        "kendall": kendall,
        "agreement_with_ci": agree,
        "strict_agreement": strict_agreement(ours, reference),
        "separability": sep,
        "reference_separability": separability(reference),
        "average_consistency": (spearman + agree + sep) / 3,
        "agreement_with_ci_paper": agree_paper,
        "average_consistency_paper": (spearman + agree_paper + sep) / 3,
    }
    if ours.mean is not None:
        out["brier"], out["log_loss"] = forecast_losses(ours, reference)
    return out


TABLE2_COLUMNS = ("Spearman", "Agreement with 95% CI", "Separability with 95% CI", "Average")


def table2_row(name: str, report: dict[str, float | int], scale: str = "paper") -> str:
    """One Markdown row of the paper's Table 2 (percentages): the benchmark's consistency with the reference."""
    suffix = "_paper" if scale == "paper" else ""
    values = [report["spearman"], report[f"agreement_with_ci{suffix}"], report["separability"]]
    values.append(report[f"average_consistency{suffix}"])
    return f"| {name} | " + " | ".join(f"{100 * float(v):.2f}%" for v in values) + " |"


def table2_header() -> str:
    return "| benchmark | " + " | ".join(TABLE2_COLUMNS) + " |\n| --- |" + " ---: |" * len(TABLE2_COLUMNS)


def _aligned(ours: Board, reference: Board) -> tuple[Board, Board]:
    shared = [m for m in ours.models if m in set(reference.models)]
    if len(shared) < 2:
        raise RatingError(f"the boards share {len(shared)} model(s); need at least 2 to compare")
    return ours.subset(shared), reference.subset(shared)


# Reading boards ------------------------------------------------------------------------------------------------------

_SCORE = ("rating", "score")
_LOWER = ("ci_low", "lower", "rating_q025")
_UPPER = ("ci_high", "upper", "rating_q975")


def read_board(path: str, rename: dict[str, str] | None = None) -> Board:
    """Read a leaderboard file: our ``leaderboard.json``/``.parquet``, or a CSV/JSONL with columns model + one of
    rating|score, ci_low|lower|rating_q025, ci_high|upper|rating_q975, and optionally ``results`` (bootstrap list)
    or ``bootstrap_mean``/``bootstrap_var``. ``rename`` maps names in the file to the names to compare under;
    when given, models it does not list are left out."""
    rows = _read_rows(path)
    if not rows:
        raise RatingError(f"{path}: no rows")
    bad = next((k for k, r in enumerate(rows, start=1) if not isinstance(r, dict)), None)
    if bad is not None:
        raise RatingError(f"{path}: row {bad} is not an object with model, rating and CI columns")
    cols = set(rows[0])

    def pick(options: tuple[str, ...]) -> str:
        for c in options:
            if c in cols:
                return c
        raise RatingError(f"{path}: needs one of the columns {list(options)} (have {sorted(cols)})")

    if "model" not in cols:
        raise RatingError(f"{path}: needs a 'model' column (have {sorted(cols)})")
    s, lo, hi = pick(_SCORE), pick(_LOWER), pick(_UPPER)
    if rename is not None:
        rows = [dict(r, model=rename[r["model"]]) for r in rows if r.get("model") in rename]
    models = []
    for k, r in enumerate(rows, start=1):
        name = r.get("model")
        if not isinstance(name, str) or not name.strip():
            raise RatingError(f"{path}: row {k}: 'model' must be a non-empty string, got {name!r}")
        models.append(name.strip())
    if len(set(models)) != len(models):
        raise RatingError(f"{path}: model(s) listed twice: {sorted({m for m in models if models.count(m) > 1})}")

    def numbers(col: str) -> np.ndarray:
        out = []
        for k, r in enumerate(rows, start=1):
            v = r.get(col)
            try:
                x = float(v) if not isinstance(v, bool) else math.nan
            except (TypeError, ValueError):
                x = math.nan
            if not math.isfinite(x):
                raise RatingError(f"{path}: row {k} ({r.get('model')}): {col!r} must be a finite number, got {v!r}")
            out.append(x)
        return np.array(out)

    arrays = [numbers(c) for c in (s, lo, hi)]
    if "results" in cols:
        samples = []
        for k, r in enumerate(rows, start=1):
            try:
                samples.append(np.asarray(r["results"], dtype=float))
            except (TypeError, ValueError):
                raise RatingError(f"{path}: row {k}: 'results' must be a list of numbers") from None
        return Board.from_samples(models, *arrays, samples)
    if {"bootstrap_mean", "bootstrap_var"} <= cols:
        return Board(models, *arrays, numbers("bootstrap_mean"), numbers("bootstrap_var"))
    return Board(models, *arrays)


def _read_rows(path: str) -> list[dict]:
    import json

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise RatingError(f"{path}: no such file")
    if p.is_dir():
        raise RatingError(f"{path}: is a directory; give a leaderboard file (.json, .jsonl, .csv or .parquet)")
    try:
        if path.endswith(".parquet"):
            return pq.read_table(path).to_pylist()
        if path.endswith(".csv"):
            return pacsv.read_csv(path).to_pylist()
        with open(path, encoding="utf-8") as f:
            if path.endswith(".jsonl"):
                rows = []
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except ValueError as exc:
                            raise RatingError(f"{path}: line {n} is not JSON: {exc}") from None
                return rows
            data = json.load(f)
    except (OSError, ValueError, pa.ArrowInvalid) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RatingError(f"{path}: cannot read a leaderboard: {str(exc)[:300]}") from None
    if isinstance(data, dict):  # {model: rating}
        raise RatingError(f"{path}: expected a list of rows with model, rating and CI columns, got a mapping")
    if not isinstance(data, list):
        kind = type(data).__name__
        raise RatingError(f"{path}: expected a list of rows with model, rating and CI columns, got {kind}")
    return data
