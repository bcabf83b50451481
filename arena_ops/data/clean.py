"""Cleaning, as the paper orders it: unsafe → too short → exact/prefix dedup → MinHash near-dup → non-English.

Every step is optional (its config value turns it off), counted, and writes what it removed — with the reason and,
for duplicates, the ``prompt_id`` of the row that was kept — to a ``removed`` table. Nothing is dropped silently.
Each step is a pure function ``table → (kept, removed)``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from arena_ops.config import DataConfig

log = logging.getLogger(__name__)

REMOVED_SCHEMA = pa.schema(
    [("prompt_id", pa.string()), ("step", pa.string()), ("reason", pa.string()), ("matched_id", pa.string())]
)

# A deliberately small default: obvious requests for serious harm. Replace it through data.unsafe_patterns (a list
# of regexes) or plug a classifier in with data.unsafe_filter (a dotted path to `fn(text) -> str | None`).
DEFAULT_UNSAFE_PATTERNS = [
    r"\b(make|build|synthesi[sz]e)\b.{0,40}\b(bomb|explosive|nerve agent|bioweapon|meth(amphetamine)?)\b",
    r"\bchild (sexual|porn)",
    r"\b(kill|murder)\b.{0,30}\bwithout (getting caught|being caught)\b",
    r"\b(credit card|ssn|social security) numbers? (dump|generator)\b",
]


@dataclass
class Cleaned:
    table: pa.Table
    removed: pa.Table
    counts: dict[str, int] = field(default_factory=dict)


def clean(table: pa.Table, cfg: DataConfig) -> Cleaned:
    """Run the enabled steps in order; ``counts`` maps ``input``, each step and ``kept`` to row counts."""
    counts = {"input": table.num_rows}
    removed = [_empty_removed()]
    steps = [
        ("exact_dup", lambda t: exact_dedup(t)),
        ("unsafe", lambda t: unsafe_filter(t, cfg.unsafe_patterns)),
        ("too_short", lambda t: length_filter(t, cfg.min_instruction_chars)),
        ("prefix_dup", lambda t: prefix_dedup(t, cfg.prefix_dedup_chars)),
        (
            "near_dup",
            lambda t: near_dedup(t, cfg.minhash_threshold, cfg.minhash_num_perm, cfg.minhash_ngram, cfg.minhash_engine),
        ),
        ("language", lambda t: language_filter(t, cfg.languages)),
    ]
    for name, step in steps:
        table, gone = step(table)
        counts[name] = gone.num_rows
        removed.append(gone)
        log.info("clean %s: removed %d, %d left", name, gone.num_rows, table.num_rows)
    counts["kept"] = table.num_rows
    return Cleaned(table, pa.concat_tables(removed), counts)


def first_turn(table: pa.Table) -> list[str]:
    return [turns[0] for turns in table["turns"].to_pylist()]


def normalise(text: str) -> str:
    """Case-fold, NFKC, collapse whitespace: the form compared by the dedup steps."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_dedup(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Same ``prompt_id`` (same user turns) → keep the first."""
    seen: dict[str, int] = {}
    keep, gone = [], []
    for i, pid in enumerate(table["prompt_id"].to_pylist()):
        if pid in seen:
            gone.append((i, "identical conversation", pid))
        else:
            seen[pid] = i
            keep.append(i)
    return split_rows(table, keep, gone, "exact_dup")


def unsafe_filter(table: pa.Table, patterns: list[str] | None) -> tuple[pa.Table, pa.Table]:
    if patterns is not None and not patterns:
        return table, _empty_removed()
    regexes = [re.compile(p, re.IGNORECASE | re.DOTALL) for p in (patterns or DEFAULT_UNSAFE_PATTERNS)]
    keep, gone = [], []
    for i, turns in enumerate(table["turns"].to_pylist()):
        text = "\n".join(turns)
        hit = next((r.pattern for r in regexes if r.search(text)), None)
        if hit:
            gone.append((i, f"matches unsafe pattern {hit!r}", None))
        else:
            keep.append(i)
    return split_rows(table, keep, gone, "unsafe")


def length_filter(table: pa.Table, min_chars: int) -> tuple[pa.Table, pa.Table]:
    if min_chars <= 0:
        return table, _empty_removed()
    keep, gone = [], []
    for i, text in enumerate(first_turn(table)):
        n = len(text.strip())
        (keep.append(i) if n >= min_chars else gone.append((i, f"instruction has {n} < {min_chars} chars", None)))
    return split_rows(table, keep, gone, "too_short")


def prefix_dedup(table: pa.Table, n_chars: int) -> tuple[pa.Table, pa.Table]:
    """Same first ``n_chars`` of the normalised first turn → keep the first (paper: 10)."""
    if n_chars <= 0:
        return table, _empty_removed()
    seen: dict[str, str] = {}
    keep, gone = [], []
    for i, (pid, text) in enumerate(zip(table["prompt_id"].to_pylist(), first_turn(table), strict=True)):
        prefix = normalise(text)[:n_chars]
        if prefix in seen:
            gone.append((i, f"same {n_chars}-char prefix {prefix!r}", seen[prefix]))
        else:
            seen[prefix] = pid
            keep.append(i)
    return split_rows(table, keep, gone, "prefix_dup")


def near_dedup(
    table: pa.Table, threshold: float | None, num_perm: int, ngram: int, engine: str = "numpy"
) -> tuple[pa.Table, pa.Table]:
    """MinHash-LSH over word n-gram shingles of the whole conversation; keep the first of each near-dup group."""
    if threshold is None or table.num_rows < 2:
        return table, _empty_removed()
    from arena_ops.data.minhash import near_duplicates

    texts = [" ".join(t) for t in table["turns"].to_pylist()]
    dup_of = near_duplicates(texts, threshold=threshold, num_perm=num_perm, ngram=ngram, engine=engine)
    ids = table["prompt_id"].to_pylist()
    keep = [i for i in range(len(texts)) if i not in dup_of]
    gone = [(i, f"near-duplicate (MinHash Jaccard ≥ {threshold})", ids[j]) for i, j in sorted(dup_of.items())]
    return split_rows(table, keep, gone, "near_dup")


def language_filter(table: pa.Table, languages: list[str] | None) -> tuple[pa.Table, pa.Table]:
    """Keep rows whose first turn is identified (py3langid, offline) as one of ``languages``."""
    if not languages or table.num_rows == 0:
        return table, _empty_removed()
    import py3langid

    wanted = set(languages)
    keep, gone = [], []
    for i, text in enumerate(first_turn(table)):
        lang, _ = py3langid.classify(text)
        (keep.append(i) if lang in wanted else gone.append((i, f"language {lang!r} not in {sorted(wanted)}", None)))
    return split_rows(table, keep, gone, "language")


def split_rows(
    table: pa.Table, keep: list[int], gone: list[tuple[int, str, str | None]], step: str
) -> tuple[pa.Table, pa.Table]:
    if not gone:
        return table, _empty_removed()
    ids = table["prompt_id"]
    removed = pa.table(
        {
            "prompt_id": pc.take(ids, pa.array([g[0] for g in gone], pa.int64())),
            "step": pa.array([step] * len(gone), pa.string()),
            "reason": pa.array([g[1] for g in gone], pa.string()),
            "matched_id": pa.array([g[2] for g in gone], pa.string()),
        },
        schema=REMOVED_SCHEMA,
    )
    return table.take(np.asarray(keep, dtype=np.int64)), removed


def _empty_removed() -> pa.Table:
    return REMOVED_SCHEMA.empty_table()
