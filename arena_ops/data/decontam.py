"""Decontamination: training prompts that match a test item — semantically (embedding top-k) or by n-gram overlap.

The paper removes each test item's top-5 semantic matches (gte-large). Here every test item's ``top_k`` nearest
training prompts are removed when their cosine similarity reaches ``min_similarity`` (0 reproduces the paper's
rule literally; the default keeps unrelated prompts on small corpora), plus any training prompt sharing a word
``ngram``-gram with a test item. Each removal names the test item it matched.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from arena_ops.data.clean import REMOVED_SCHEMA, split_rows

_WORD = re.compile(r"\w+", re.UNICODE)

Embedder = Callable[[list[str]], np.ndarray]


def conversation_text(table: pa.Table) -> list[str]:
    return ["\n".join(t) for t in table["turns"].to_pylist()]


def decontaminate(
    train: pa.Table,
    test: pa.Table,
    embed: Embedder | None,
    top_k: int = 5,
    min_similarity: float = 0.75,
    ngram: int | None = 10,
) -> tuple[pa.Table, pa.Table]:
    """``(kept, removed)``; ``embed=None`` skips the semantic check, ``ngram=None`` the n-gram check."""
    if train.num_rows == 0 or test.num_rows == 0:
        return train, REMOVED_SCHEMA.empty_table()
    test_ids = test["prompt_id"].to_pylist()
    hits: dict[int, tuple[str, str]] = {}
    exact = set(test_ids)
    for i, pid in enumerate(train["prompt_id"].to_pylist()):
        if pid in exact:
            hits[i] = ("identical to a test item", pid)
    if embed is not None and top_k > 0:
        for i, (j, sim) in semantic_matches(
            embed(conversation_text(train)), embed(conversation_text(test)), top_k, min_similarity
        ).items():
            hits.setdefault(i, (f"embedding cosine {sim:.3f} with a test item (top-{top_k})", test_ids[j]))
    if ngram:
        for i, j in ngram_matches(conversation_text(train), conversation_text(test), ngram).items():
            hits.setdefault(i, (f"shares a {ngram}-word sequence with a test item", test_ids[j]))
    keep = [i for i in range(train.num_rows) if i not in hits]
    gone = [(i, reason, tid) for i, (reason, tid) in sorted(hits.items())]
    return split_rows(train, keep, gone, "decontam")


def semantic_matches(
    train_vecs: np.ndarray, test_vecs: np.ndarray, top_k: int, min_similarity: float, block: int = 4096
) -> dict[int, tuple[int, float]]:
    """``{train row: (test row, cosine)}`` for each test item's top-k neighbours at or above ``min_similarity``.

    Blocked over the training rows so memory stays ``block × n_test``.
    """
    k = min(top_k, train_vecs.shape[0])
    best_sim = np.full((test_vecs.shape[0], k), -np.inf, dtype=np.float32)
    best_idx = np.zeros((test_vecs.shape[0], k), dtype=np.int64)
    for start in range(0, train_vecs.shape[0], block):
        sims = test_vecs @ train_vecs[start : start + block].T  # (n_test, block)
        sim_all = np.concatenate([best_sim, sims], axis=1)
        idx_all = np.concatenate([best_idx, np.arange(start, start + sims.shape[1])[None, :].repeat(len(sims), 0)], 1)
        top = np.argpartition(-sim_all, k - 1, axis=1)[:, :k]
        best_sim = np.take_along_axis(sim_all, top, 1)
        best_idx = np.take_along_axis(idx_all, top, 1)
    out: dict[int, tuple[int, float]] = {}
    for j in range(best_sim.shape[0]):
        for sim, i in zip(best_sim[j], best_idx[j], strict=True):
            if sim >= min_similarity and (int(i) not in out or sim > out[int(i)][1]):
                out[int(i)] = (j, float(sim))
    return out


def ngram_matches(train: list[str], test: list[str], n: int) -> dict[int, int]:
    """``{train row: test row}`` for training texts sharing any word n-gram with a test text."""
    index: dict[tuple[str, ...], int] = {}
    for j, text in enumerate(test):
        for g in _ngrams(text, n):
            index.setdefault(g, j)
    out = {}
    for i, text in enumerate(train):
        for g in _ngrams(text, n):
            if g in index:
                out[i] = index[g]
                break
    return out


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.casefold())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
