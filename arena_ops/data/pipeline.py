"""The data stages over the artifact store: ingest → clean → shard, each an idempotent committed artifact.

Layout (iteration-independent)::

    {flywheel}/data/corpus/     data.parquet (canonical conversations), quarantine.parquet
    {flywheel}/data/clean/      data.parquet, removed.parquet (step, reason, matched id)
    {flywheel}/data/shard-007/  data.parquet — one per shard, D0…DN-1

Rerunning a stage rewrites the same content (prompt ids are content hashes and the shard split is seeded), so a
retried Airflow task gives identical artifacts.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from arena_ops import layout
from arena_ops.config import ArenaConfig
from arena_ops.data.clean import clean
from arena_ops.data.ingest import ingest
from arena_ops.data.testset import testset_fingerprint
from arena_ops.errors import ArtifactNotFoundError, DataError
from arena_ops.layout import shard_name
from arena_ops.store import ArtifactStore

log = logging.getLogger(__name__)

CORPUS, CLEAN = "corpus", "clean"


def corpus_sources(cfg: ArenaConfig) -> tuple[list[str], str]:
    """What the corpus is read from, and its config key: data.sources, or under mode partitioned (where the
    corpus is only the test-set pool) data.testset_sources."""
    if cfg.data.mode == "partitioned":
        if not cfg.data.testset_sources:
            raise DataError(
                f"{cfg.flywheel}: data.mode is partitioned and data.testset_sources is empty: the test sets are built "
                "from those files (the dated sources feed the rounds)"
            )
        return cfg.data.testset_sources, "data.testset_sources"
    return cfg.data.sources, "data.sources"


def ingest_stage(cfg: ArenaConfig, store: ArtifactStore) -> dict[str, Any]:
    sources, key = corpus_sources(cfg)
    result = ingest(sources, cfg.storage, key)
    with store.artifact_at(layout.dataset(cfg.flywheel, CORPUS), meta=result.counts) as w:
        w.write_table("data.parquet", result.table)
        w.write_table("quarantine.parquet", result.quarantine)
    if result.table.num_rows == 0:  # written (the quarantine is the evidence), then refused
        raise DataError(f"{key}: no instruction could be read: {_why_empty(result.quarantine, w.uri)}")
    return {"uri": w.uri, **result.counts}


def _why_empty(quarantine: pa.Table, uri: str) -> str:
    if quarantine.num_rows == 0:
        return "the sources hold no records"
    reasons = Counter(r[:120] for r in quarantine["reason"].to_pylist())
    common = "; ".join(f"{n}× {why}" for why, n in reasons.most_common(3))
    return f"all {quarantine.num_rows} records were quarantined ({common}); see {uri}/quarantine.parquet"


def clean_stage(cfg: ArenaConfig, store: ArtifactStore) -> dict[str, Any]:
    corpus = _read(store, cfg.flywheel, CORPUS, "arena data ingest")
    result = clean(corpus, cfg.data)
    with store.artifact_at(layout.dataset(cfg.flywheel, CLEAN), meta=result.counts) as w:
        w.write_table("data.parquet", result.table)
        w.write_table("removed.parquet", result.removed)
    if result.table.num_rows == 0:
        raise DataError(
            f"cleaning removed all {corpus.num_rows} instructions ({result.counts}); see {w.uri}/removed.parquet — "
            "check the data.* filters (min_instruction_chars, languages, …)"
        )
    return {"uri": w.uri, **result.counts}


def testset_stage(cfg: ArenaConfig, store: ArtifactStore) -> dict[str, Any]:
    """Build Diverse, Hard and Mix from the clean corpus (the judge rates difficulty; it must be reachable)."""
    import asyncio

    from arena_ops.data.embed import embedder
    from arena_ops.data.testset import build_testsets, load_difficulty_template, rate_difficulty, rater, summary

    ensure_clean(cfg, store)
    candidates = _read(store, cfg.flywheel, CLEAN, "arena data clean")
    tables = build_testsets(
        cfg,
        candidates,
        embed=embedder(cfg),
        rate=lambda items: asyncio.run(rate_difficulty(cfg, items)),
    )
    spec, warning = rater(cfg)
    counts = {
        **summary(tables),
        "rater": spec.name,
        "rater_template": load_difficulty_template(cfg.data.difficulty_template).get("version"),
        "warnings": [warning] if warning else [],
    }
    if warning:
        log.warning("%s", warning)
    for name in ("diverse", "hard", "mix"):
        with store.artifact_at(layout.dataset(cfg.flywheel, f"testset-{name}"), meta=counts) as w:
            w.write_table("data.parquet", tables[name])
            if name == "hard":
                w.write_table("candidates.parquet", tables["hard_candidates"])
    return counts


def shard_stage(cfg: ArenaConfig, store: ArtifactStore, exclude: set[str] | None = None) -> dict[str, Any]:
    """Split the clean table into ``data.num_shards`` seeded parts.

    Test-set items (``exclude``, by default every committed test set) never reach a shard, and the rest is
    decontaminated against them (embedding top-k + n-gram overlap); removals go to ``{flywheel}/data/decontam``.
    """
    table = _read(store, cfg.flywheel, CLEAN, "arena data clean")
    if exclude is None:
        exclude = testset_ids(cfg, store)
    fingerprint = _fingerprint(cfg, exclude)
    removed = 0
    if exclude or cfg.data.decontaminate_against:
        table, gone = _decontaminate(cfg, store, table, exclude)
        removed = gone.num_rows
        with store.artifact_at(layout.dataset(cfg.flywheel, "decontam"), meta={"removed": removed}) as w:
            w.write_table("removed.parquet", gone)
    parts = split(table, cfg.data.num_shards, cfg.data.shard_seed, exclude)
    for k, part in enumerate(parts):
        meta = {
            "shard": k,
            "num_shards": len(parts),
            "seed": cfg.data.shard_seed,
            "rows": part.num_rows,
            "testset_fingerprint": fingerprint,
        }
        with store.artifact_at(layout.dataset(cfg.flywheel, shard_name(k)), meta=meta) as w:
            w.write_table("data.parquet", part)
    sizes = [p.num_rows for p in parts]
    log.info("wrote %d shards of sizes %s", len(parts), sizes)
    return {"shards": len(parts), "sizes": sizes, "test_items": table.num_rows - sum(sizes), "decontam": removed}


def _decontaminate(cfg: ArenaConfig, store: ArtifactStore, table: pa.Table, test_ids: set[str]):  # noqa: ANN202
    """The corpus with its test items: the rest decontaminated against them (and the benchmark prompts)."""
    is_test = np.array([pid in test_ids for pid in table["prompt_id"].to_pylist()], dtype=bool)
    test, train = table.filter(pa.array(is_test)), table.filter(pa.array(~is_test))
    kept, gone = _against(cfg, train, [test])
    return pa.concat_tables([kept, test]), gone


def decontaminate_rows(cfg: ArenaConfig, store: ArtifactStore, table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Remove rows matching a committed test-set item or a benchmark prompt (``data.decontaminate_against``) from a
    table that holds no test items itself (a date partition): exact id, embedding top-k and n-gram matches."""
    schema = table.schema
    tests = [
        store.read_artifact_table(p).select(schema.names).cast(schema)
        for p in (layout.dataset(cfg.flywheel, n) for n in ("testset-diverse", "testset-hard"))
        if store.is_committed(p)
    ]
    return _against(cfg, table, tests)


