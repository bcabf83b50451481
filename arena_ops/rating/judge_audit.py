"""How far a judge can be trusted: its verdicts against human votes on the same questions and model pairs.

Definitions (MT-Bench paper, Zheng et al. 2023, §4.2, and FastChat's ``compute_agreement.py``):

- Verdicts and votes are keyed by (question, unordered model pair) and oriented by model name, so that "model_a won"
  means the same model on both sides. Each presentation order of the judge is a verdict of its own.
- **Agreement** = over every (judge verdict, human vote) pair on the same key, the share that are equal. *With ties*:
  a tie is a third class (tie = tie). *Without ties*: a comparison where either side is a tie is dropped.
- **Cohen's kappa** over the same comparisons, three classes (chance agreement from each side's class shares).
- **Position consistency**: over the keys the judge saw in both presentation orders, the share where its verdicts
  agree (after orientation) — a judge that only follows position scores 0 on decisive pairs.
- **First-position win rate** (the judge's verdicts won by the answer shown first), **tie rate**, and **P(longer)**:
  over the judge's decisive verdicts with both answers' lengths known, the share won by the longer answer.
- **Spearman** between the Bradley–Terry boards fitted to the judge's verdicts and to the human votes (shared models).

Input: battle-record files (``model_a, model_b, winner``, and ``question_id`` or ``prompt_id``; ``model_a`` is the
answer shown first). Our own battle tables hold both games of a battle in one row (``g1_score_*``, ``g2_score_*``):
they are expanded into their two per-game verdicts. Answer lengths come from ``len_a``/``len_b`` or from answer
files (``question_id``, ``text``; one file per model, ``answers_<model>.jsonl``).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from arena_ops.errors import RatingError

LABELS = ("model_a", "model_b", "tie")  # oriented: model_a is the name that sorts first


@dataclass(frozen=True)
class Verdict:
    question: str
    first: str  # the model shown first
    second: str
    winner: str  # model_a (first won) | model_b | tie

    @property
    def key(self) -> tuple[str, str, str]:
        lo, hi = sorted((self.first, self.second))
        return (self.question, lo, hi)

    @property
    def oriented(self) -> str:
        """The winner relative to the name order of the pair: model_a = the name that sorts first won."""
        if self.winner == "tie" or self.first < self.second:
            return self.winner
        return "model_b" if self.winner == "model_a" else "model_a"

    @property
    def winner_name(self) -> str | None:
        return {"model_a": self.first, "model_b": self.second}.get(self.winner)


def read_verdicts(path: str | Path) -> list[Verdict]:
    """Per-presentation verdicts of a battle-record file (CSV, JSONL, Parquet); a battle table of ours (both games in
    one row) gives two per row. ``tie_bothbad`` counts as a tie; rows with another winner are refused by number."""
    from arena_ops.rating.battles import _read_any

    table, _broken = _read_any(Path(path))
    cols = set(table.column_names)
    qcol = "question_id" if "question_id" in cols else "prompt_id" if "prompt_id" in cols else None
    missing = [c for c in ("model_a", "model_b", "winner") if c not in cols] + ([] if qcol else ["question_id"])
    if missing:
        raise RatingError(
            f"{path}: needs the columns {missing} (battle records: model_a, model_b, winner, question_id)"
        )
    games = {"g1_score_a", "g1_score_b", "g2_score_a", "g2_score_b"} <= cols
    out: list[Verdict] = []
    for k, r in enumerate(table.to_pylist(), start=1):
        q, a, b, w = r[qcol], r["model_a"], r["model_b"], r["winner"]
        if q is None or not a or not b or a == b:
            raise RatingError(
                f"{path}: row {k}: needs the columns question_id, model_a and model_b (two different models) and "
                f"winner, got {q!r}, {a!r}, {b!r}"
            )
        q = str(q)
        if games and r["g1_score_a"] is not None and r["g2_score_a"] is not None:
            out.append(Verdict(q, a, b, _by_score(r["g1_score_a"], r["g1_score_b"])))  # game 1: a shown first
            out.append(Verdict(q, b, a, _by_score(r["g2_score_a"], r["g2_score_b"])))  # game 2: b first, raw
            continue
        w = "tie" if w == "tie_bothbad" else w
        if w not in LABELS:
            raise RatingError(f"{path}: row {k}: winner must be model_a, model_b or tie, got {w!r}")
        out.append(Verdict(q, a, b, w))
    if not out:
        raise RatingError(f"{path}: no verdicts")
    return out


def _by_score(first: float, second: float) -> str:
    return "model_a" if first > second else "model_b" if second > first else "tie"


def read_answer_lengths(paths: Iterable[str | Path]) -> dict[tuple[str, str], int]:
    """``(question_id, model) → characters`` from answer files ``answers_<model>.jsonl`` (question_id, text)."""
    out: dict[tuple[str, str], int] = {}
    for p in paths:
        p = Path(p)
        model = p.stem.removeprefix("answers_")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[(str(row["question_id"]), model)] = len(row["text"])
            except (ValueError, KeyError, TypeError):
                raise RatingError(f"{p}: line {n}: expected an object with question_id and text") from None
    return out


def audit(
    judge: list[Verdict], humans: list[Verdict], lengths: dict[tuple[str, str], int] | None = None
) -> dict[str, Any]:
    """Every figure of the module docstring, plus the counts they rest on."""
    by_key: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for h in humans:
        by_key[h.key].append(h.oriented)
    pairs_with: list[tuple[str, str]] = []  # (judge, human) labels, ties kept
    for v in judge:
        for h in by_key.get(v.key, ()):
            pairs_with.append((v.oriented, h))
    pairs_without = [(j, h) for j, h in pairs_with if j != "tie" and h != "tie"]
    out: dict[str, Any] = {
        "n_judge_verdicts": len(judge),
        "n_human_votes": len(humans),
        "n_comparisons": len(pairs_with),
        "n_comparisons_without_ties": len(pairs_without),
        "agreement_with_ties": _share(j == h for j, h in pairs_with),
        "agreement_without_ties": _share(j == h for j, h in pairs_without),
        "kappa": cohen_kappa(pairs_with),
    }
    out.update(position_stats(judge))
    out.update(length_bias(judge, lengths or {}))
    out["spearman_boards"], out["board_models"] = _board_spearman(judge, humans)
    return out


def cohen_kappa(pairs: list[tuple[str, str]]) -> float:
    """Cohen's kappa of two raters' labels (``(rater1, rater2)`` per item)."""
    n = len(pairs)
    if n == 0:
        return math.nan
    observed = sum(a == b for a, b in pairs) / n
    c1, c2 = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(c1[k] * c2[k] for k in set(c1) | set(c2)) / (n * n)
    return (observed - expected) / (1 - expected) if expected < 1 else math.nan


def position_stats(judge: list[Verdict]) -> dict[str, Any]:
    """Position consistency over keys judged in both orders; first-position win rate and tie rate over verdicts."""
    orders: dict[tuple[str, str, str], dict[bool, list[str]]] = defaultdict(lambda: defaultdict(list))
    for v in judge:
        orders[v.key][v.first < v.second].append(v.oriented)
    both = [(o[True], o[False]) for o in orders.values() if o[True] and o[False]]
    consistent = [x == y for xs, ys in both for x in xs for y in ys]
    n = len(judge)
    return {
        "n_position_pairs": len(consistent),
        "position_consistency": _share(consistent),
        "first_position_win_rate": sum(v.winner == "model_a" for v in judge) / n if n else math.nan,
        "tie_rate": sum(v.winner == "tie" for v in judge) / n if n else math.nan,
    }


def length_bias(judge: list[Verdict], lengths: dict[tuple[str, str], int]) -> dict[str, Any]:
    """P(the judge prefers the longer answer) over decisive verdicts whose two answers' lengths are known and differ."""
    hits = []
    for v in judge:
        won = v.winner_name
        la, lb = lengths.get((v.question, v.first)), lengths.get((v.question, v.second))
        if won is None or la is None or lb is None or la == lb:
            continue
        longer = v.first if la > lb else v.second
        hits.append(won == longer)
    return {"n_length_verdicts": len(hits), "prefers_longer": _share(hits)}


def _board_spearman(judge: list[Verdict], humans: list[Verdict]) -> tuple[float, list[str]]:
    """Spearman between the BT boards of the judge's verdicts and of the human votes, over their shared models."""
    from scipy import stats

    from arena_ops.rating import bt

    boards = []
    for verdicts in (judge, humans):
        table = pa.table(
            {
                "model_a": [v.first for v in verdicts],
                "model_b": [v.second for v in verdicts],
                "winner": [v.winner for v in verdicts],
            }
        )
        pc = bt.aggregate(table)
        boards.append(dict(zip(pc.models, bt.fit_bt(pc).tolist(), strict=True)))
    shared = sorted(set(boards[0]) & set(boards[1]))
    if len(shared) < 3:
        return math.nan, shared
    rho = stats.spearmanr([boards[0][m] for m in shared], [boards[1][m] for m in shared]).statistic
    return float(rho), shared


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return float(np.mean(values)) if values else math.nan
