"""The Arena view's battle list: paging pushed down to the Parquet read (ours) vs filtering and slicing whole columns.

Input: a store of synthetic battle runs with the real record schema (default 300,000 battles over 3 iterations,
judge explanations and raw replies of realistic length), written by ``ArtifactStore`` as rounds write them.
Ours: :meth:`arena_ops.ui.data.ArenaReader.battles` — counts from the file metadata (or from the three filter
columns when a filter is set) and reads only the row groups that hold the requested page. Baseline: the previous
implementation's approach, reduced to the filters benchmarked here: read the nine list columns of every table,
filter, slice the page.
Both answer the same requests in this one process, and the answers are compared row for row.

Run: ``.venv/bin/python benchmarks/bench_ui.py [--battles N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from arena_ops import catalogue
from arena_ops.battle.run import BATTLE_RECORD_SCHEMA
from arena_ops.store import ArtifactStore
from arena_ops.ui.data import _LIST_COLUMNS, VERDICTS, ArenaReader, BattleFilter

MODELS = ["target", "gpt-4o", "llama-70b", "qwen-72b", "mixtral", "tiny"]


def synthetic(n: int, iteration: int, rng: np.random.Generator) -> pa.Table:
    a = rng.integers(0, len(MODELS), n)
    b = (a + rng.integers(1, len(MODELS), n)) % len(MODELS)
    names = np.array(MODELS)
    filler = "The first answer follows the instruction and states the result; the second one does not. " * 6
    cols: dict[str, Any] = {
        "battle_id": [f"b{iteration}-{k:07d}" for k in range(n)],
        "prompt_id": [f"p{k % 50_000:06d}" for k in range(n)],
        "iteration": np.full(n, iteration),
        "run": ["sft-shard-000"] * n,
        "model_a": names[a],
        "model_b": names[b],
        "winner": np.array(VERDICTS[:4])[rng.integers(0, 4, n)],
    }
    for col in ("score_a", "score_b", "g1_score_a", "g1_score_b", "g2_score_a", "g2_score_b", "len_a", "len_b"):
        cols[col] = rng.integers(1, 11, n).astype(float)
    for col in ("explanation_g1", "explanation_g2", "raw_g1", "raw_g2"):
        cols[col] = [f"{k}: {filler}" for k in range(n)]
    for col in ("revision_a", "revision_b", "judge", "judge_hash", "template", "response_key_a", "response_key_b"):
        cols[col] = [f"{col}-{k % 97}" for k in range(n)]
    cols["judgment_keys"] = [[f"j{k}-1", f"j{k}-2"] for k in range(n)]
    cols["invalid_reason"] = [None] * n
    return pa.table(cols).select(BATTLE_RECORD_SCHEMA.names).cast(BATTLE_RECORD_SCHEMA)


def seed(root: str, battles: int, iterations: int) -> ArtifactStore:
    store = ArtifactStore.from_uri(f"file://{root}")
    rng = np.random.default_rng(0)
    for it in range(iterations):
        table = synthetic(battles // iterations, it, rng)
        with store.artifact("bench", it, "battles", "sft-shard-000") as w:
            w.write_table("data.parquet", table.drop_columns(["invalid_reason"]))
            w.write_table("invalid.parquet", table.slice(0, 0))
    return store


def baseline(reader: ArenaReader, flywheel: str, f: BattleFilter, offset: int, limit: int) -> dict[str, Any]:
    """The list as it was computed before: every table's list columns read whole, filtered, then sliced."""
    matched, models = [], set()
    for entry in reversed(reader._battle_tables(flywheel, f)):
        key = entry.key
        for name in ["data.parquet"] + (["invalid.parquet"] if f.verdict in (None, "invalid") else []):
            reader.store.verify(key, name)  # as the view does: the same check on both sides
            table = catalogue.labelled(entry, reader.store.read_table(f"{key}/{name}", columns=_LIST_COLUMNS))
            for col in ("model_a", "model_b"):
                models.update(pc.unique(table[col]).to_pylist())
            if f.model_a:
                a, b = table["model_a"], table["model_b"]
                table = table.filter(pc.or_(pc.equal(a, f.model_a), pc.equal(b, f.model_a)))
            if f.verdict:
                table = table.filter(pc.equal(table["winner"], f.verdict))
            if table.num_rows:
                matched.append(table)
    rows: list[dict[str, Any]] = []
    skip = offset
    for table in matched:
        if skip >= table.num_rows:
            skip -= table.num_rows
            continue
        rows.extend(table.slice(skip, limit - len(rows)).to_pylist())
        skip = 0
        if len(rows) >= limit:
            break
    return {"total": sum(t.num_rows for t in matched), "battles": rows, "models": sorted(models)}


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--battles", type=int, default=300_000)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        reader = ArenaReader(seed(tmp, args.battles, args.iterations))
        print(
            f"store: {args.battles:,} battles in {args.iterations} runs, written in {time.perf_counter() - t0:.1f} s;"
            f" median of {args.repeat} requests"
        )
        last = args.battles - 50
        cases = [
            ("first page", BattleFilter(), 0, 50),
            ("one row (limit=1)", BattleFilter(), 0, 1),
            (f"page at offset {last:,}", BattleFilter(), last, 50),
            ("model=gpt-4o, page 1", BattleFilter(model_a="gpt-4o"), 0, 50),
            ("verdict=tie, page 100", BattleFilter(verdict="tie"), 99 * 50, 50),
        ]
        print(f"{'request':<28}{'baseline s':>12}{'ours s':>10}{'speed-up':>10}")
        for label, f, offset, limit in cases:
            base_s, want = timed(functools.partial(baseline, reader, "bench", f, offset, limit), args.repeat)
            ours_s, got = timed(functools.partial(reader.battles, "bench", f, offset, limit), args.repeat)
            same = (got["total"], got["battles"], got["models"]) == (want["total"], want["battles"], want["models"])
            if not same:
                raise SystemExit(f"{label}: the two implementations disagree")
            print(f"{label:<28}{base_s:>12.3f}{ours_s:>10.3f}{base_s / ours_s:>9.1f}×")
            from results import emit

            emit(f"Arena view battle list, {args.battles:,} battles: {label}", ours_s, "s", ratio=base_s / ours_s,
                 baseline="reading the list columns whole and slicing")  # fmt: skip


if __name__ == "__main__":
    main()