def _against(cfg: ArenaConfig, train: pa.Table, tests: list[pa.Table]) -> tuple[pa.Table, pa.Table]:
    """``train`` decontaminated against the test rows and the public benchmarks' prompts (MT-Bench, …)."""
    from arena_ops.data.clean import REMOVED_SCHEMA
    from arena_ops.data.decontam import decontaminate
    from arena_ops.data.embed import embedder

    references = list(tests)
    if cfg.data.decontaminate_against:
        bench = ingest(cfg.data.decontaminate_against, cfg.storage, "data.decontaminate_against")
        references.append(bench.table.select(train.schema.names).cast(train.schema))
    refs = pa.concat_tables(references) if references else None
    if refs is None or refs.num_rows == 0 or train.num_rows == 0:
        return train, REMOVED_SCHEMA.empty_table()
    return decontaminate(
        train,
        refs,
        embed=embedder(cfg) if cfg.data.decontam_top_k else None,
        top_k=cfg.data.decontam_top_k,
        min_similarity=cfg.data.decontam_min_similarity,
        ngram=cfg.data.decontam_ngram,
    )


def split(table: pa.Table, n: int, seed: int, exclude: set[str]) -> list[pa.Table]:
    """Deterministic: seeded permutation of the sorted ids, sizes equal ±1, each shard sorted by prompt_id.

    The input order does not matter, so re-ingesting the same files in another order gives identical shards.
    """
    ids = np.asarray(table["prompt_id"].to_pylist(), dtype=object)
    keep = np.flatnonzero([pid not in exclude for pid in ids])
    order = keep[np.argsort(ids[keep], kind="stable")]
    perm = order[np.random.default_rng(seed).permutation(len(order))]
    return [table.take(chunk[np.argsort(ids[chunk], kind="stable")]) for chunk in np.array_split(perm, n)]


