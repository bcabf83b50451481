"""Date partitions (``data.mode: partitioned``): each logical date battles the instructions that arrived that day.

A source names its day with ``{ds}`` (``s3://prompts/ds={ds}/*.jsonl``). Preparing day ``ds`` reads that day's files,
cleans them (:func:`arena_ops.data.clean.clean`), removes what an earlier day already brought — the same instruction,
or a MinHash near-duplicate of one — and what matches a test set or a benchmark list, then cuts the rest into the
schedule's slices (three under the paper schedule, one under compact). One committed artifact a day::

    {flywheel}/data/ds=2026-12-01/   data.parquet        kept rows, each with its ``slice``
                                     quarantine.parquet  rows that could not be read (file, row, reason)
                                     removed.parquet     prompt_id, step, reason, matched id
                                     seen.parquet        the day's part of the seen-index: kept prompt ids and
                                                         their MinHash signatures

The seen-index is the union of every earlier day's ``seen.parquet``: a new day adds its own part and never rewrites
another's, so the index grows with the data instead of being rebuilt from every earlier day's text.

A day is prepared once. Its manifest records a fingerprint of what went in (the files' names, sizes and times, the
data settings, the test sets and the earlier days it was checked against): a rerun or a backfill with the same inputs
reuses it; changed inputs prepare it anew until a round has battled on it, after which it is kept as it is (a round's
data never changes under it). A day whose files are missing, empty, or too few for the schedule
(``data.min_rows_per_slice``) raises :class:`PartitionUnavailableError` with the reason, and nothing is written: the
day can still be prepared once its data arrives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from arena_ops import layout
from arena_ops.config import ArenaConfig
from arena_ops.data.clean import REMOVED_SCHEMA, clean, split_rows
from arena_ops.data.ingest import ingest_files
from arena_ops.data.sources import SourceFile, matches
from arena_ops.errors import DataError, PartitionUnavailableError
from arena_ops.store import ArtifactStore

log = logging.getLogger(__name__)

_DS = re.compile(r"^ds=(\d{4}-\d{2}-\d{2})$")
SEEN = "seen.parquet"


def partition_name(ds: str) -> str:
    return f"ds={ds}"


def check_ds(ds: str) -> str:
    try:
        return date.fromisoformat(ds).isoformat()
    except (TypeError, ValueError):
        raise DataError(f"partition date {ds!r}: expected YYYY-MM-DD") from None


def slices_per_day(cfg: ArenaConfig) -> int:
    return 1 if cfg.training.schedule == "compact" else cfg.training.slices_per_iteration


def prefix(cfg: ArenaConfig, ds: str) -> str:
    return layout.dataset(cfg.flywheel, partition_name(ds))


def prepared(store: ArtifactStore, flywheel: str) -> list[str]:
    """Dates of the committed partitions, oldest first."""
    out = []
    for name in store.list(f"{flywheel}/data/"):
        m = _DS.match(name.rstrip("/").rsplit("/", 1)[-1])
        if m and store.is_committed(layout.dataset(flywheel, name.rstrip("/").rsplit("/", 1)[-1])):
            out.append(m.group(1))
    return sorted(out)


def report(store: ArtifactStore, cfg: ArenaConfig, ds: str) -> dict[str, Any]:
    """The data report of a prepared day (its manifest's meta)."""
    return store.manifest(prefix(cfg, ds)).meta


def reports(cfg: ArenaConfig, store: ArtifactStore) -> list[dict[str, Any]]:
    return [report(store, cfg, ds) for ds in prepared(store, cfg.flywheel)]


def read_slice(cfg: ArenaConfig, store: ArtifactStore, ds: str, k: int) -> pa.Table:
    import pyarrow.compute as pc

    table = store.read_artifact_table(prefix(cfg, ds))
    return table.filter(pc.equal(table["slice"], k)).drop_columns(["slice"])


def day_files(cfg: ArenaConfig, ds: str) -> list[SourceFile]:
    """The files of day ``ds`` (each source with ``{ds}`` filled in); none at all is not an error here."""
    return [f for src in cfg.data.sources for f in matches(src.replace("{ds}", ds), cfg.storage)]


def ensure_partition(cfg: ArenaConfig, store: ArtifactStore, ds: str, started: bool = False) -> dict[str, Any]:
    """Prepare day ``ds`` unless it is prepared from the same inputs; returns its report.

    ``started``: a round has battled on the day, so a prepared partition is kept even where its inputs changed.
    """
    from arena_ops.data.pipeline import testset_ids

    ds = check_ds(ds)
    if cfg.data.mode != "partitioned":
        raise DataError(f"{cfg.flywheel}: data.mode is {cfg.data.mode!r}; date partitions need data.mode: partitioned")
    files = day_files(cfg, ds)
    if not files:
        sources = ", ".join(s.replace("{ds}", ds) for s in cfg.data.sources)
        raise PartitionUnavailableError(f"no data for {ds}: nothing matches {sources}")
    test_ids = testset_ids(cfg, store)
    earlier = [d for d in prepared(store, cfg.flywheel) if d < ds]
    key = _fingerprint(cfg, files, test_ids, earlier)
    where = prefix(cfg, ds)
    if store.is_committed(where):
        meta = store.manifest(where).meta
        if meta.get("fingerprint") == key:
            return meta
        if started:
            log.warning("%s: its inputs changed since it was prepared, but a round has battled on it: kept", ds)
            return meta
        log.info("%s: its inputs changed since it was prepared: preparing it anew", ds)
    return _prepare(cfg, store, ds, files, test_ids, earlier, key)


def _prepare(
    cfg: ArenaConfig,
    store: ArtifactStore,
    ds: str,
    files: list[SourceFile],
    test_ids: set[str],
    earlier: list[str],
    key: str,
) -> dict[str, Any]:
    from arena_ops.data.pipeline import decontaminate_rows, split

    got = ingest_files(files)
    rows_read = got.table.num_rows + got.quarantine.num_rows
    if rows_read == 0:
        raise PartitionUnavailableError(f"no data for {ds}: its {len(files)} file(s) hold no rows")
    cleaned = clean(got.table, cfg.data)
    table, removed = cleaned.table, [cleaned.removed]
    table, gone = _seen_before(cfg, store, table, earlier)
    removed.append(gone)
    table, gone = decontaminate_rows(cfg, store, table)
    removed.append(gone)
    n = slices_per_day(cfg)
    need = n * cfg.data.min_rows_per_slice
    if table.num_rows < need:
        raise PartitionUnavailableError(
            f"too little data for {ds}: {table.num_rows} instructions kept of {rows_read} read, the schedule needs "
            f"{need} ({n} slice(s) × data.min_rows_per_slice {cfg.data.min_rows_per_slice})"
        )
    parts = split(table, n, cfg.data.shard_seed, set())
    data = pa.concat_tables(
        [p.append_column("slice", pa.array([k] * p.num_rows, pa.int32())) for k, p in enumerate(parts)]
    )
    removed_table = pa.concat_tables(removed)
    by_reason: dict[str, int] = {}
    for s in removed_table["step"].to_pylist():
        by_reason[s] = by_reason.get(s, 0) + 1
    meta = {
        "ds": ds,
        "files": [f.uri for f in files],
        "rows_read": rows_read,
        "quarantined": got.quarantine.num_rows,
        "removed": by_reason,
        "kept": data.num_rows,
        "slices": n,
        "slice_rows": [p.num_rows for p in parts],
        "checked_against": earlier,
        "fingerprint": key,
    }
    with store.artifact_at(prefix(cfg, ds), meta=meta) as w:
        w.write_table("data.parquet", data)
        w.write_table("quarantine.parquet", got.quarantine)
        w.write_table("removed.parquet", removed_table)
        w.write_table(SEEN, _seen_part(cfg, data))
    log.info("prepared %s: %d read, %d kept in %d slice(s), removed %s", ds, rows_read, data.num_rows, n, by_reason)
    return meta


def _texts(table: pa.Table) -> list[str]:
    return [" ".join(t) for t in table["turns"].to_pylist()]  # what clean's near-dup step compares


def _seen_part(cfg: ArenaConfig, table: pa.Table) -> pa.Table:
    ids = table["prompt_id"]
    if cfg.data.minhash_threshold is None:
        return pa.table({"prompt_id": ids})
    from arena_ops.data.minhash import signatures

    sig = signatures(_texts(table), cfg.data.minhash_num_perm, cfg.data.minhash_ngram)
    column = pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel(), pa.uint32()), sig.shape[1])
    return pa.table({"prompt_id": ids, "minhash": column})


