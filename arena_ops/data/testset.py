"""WizardArena offline test sets: Diverse (K-Means coverage), Hard (judge-rated difficulty), Mix = both.

Diverse: embed the candidates, K-Means into ``k`` clusters, ``m`` seeded samples per cluster (paper: 500 × 2).
Hard: ``n`` other candidates per cluster (paper: 20), the judge rates each one's difficulty 0–10, the top ``K`` are
kept (paper: 1,000). Ratings the judge could not give are stored with their raw text and counted, never guessed.
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

from arena_ops.config import ArenaConfig, RecordedSource, ServedSource
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


async def rate_difficulty(cfg: ArenaConfig, instructions: list[str]) -> list[Rating]:
    """The configured judge rates each instruction's difficulty (structured output when served by vLLM)."""
    tpl = load_difficulty_template(cfg.data.difficulty_template)
    spec = cfg.models.judge
    if isinstance(spec.source, RecordedSource):  # e.g. the CPU configs' verifier setup: no model to ask
        reason = f"judge {spec.name!r} is a recorded model: it cannot rate difficulty (Hard stays empty)"
        return [Rating(None, None, reason) for _ in instructions]
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
            try:
                return Rating(parse_difficulty(res.text), res.text, None)
            except ValueError as exc:
                return Rating(None, res.text, str(exc))

        return list(await asyncio.gather(*(one(t) for t in instructions)))


def build_testsets(
    cfg: ArenaConfig,
    candidates: pa.Table,
    embed: Callable[[list[str]], np.ndarray],
    rate: Callable[[list[str]], list[Rating]],
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
    ratings = rate([texts[i] for i in hard_rows])
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