def ensure_shards(cfg: ArenaConfig, store: ArtifactStore) -> list[str]:
    """Build whatever of corpus → clean → shards is missing; returns the shard prefixes. Cheap when all exist.

    Under data.mode partitioned there are no shards (each day is its own, see :mod:`arena_ops.data.partitions`)."""
    if cfg.data.mode == "partitioned":
        raise DataError(
            f"{cfg.flywheel}: data.mode is partitioned: prepare a day with `arena data prepare --ds YYYY-MM-DD`"
        )
    prefixes = [layout.dataset(cfg.flywheel, shard_name(k)) for k in range(cfg.data.num_shards)]
    exclude = testset_ids(cfg, store)
    fingerprint = _fingerprint(cfg, exclude)
    if all(store.is_committed(p) for p in prefixes):
        if store.manifest(prefixes[0]).meta.get("testset_fingerprint") == fingerprint:
            return prefixes
        log.info("test sets or benchmark prompts changed since the shards were cut: re-sharding")
    ensure_clean(cfg, store)
    shard_stage(cfg, store, exclude=exclude)
    return prefixes


def ensure_clean(cfg: ArenaConfig, store: ArtifactStore) -> None:
    """Ingest and clean, whatever of the two is missing."""
    corpus, cleaned = layout.dataset(cfg.flywheel, CORPUS), layout.dataset(cfg.flywheel, CLEAN)
    if not store.is_committed(corpus) or store.manifest(corpus).meta.get("rows") == 0:  # empty: the sources again
        log.info("building the corpus from data.sources")
        ingest_stage(cfg, store)
    if not store.is_committed(cleaned) or store.manifest(cleaned).meta.get("kept") == 0:
        clean_stage(cfg, store)


def _fingerprint(cfg: ArenaConfig, exclude: set[str]) -> str:
    """What the shards were cut against: the test-set items and the benchmark prompt files."""
    return testset_fingerprint(exclude | {f"decontaminate_against:{p}" for p in cfg.data.decontaminate_against})


def read_shard(cfg: ArenaConfig, store: ArtifactStore, k: int) -> pa.Table:
    if not 0 <= k < cfg.data.num_shards:
        n = cfg.data.num_shards
        raise DataError(f"shard {k} out of range: data.num_shards is {n} (shards 0…{n - 1})")
    return _read(store, cfg.flywheel, shard_name(k), "arena data shard")


def read_step(cfg: ArenaConfig, store: ArtifactStore, step: Any) -> pa.Table:
    """The prompts a round step battles on: its corpus shard, or its slice of its day's partition."""
    if step.partition is not None:
        from arena_ops.data.partitions import read_slice

        return read_slice(cfg, store, step.partition, step.slice)
    return read_shard(cfg, store, step.slice)


def testset_ids(cfg: ArenaConfig, store: ArtifactStore) -> set[str]:
    """Prompt ids of every committed test set of this flywheel (excluded from training shards)."""
    ids: set[str] = set()
    for name in ("testset-diverse", "testset-hard"):  # Mix is their union
        prefix = layout.dataset(cfg.flywheel, name)
        if store.is_committed(prefix):
            ids.update(store.read_artifact_table(prefix)["prompt_id"].to_pylist())
    return ids


def _read(store: ArtifactStore, flywheel: str, name: str, how: str) -> pa.Table:
    prefix = layout.dataset(flywheel, name)
    try:
        return store.read_artifact_table(prefix)
    except ArtifactNotFoundError as exc:
        raise DataError(f"{exc}; build it first with `{how}`") from None
