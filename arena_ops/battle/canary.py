"""The judge's canary: a frozen set of labelled pairs, judged again in every round, and the gate on what it shows.

A canary file (``judge.canary.path``; JSONL) holds pairs whose right verdict is known — crowd-voted pairs replayed as
recorded answers (``arena judge canary-build`` makes one from human votes and the answers voted on), or pairs of
checkable tasks labelled by a verifier; ``judge.canary.previous_verdicts`` adds battles of the last accepted round,
labelled with that round's verdicts (:func:`pairs_from_round`). Each row::

    {"pair_id": "q1:bard|gpt35", "turns": ["…"], "model_a": "bard", "model_b": "gpt35",
     "answer_a": "…", "answer_b": "…", "label": "model_a"}        # label: model_a | model_b | tie

Every round the round's judge plays both orders of every pair (the battles' own code: template, structured output,
re-asks), before any training data is built. Metrics (each with the judge's identity — model, revision, template
hash, sampling — and the canary file's hash):

- ``agreement``: the share of decisive labels the judge's combined verdict (both games, ``judge.combine``) matches;
  ``agreement_with_ties`` counts ties as a class;
- ``position_flips``: the share of pairs whose two games disagree once oriented (1 − position consistency);
- ``first_position_win_rate``, ``invalid_rate``;
- ``drift``: the share of pairs whose combined verdict differs from the previous round's canary (None in the first).

``judge.gate`` sets the limits (``min_agreement``, ``max_position_flips``, ``max_drift``; None = unchecked). A breach
raises :class:`JudgeGateError` naming each metric, its value and its limit; the round stops before its training data
is built, and its battles stay in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from arena_ops.config import ArenaConfig
from arena_ops.errors import ArenaError, ConfigError
from arena_ops.store import ArtifactStore

from .generate import Participant
from .judge import Verdict, combine_games
from .judging import JUDGMENT_SCHEMA, Game, Judge
from .parts import content_key

log = logging.getLogger(__name__)

LABELS = ("model_a", "model_b", "tie")
GATES = {  # metric → (config key, comparison): the metric must be >= / <= the limit
    "agreement": ("min_agreement", ">="),
    "position_flips": ("max_position_flips", "<="),
    "drift": ("max_drift", "<="),
}


class JudgeGateError(ArenaError):
    """The judge failed its canary: the message names each metric, its value and its limit."""


def read_canary(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The canary's pairs (each checked: turns, two models, two answers, a label), in file order."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"judge.canary.path {path}: cannot read: {exc.strerror or exc}") from None
    pairs = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ConfigError(f"{path}: line {n} is not JSON") from None
        turns = row.get("turns") if isinstance(row, dict) else None
        answers = [row.get("answer_a"), row.get("answer_b")] if isinstance(row, dict) else []
        ok = (
            isinstance(turns, list)
            and turns
            and all(isinstance(t, str) for t in turns)
            and all(isinstance(a, (str, list)) and a for a in answers)
            and isinstance(row.get("model_a"), str)
            and isinstance(row.get("model_b"), str)
            and row.get("model_a") != row.get("model_b")
            and row.get("label") in LABELS
        )
        if not ok:
            raise ConfigError(
                f"{path}: line {n}: a canary pair needs turns (a list of strings), model_a and model_b (two names), "
                f"answer_a and answer_b (text, or one text per turn) and label (one of {', '.join(LABELS)})"
            )
        answers = [[a] if isinstance(a, str) else list(a) for a in answers]
        pid = str(row.get("pair_id") or content_key("canary", turns, row["model_a"], row["model_b"]))
        pairs.append({**row, "pair_id": pid, "answer_a": answers[0], "answer_b": answers[1]})
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise ConfigError(f"{path}: no canary pairs")
    return pairs


def file_hash(path: str) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


async def judge_pairs(cfg: ArenaConfig, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Both games of every pair, judged by the configured judge; one judgment row per game."""
    judge = Judge(cfg, None if cfg.judge.kind == "verifier" else Participant.open(cfg.models.judge, cfg))
    try:
        if judge.participant is not None and judge.participant.client is not None:
            await judge.participant.client.ready(cfg.serving.deploy_timeout_s)
        games = []
        for p in pairs:
            prompt = {"prompt_id": p["pair_id"], "turns": p["turns"], "system": p.get("system")}
            if "reference" in p:
                prompt["reference"] = p["reference"]
            a, b = p["model_a"], p["model_b"]
            games.append(Game(p["pair_id"], prompt, 1, a, b, p["answer_a"], p["answer_b"]))
            games.append(Game(p["pair_id"], prompt, 2, b, a, p["answer_b"], p["answer_a"]))
        rows = await asyncio.gather(*(judge.play(g) for g in games))
    finally:
        if judge.participant is not None:
            await judge.participant.aclose()
    return [r for rs in rows for r in rs]


