"""WizardArena offline test sets: Diverse (K-Means coverage), Hard (judge-rated difficulty), Mix = both.

Diverse: embed the candidates, K-Means into ``k`` clusters, ``m`` seeded samples per cluster (paper: 500 × 2).
Hard: ``n`` other candidates per cluster (paper: 20), the rater (``testset.rater``; default the battle judge, with a
warning) rates each one's difficulty 0–10 with the versioned template ``data.difficulty_template``; the top ``K`` are
kept (paper: 1,000). Ratings the rater could not give are stored with their raw text and counted, never guessed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from arena_ops.config import ArenaConfig, ModelSpec, RecordedSource, ServedSource
from arena_ops.errors import ConfigError
from arena_ops.serving.client import ChatClient, RequestRejected, StructuredOutput

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates"
DIFFICULTY_REGEX = r'\{"difficulty": (10|[0-9])\}'
_DIFFICULTY = re.compile(r'"?difficulty"?\s*[:=]\s*"?(\d+(?:\.\d+)?)', re.IGNORECASE)


def cluster(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K-Means labels (``k`` capped at the number of rows)."""
    from sklearn.cluster import KMeans

    k = min(k, len(vectors))
    return KMeans(n_clusters=k, random_state=seed, n_init=4).fit_predict(vectors)


def per_cluster_sample(labels: np.ndarray, m: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Row indices: up to ``m`` seeded picks from every cluster (all of a cluster smaller than ``m``), sorted."""
    rng = np.random.default_rng(seed)
    allowed = np.ones(len(labels), dtype=bool) if exclude is None else ~exclude
    picks = []
    for c in np.unique(labels):
        members = np.flatnonzero((labels == c) & allowed)
        if len(members):
            picks.append(rng.choice(members, size=min(m, len(members)), replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


@dataclass
class Rating:
    difficulty: float | None
    raw: str | None
    error: str | None


def parse_difficulty(text: str) -> float:
    hits = {float(x) for x in _DIFFICULTY.findall(text)}
    if len(hits) != 1:
        raise ValueError(f"expected one difficulty 0–10, found {sorted(hits) or 'none'}")
    value = hits.pop()
    if not 0 <= value <= 10:
        raise ValueError(f"difficulty {value:g} outside 0–10")
    return value


def load_difficulty_template(name: str) -> dict[str, str]:
    path = Path(name) if Path(name).suffix else TEMPLATE_DIR / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError:
        raise ConfigError(f"data.difficulty_template {name!r}: no file {path}") from None
    return data


def rater(cfg: ArenaConfig) -> tuple[ModelSpec, str | None]:
    """The model that rates difficulty, and a warning when it is the battle judge (the paper uses another)."""
    if cfg.testset.rater is not None:
        return cfg.testset.rater, None
    judge = cfg.models.judge
    if isinstance(judge.source, RecordedSource):
        return judge, (
            f"testset.rater is not set and the judge {judge.name!r} is a recorded model, which cannot rate difficulty: "
            "the Hard set stays empty (set testset.rater)"
        )
    return judge, (
        f"testset.rater is not set: the battle judge {judge.name!r} rated the Hard candidates' difficulty (the paper "
        "uses a separate, stronger rater; set testset.rater)"
    )


async def rate_difficulty(cfg: ArenaConfig, items: list[dict[str, Any]]) -> list[Rating]:
    """The rater's difficulty of each item (``prompt_id``, ``source_id``, ``text``): asked of a served (structured
    output) or external model, or read from a recorded one's response to the item."""
    tpl = load_difficulty_template(cfg.data.difficulty_template)
    spec, _ = rater(cfg)
    if isinstance(spec.source, RecordedSource) and cfg.testset.rater is None:  # e.g. the CPU configs' verifier setup
        reason = f"judge {spec.name!r} is a recorded model: it cannot rate difficulty (Hard stays empty)"
        return [Rating(None, None, reason) for _ in items]
    if isinstance(spec.source, RecordedSource):  # a rater's recorded verdicts ({"difficulty": N} per prompt)
        return _recorded_ratings(spec, items)
    served = isinstance(spec.source, ServedSource)
    structured = StructuredOutput(regex=DIFFICULTY_REGEX) if served else None
    sampling = spec.sampling.model_copy(update={"max_tokens": min(spec.sampling.max_tokens, 32)})
    async with ChatClient.for_model(
        spec,
        cfg.serving,
        concurrency=cfg.battle.concurrency,
        timeout_s=cfg.battle.request_timeout_s,
        max_retries=cfg.battle.max_retries,
    ) as client:
        if served:
            await client.ready(cfg.serving.deploy_timeout_s)

        async def one(text: str) -> Rating:
            tag = hashlib.sha256(text.encode()).hexdigest()[:12]
            safe = text.replace("<<<", "‹‹‹").replace(">>>", "›››")
            messages = [
                {"role": "system", "content": tpl["system"].format(tag=tag)},
                {"role": "user", "content": tpl["user"].format(tag=tag, instruction=safe)},
            ]
            try:
                res = await client.chat(messages, sampling, structured=structured)
            except RequestRejected as exc:
                return Rating(None, None, str(exc))
            return _parsed(res.text)

        return list(await asyncio.gather(*(one(item["text"]) for item in items)))


