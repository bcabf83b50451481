"""Decontamination (real MiniLM embeddings + n-grams) and test-set selection (K-Means coverage, hardest kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from arena_ops.config import load_config
from arena_ops.data.decontam import decontaminate, semantic_matches
from arena_ops.data.embed import embed
from arena_ops.data.ingest import CONVERSATION_SCHEMA, prompt_id
from arena_ops.data.testset import Rating, build_testsets, parse_difficulty, per_cluster_sample

REPO = Path(__file__).resolve().parents[3]


def _table(texts: list[str]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"prompt_id": prompt_id([t]), "turns": [t], "source": "t"} for t in texts], schema=CONVERSATION_SCHEMA
    )


def test_paraphrased_test_item_is_removed_and_unrelated_kept() -> None:
    test = _table(["What are the main causes of the French Revolution, and how did they interact?"])
    train = _table(
        [
            "Explain the principal reasons the French Revolution broke out and how these causes were connected.",
            "Write a Python function that reverses a linked list in place.",
            "Give me three tips for growing tomatoes on a balcony.",
            "List the ingredients for a classic margherita pizza.",
        ]
    )
    kept, removed = decontaminate(train, test, embed=embed, top_k=5, min_similarity=0.75, ngram=None)
    assert removed["prompt_id"].to_pylist() == [train["prompt_id"][0].as_py()]
    assert removed["matched_id"].to_pylist() == [test["prompt_id"][0].as_py()]
    assert "cosine" in removed["reason"][0].as_py() and kept.num_rows == 3


def test_ngram_overlap_is_removed_without_embeddings() -> None:
    test = _table(["Please summarise the following passage about the history of the printing press in Europe."])
    train = _table(
        [
            "Translate: summarise the following passage about the history of the printing press in Europe, briefly",
            "Summarise this passage about the history of rockets.",
        ]
    )
    kept, removed = decontaminate(train, test, embed=None, ngram=8)
    assert removed.num_rows == 1 and "8-word sequence" in removed["reason"][0].as_py()
    assert kept["turns"].to_pylist() == [["Summarise this passage about the history of rockets."]]


def test_semantic_matches_are_each_test_items_top_k() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(1000, 16)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test = train[[3, 500]] + 0.01
    hits = semantic_matches(train, test, top_k=2, min_similarity=-1.0, block=128)  # blocks cross the data
    expect = {int(i) for q in test for i in np.argsort(-(train @ q))[:2]}
    assert set(hits) == expect and {3, 500} <= set(hits)


def test_parse_difficulty() -> None:
    assert parse_difficulty('{"difficulty": 7}') == 7
    assert parse_difficulty("Difficulty: 3") == 3
    for bad in ("no idea", '{"difficulty": 12}', "difficulty: 3, difficulty: 5"):
        with pytest.raises(ValueError):
            parse_difficulty(bad)


def test_per_cluster_sample_covers_every_cluster() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2, 2, 2])
    picks = per_cluster_sample(labels, 2, seed=0)
    assert sorted(set(labels[picks])) == [0, 1, 2] and len(picks) == 5  # cluster 1 has a single member
    excl = np.zeros(8, dtype=bool)
    excl[picks] = True
    again = per_cluster_sample(labels, 2, seed=1, exclude=excl)
    assert not set(again) & set(picks)


def test_testsets_diverse_covers_clusters_and_hard_keeps_the_hardest(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs/tiny.yaml", {"storage.root": f"file://{tmp_path}"})
    topics = ["cooking pasta", "python programming", "ancient rome", "tax law", "guitar chords", "orbital mechanics"]
    texts = [f"Question {i} about {topics[i % 6]}: explain one idea of {topics[i % 6]} in detail." for i in range(60)]
    rated: list[str] = []

    def rate(items: list[dict]) -> list[Rating]:  # deterministic stand-in for the rater
        rated.extend(item["text"] for item in items)
        return [
            Rating(None, "?", "unparseable") if i == 0 else Rating(float(len(item["text"]) % 11), "{}", None)
            for i, item in enumerate(items)
        ]

    tables = build_testsets(cfg, _table(texts), embed, rate)
    k = cfg.data.testset_clusters
    assert len(set(tables["diverse"]["cluster"].to_pylist())) == k  # every cluster represented
    assert tables["diverse"].num_rows == k * cfg.data.diverse_per_cluster
    cands = tables["hard_candidates"].to_pylist()
    assert len(cands) == k * cfg.data.hard_candidates_per_cluster == len(rated)
    valid = sorted((c for c in cands if c["difficulty"] is not None), key=lambda c: (-c["difficulty"], c["prompt_id"]))
    assert set(tables["hard"]["prompt_id"].to_pylist()) == {c["prompt_id"] for c in valid[: cfg.data.hard_size]}
    assert sum(c["difficulty"] is None for c in cands) == 1  # stored with its error, never guessed
    assert not set(tables["diverse"]["prompt_id"].to_pylist()) & {c["prompt_id"] for c in cands}
    assert tables["mix"].num_rows == tables["diverse"].num_rows + tables["hard"].num_rows


def test_a_judge_that_rates_nothing_leaves_hard_empty_and_mix_diverse(tmp_path: Path) -> None:
    """E.g. a recorded judge (the CPU configs' verifier setup): Hard is empty, Mix is Diverse, nothing fails."""
    import asyncio

    from arena_ops.data.testset import rate_difficulty

    cfg = load_config(REPO / "configs/tiny-rounds.yaml", {"storage.root": f"file://{tmp_path}"})
    texts = [f"What is {i} plus {i}? Answer with the number only." for i in range(40)]
    ratings = asyncio.run(rate_difficulty(cfg, [{"prompt_id": t, "text": t} for t in texts[:3]]))
    assert [r.difficulty for r in ratings] == [None] * 3 and "recorded model" in (ratings[0].error or "")
    tables = build_testsets(cfg, _table(texts), embed, lambda xs: asyncio.run(rate_difficulty(cfg, xs)))
    assert tables["hard"].num_rows == 0 and tables["hard_candidates"]["difficulty"].null_count > 0
    assert tables["mix"].num_rows == tables["diverse"].num_rows > 0


def test_the_hard_half_is_rated_by_the_configured_rater(tmp_path: Path) -> None:
    """``testset.rater`` (here a recorded rater: its verdict per prompt id) decides Hard, not the battle judge; the
    report names the rater and its template, and warns only when the judge stood in."""
    import json

    from arena_ops.data.pipeline import ingest_stage, testset_stage
    from arena_ops.store import ArtifactStore

    topics = ["cooking pasta", "python programming", "ancient rome", "tax law", "guitar chords", "orbital mechanics"]
    rows = [{"id": f"q{i}", "instruction": f"Question {i} about {topics[i % 6]}: explain {topics[i % 6]} in depth."}
            for i in range(60)]  # fmt: skip
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    verdicts = {f"q{i}": (i * 7) % 11 for i in range(60)}  # the rater's difficulty of each prompt, by source id
    (tmp_path / "rater.jsonl").write_text(
        "".join(
            json.dumps({"prompt_id": k, "response": json.dumps({"difficulty": v})}) + "\n" for k, v in verdicts.items()
        )
    )
    overrides = {
        "storage.root": f"file://{tmp_path}/store",
        "data.sources": [str(tmp_path / "corpus.jsonl")],
        "testset.rater": {"name": "gpt-4-rater", "source": {"kind": "recorded", "path": str(tmp_path / "rater.jsonl")}},
    }
    cfg = load_config(REPO / "configs/tiny-rounds.yaml", overrides)
    store = ArtifactStore.from_config(cfg.storage)
    ingest_stage(cfg, store)
    counts = testset_stage(cfg, store)
    assert counts["rater"] == "gpt-4-rater" and counts["rater_template"] == "difficulty-v1" and not counts["warnings"]
    cands = store.read_artifact_table(store.dataset_key(cfg.flywheel, "testset-hard"), "candidates.parquet").to_pylist()
    assert cands and all(c["difficulty"] == verdicts[c["source_id"]] for c in cands)
    hardest = sorted(cands, key=lambda c: (-c["difficulty"], c["prompt_id"]))[: cfg.data.hard_size]
    hard = store.read_artifact_table(store.dataset_key(cfg.flywheel, "testset-hard"))
    assert set(hard["prompt_id"].to_pylist()) == {c["prompt_id"] for c in hardest}

    default = testset_stage(load_config(REPO / "configs/tiny-rounds.yaml", {**overrides, "testset.rater": None}), store)
    assert default["rater"] == "solver" and "testset.rater is not set" in default["warnings"][0]
    assert "recorded model, which cannot rate" in default["warnings"][0]