def metrics(
    cfg: ArenaConfig, pairs: list[dict[str, Any]], rows: list[dict[str, Any]], previous: dict[str, str] | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The canary's metrics, and each pair's combined verdict (for the next round's drift)."""
    games = {(r["battle_id"], r["game"]): r for r in rows}
    verdicts: dict[str, str] = {}
    decisive_hits, all_hits, flips, firsts, invalid, valid_games = [], [], [], [], 0, 0
    for p in pairs:
        g1, g2 = games.get((p["pair_id"], 1)), games.get((p["pair_id"], 2))
        for g in (g1, g2):
            if g is None or g["status"] != "valid":
                invalid += 1
            else:
                valid_games += 1
                firsts.append(g["score_a"] > g["score_b"])
        if g1 is None or g2 is None or g1["status"] != "valid" or g2["status"] != "valid":
            continue
        winner, _, _ = combine_games(
            Verdict(g1["score_a"], g1["score_b"], ""),
            Verdict(g2["score_a"], g2["score_b"], ""),
            cfg.judge.combine,
            cfg.judge.tie_margin,
        )
        verdicts[p["pair_id"]] = winner
        all_hits.append(winner == p["label"])
        if p["label"] != "tie":
            decisive_hits.append(winner == p["label"])
        pref1 = _sign(g1["score_a"] - g1["score_b"])  # + : model_a preferred (shown first in game 1)
        pref2 = _sign(g2["score_b"] - g2["score_a"])  # + : model_a preferred (shown second in game 2)
        flips.append(pref1 != pref2)
    changed = [verdicts[k] != v for k, v in (previous or {}).items() if k in verdicts]
    n_games = 2 * len(pairs)
    out = {
        "pairs": len(pairs),
        "judged_pairs": len(verdicts),
        "agreement": _share(decisive_hits),
        "agreement_with_ties": _share(all_hits),
        "position_flips": _share(flips),
        "first_position_win_rate": _share(firsts),
        "invalid_rate": invalid / n_games if n_games else None,
        "drift": _share(changed) if previous else None,
        "drift_pairs": len(changed) if previous else 0,
    }
    return out, verdicts


def gate(cfg: ArenaConfig, m: dict[str, Any]) -> list[str]:
    """The breaches of ``judge.gate`` (empty when the judge passes)."""
    out = []
    for metric, (key, op) in GATES.items():
        limit, value = getattr(cfg.judge.gate, key), m.get(metric)
        if limit is None or value is None:
            continue
        if (op == ">=" and value < limit) or (op == "<=" and value > limit):
            out.append(f"{metric} {value:.3f} {'<' if op == '>=' else '>'} judge.gate.{key} {limit:g}")
    return out


def pairs_from_round(store: ArtifactStore, flywheel: str, iteration: int, n: int) -> list[dict[str, Any]]:
    """Up to ``n`` battles of round ``iteration``'s steps as canary pairs, labelled with that round's verdicts (the
    answers from the battle tables' transcripts); a stable choice: the first ``n`` by battle id."""
    from arena_ops import catalogue

    pairs: list[dict[str, Any]] = []
    for t in catalogue.battle_tables(store, flywheel, "training", iteration=iteration):
        rows = store.read_artifact_table(t.key).select(["battle_id", "prompt_id", "model_a", "model_b", "winner"])
        said = {
            (r["prompt_id"], r["model"]): r
            for r in store.read_artifact_table(t.key, "transcripts.parquet").to_pylist()
            if r["answers"]
        }
        for r in sorted(rows.to_pylist(), key=lambda r: r["battle_id"]):
            a, b = said.get((r["prompt_id"], r["model_a"])), said.get((r["prompt_id"], r["model_b"]))
            if a is None or b is None or r["winner"] not in LABELS:
                continue
            pairs.append(
                {
                    "pair_id": f"i{iteration}:{r['battle_id']}",
                    "turns": a["turns"],
                    "system": a.get("system"),
                    "model_a": r["model_a"],
                    "model_b": r["model_b"],
                    "answer_a": a["answers"],
                    "answer_b": b["answers"],
                    "label": r["winner"],
                }
            )
    return sorted(pairs, key=lambda p: p["pair_id"])[:n]


def run_canary(
    cfg: ArenaConfig,
    store: ArtifactStore,
    key: str,
    previous_key: str | None,
    before: Callable[[], Any] | None = None,
    earlier: tuple[int, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Judge the canary (or reuse this round's stored result for the same judge and pairs), write it at ``key``,
    return the metrics with the judge's identity and the breaches. ``before`` runs when judging is needed (serving).
    ``earlier``: (iteration, pairs) of an accepted round's verdicts (``judge.canary.previous_verdicts``), judged beside
    the file's pairs."""
    from arena_ops.revisions import revision_of

    c = cfg.judge.canary
    pairs = read_canary(c.path, c.size) if c.path is not None else []
    extra = earlier[1] if earlier else []
    pairs += extra
    if not pairs:
        raise ConfigError("the judge's canary has no pairs: set judge.canary.path or wait for an accepted round")
    judge = Judge(cfg, None if cfg.judge.kind == "verifier" else Participant.identity(cfg.models.judge, cfg.storage))
    identity = {
        "judge": cfg.models.judge.name if cfg.judge.kind != "verifier" else f"verifier:{cfg.judge.verifier}",
        "judge_revision": revision_of(cfg.models.judge, cfg.storage) if cfg.judge.kind != "verifier" else None,
        "judge_hash": judge.hash,
        "template": judge.template.version,
        "sampling": cfg.models.judge.sampling.model_dump(),
        "canary": c.path,
        "canary_hash": file_hash(c.path) if c.path is not None else None,
        "previous_verdicts": {"iteration": earlier[0], "pairs": len(extra), "hash": content_key(extra)[:16]}
        if earlier
        else None,
    }
    fingerprint = content_key(identity, c.size, cfg.judge.combine, cfg.judge.tie_margin)
    previous = None
    if previous_key and store.is_committed(previous_key):
        previous = store.read_artifact_json(previous_key, "verdicts.json")
    if store.is_committed(key) and store.manifest(key).meta.get("fingerprint") == fingerprint:
        m = store.read_artifact_json(key, "metrics.json")
    else:
        if before is not None:
            before()
        rows = asyncio.run(judge_pairs(cfg, pairs))
        m, verdicts = metrics(cfg, pairs, rows, previous)
        m = {**m, **identity}
        with store.artifact_at(key, meta={"fingerprint": fingerprint}) as w:
            w.write_table("judgments.parquet", pa.Table.from_pylist(rows, schema=JUDGMENT_SCHEMA))
            w.write_json("verdicts.json", verdicts)
            w.write_json("metrics.json", m)
    return {**m, "breaches": gate(cfg, m), "uri": store.key_uri(key)}


def build_from_votes(
    votes: str, answers: list[str], questions: str, n: int, min_share: float = 0.75, seed: int = 0
) -> list[dict[str, Any]]:
    """Canary pairs from crowd votes: (question, pair) with a decisive majority of at least ``min_share`` among ≥ 2
    votes, both answers known; ``n`` of them, seeded. Answers: ``answers_<model>.jsonl`` (question_id, text)."""
    import csv
    from collections import Counter, defaultdict

    import numpy as np

    qs = {}
    for line in Path(questions).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            qs[str(row["question_id"])] = row.get("text") or row.get("turns", [""])[0]
    texts: dict[tuple[str, str], str] = {}
    for f in answers:
        model = Path(f).stem.removeprefix("answers_")
        for line in Path(f).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts[(str(row["question_id"]), model)] = row["text"]
    tally: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    flip = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}
    with open(votes, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            a, b, q = r["model_a"], r["model_b"], str(r["question_id"])
            lo, hi = sorted((a, b))
            tally[(q, lo, hi)][r["winner"] if a == lo else flip[r["winner"]]] += 1
    out = []
    for (q, a, b), c in sorted(tally.items()):
        total = sum(c.values())
        label, count = c.most_common(1)[0]
        if total < 2 or label == "tie" or count / total < min_share:
            continue
        if (q, a) not in texts or (q, b) not in texts or q not in qs:
            continue
        out.append(
            {
                "pair_id": f"{q}:{a}|{b}",
                "turns": [qs[q]],
                "model_a": a,
                "model_b": b,
                "answer_a": texts[(q, a)],
                "answer_b": texts[(q, b)],
                "label": label,
                "votes": total,
                "agreeing": count,
            }
        )
    if n < len(out):
        keep = np.sort(np.random.default_rng(seed).choice(len(out), size=n, replace=False))
        out = [out[i] for i in keep]
    return out


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None