def _seen_before(
    cfg: ArenaConfig, store: ArtifactStore, table: pa.Table, earlier: list[str]
) -> tuple[pa.Table, pa.Table]:
    """Remove rows an earlier day already brought: the same prompt id (``seen_exact``) or a MinHash near-duplicate
    of a kept row of an earlier day (``seen_near``, threshold and shingles as data.minhash_*)."""
    if not earlier or table.num_rows == 0:
        return table, REMOVED_SCHEMA.empty_table()
    parts = [store.read_artifact_table(prefix(cfg, d), SEEN) for d in earlier]
    ids = table["prompt_id"].to_pylist()
    old_ids = [pid for p in parts for pid in p["prompt_id"].to_pylist()]
    old_set = set(old_ids)
    gone: dict[int, tuple[str, str, str]] = {}
    for i, pid in enumerate(ids):
        if pid in old_set:
            gone[i] = ("seen_exact", "the same instruction arrived on an earlier day", pid)
    threshold = cfg.data.minhash_threshold
    if threshold is not None and all("minhash" in p.column_names for p in parts) and old_ids:
        from arena_ops.data.minhash import dedup_signatures, signatures

        width = cfg.data.minhash_num_perm
        old = np.concatenate([p["minhash"].combine_chunks().flatten().to_numpy().reshape(-1, width) for p in parts])
        new = signatures(_texts(table), width, cfg.data.minhash_ngram)
        # Earlier days first: a new row is a duplicate when its kept partner is an old row (new-vs-new pairs were
        # settled by clean's own near-dup step).
        for i, j in dedup_signatures(np.concatenate([old, new]), threshold).items():
            if i >= len(old_ids) and j < len(old_ids) and (i - len(old_ids)) not in gone:
                gone[i - len(old_ids)] = ("seen_near", f"near-duplicate (MinHash Jaccard ≥ {threshold})", old_ids[j])
    if not gone:
        return table, REMOVED_SCHEMA.empty_table()
    keep = [i for i in range(table.num_rows) if i not in gone]
    kept, removed = split_rows(table, keep, [(i, r, m) for i, (_, r, m) in sorted(gone.items())], "seen")
    steps = pa.array([gone[i][0] for i in sorted(gone)], pa.string())
    return kept, removed.set_column(removed.schema.get_field_index("step"), "step", steps)


def _fingerprint(cfg: ArenaConfig, files: list[SourceFile], test_ids: set[str], earlier: list[str]) -> str:
    settings = cfg.data.model_dump(
        mode="json", exclude={"sources", "testset_sources", "num_shards", "testset_clusters", "testset_seed"}
    )
    payload = {
        "files": [(f.uri, f.size, f.mtime_ns) for f in files],
        "data": settings,
        "slices": slices_per_day(cfg),
        "tests": sorted(test_ids),
        "earlier": earlier,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]