def _parsed(text: str) -> Rating:
    try:
        return Rating(parse_difficulty(text), text, None)
    except ValueError as exc:
        return Rating(None, text, str(exc))


def _recorded_ratings(spec: ModelSpec, items: list[dict[str, Any]]) -> list[Rating]:
    """A recorded rater's response to each item, looked up by prompt id, then by the source's own id."""
    from arena_ops.serving.recorded import RecordedResponses

    assert isinstance(spec.source, RecordedSource)
    recorded = RecordedResponses(spec.source.path, spec.name)
    out = []
    for item in items:
        pid = next((p for p in (item["prompt_id"], item.get("source_id")) if p and recorded.has(str(p))), None)
        if pid is None:
            out.append(Rating(None, None, f"{spec.source.path} has no rating for prompt {item['prompt_id']}"))
        else:
            out.append(_parsed(recorded.response(str(pid))))
    return out


def build_testsets(
    cfg: ArenaConfig,
    candidates: pa.Table,
    embed: Callable[[list[str]], np.ndarray],
    rate: Callable[[list[dict[str, Any]]], list[Rating]],
) -> dict[str, pa.Table]:
    """``{"diverse", "hard", "hard_candidates", "mix"}`` tables (conversation rows + cluster, difficulty)."""
    d = cfg.data
    texts = ["\n".join(t) for t in candidates["turns"].to_pylist()]
    labels = cluster(embed(texts), d.testset_clusters, d.testset_seed)
    with_cluster = candidates.append_column("cluster", pa.array(labels, pa.int32()))
    diverse_rows = per_cluster_sample(labels, d.diverse_per_cluster, d.testset_seed)
    taken = np.zeros(len(labels), dtype=bool)
    taken[diverse_rows] = True
    hard_rows = per_cluster_sample(labels, d.hard_candidates_per_cluster, d.testset_seed + 1, exclude=taken)
    pids, sources = candidates["prompt_id"].to_pylist(), _optional(candidates, "source_id")
    ratings = rate([{"prompt_id": pids[i], "source_id": sources[i], "text": texts[i]} for i in hard_rows])
    hard_candidates = with_cluster.take(hard_rows)
    hard_candidates = hard_candidates.append_column(
        "difficulty", pa.array([r.difficulty for r in ratings], pa.float64())
    ).append_column("rating_raw", pa.array([r.raw for r in ratings], pa.string()))
    hard_candidates = hard_candidates.append_column("rating_error", pa.array([r.error for r in ratings], pa.string()))
    rated = [i for i, r in enumerate(ratings) if r.difficulty is not None]
    # Highest difficulty first; ties broken by prompt_id so the choice is deterministic.
    ids = hard_candidates["prompt_id"].to_pylist()
    order = sorted(rated, key=lambda i: (-ratings[i].difficulty, ids[i]))[: d.hard_size]
    # Typed indices: an empty Python list would infer a null-typed array that `take` refuses (nothing was rated).
    hard = hard_candidates.take(pa.array(sorted(order), pa.int64())).drop_columns(["rating_raw", "rating_error"])
    diverse = with_cluster.take(diverse_rows)
    mix = pa.concat_tables(
        [
            diverse.append_column("subset", pa.array(["diverse"] * diverse.num_rows, pa.string())),
            hard.drop_columns(["difficulty"]).append_column("subset", pa.array(["hard"] * hard.num_rows, pa.string())),
        ]
    )
    return {"diverse": diverse, "hard": hard, "hard_candidates": hard_candidates, "mix": mix}


def _optional(table: pa.Table, column: str) -> list[Any]:
    return table[column].to_pylist() if column in table.column_names else [None] * table.num_rows


def testset_fingerprint(ids: set[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()[:16]


def summary(tables: dict[str, pa.Table]) -> dict[str, Any]:
    cands = tables["hard_candidates"]
    return {
        "diverse": tables["diverse"].num_rows,
        "hard": tables["hard"].num_rows,
        "hard_candidates": cands.num_rows,
        "unrated": cands["difficulty"].null_count,
        "mix": tables["mix"].num_rows,
        "clusters": len(set(tables["diverse"]["cluster"].to_pylist())),
    }
