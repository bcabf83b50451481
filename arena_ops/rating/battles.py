"""The battle table: its schema, readers for Parquet / CSV / JSONL, validation with row numbers.

Required columns: ``model_a``, ``model_b`` (strings) and ``winner`` ∈ {model_a, model_b, tie, tie_bothbad}.
Optional columns (kept when present): ``prompt_id``, ``judge``, ``iteration``, ``score_a``, ``score_b``,
``len_a``, ``len_b`` (response lengths, used by style control). Rows with an unknown winner, a missing model or a
model battling itself are rejected: :func:`validate_battles` returns them as a quarantine table with the source
file, the 1-based row number and the reason; they are never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from arena_ops.errors import RatingError

WINNERS = ("model_a", "model_b", "tie", "tie_bothbad")
REQUIRED = ("model_a", "model_b", "winner")
OPTIONAL: dict[str, pa.DataType] = {
    "prompt_id": pa.string(),
    "judge": pa.string(),
    "iteration": pa.int64(),
    "score_a": pa.float64(),
    "score_b": pa.float64(),
    "len_a": pa.float64(),
    "len_b": pa.float64(),
}
BATTLE_SCHEMA = pa.schema(
    [pa.field(c, pa.string(), nullable=False) for c in REQUIRED] + [pa.field(k, t) for k, t in OPTIONAL.items()]
)
QUARANTINE_SCHEMA = pa.schema([("source", pa.string()), ("row", pa.int64()), ("reason", pa.string())])


class BattleFormatError(RatingError):
    """A battle file cannot be read or lacks a required column; the message names the file."""


@dataclass
class Battles:
    """Valid battles plus the rows that were rejected (with file, row and reason)."""

    table: pa.Table
    quarantine: pa.Table

    @property
    def models(self) -> list[str]:
        return sorted(set(self.table["model_a"].to_pylist()) | set(self.table["model_b"].to_pylist()))


def read_battles(paths: Iterable[str | Path]) -> Battles:
    """Read and validate battle files (``.parquet``, ``.csv``, ``.jsonl``/``.json``) into one table."""
    tables, quarantines = [], []
    for path in paths:
        b = validate_battles(_read_any(Path(path)), source=str(path))
        tables.append(b.table)
        quarantines.append(b.quarantine)
    if not tables:
        raise BattleFormatError("no battle files given")
    return Battles(pa.concat_tables(tables), pa.concat_tables(quarantines))


def validate_battles(table: pa.Table, source: str = "<table>") -> Battles:
    """Cast to :data:`BATTLE_SCHEMA` and split off invalid rows (unknown winner, self-battle, missing model)."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise BattleFormatError(
            f"{source}: missing required column(s) {missing}; expected {list(REQUIRED)} (have {table.column_names})"
        )
    cols = {}
    for name in BATTLE_SCHEMA.names:
        typ = BATTLE_SCHEMA.field(name).type
        if name in table.column_names:
            try:
                cols[name] = pc.cast(table[name], typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise BattleFormatError(f"{source}: column {name!r} is not {typ}: {exc}") from exc
        else:
            cols[name] = pa.nulls(table.num_rows, typ)
    a, b, w = (cols[c].to_numpy(zero_copy_only=False) for c in REQUIRED)
    reasons = np.full(table.num_rows, "", dtype=object)
    null_model = pc.or_(pc.is_null(cols["model_a"]), pc.is_null(cols["model_b"])).to_numpy(zero_copy_only=False)
    reasons[~np.isin(w, WINNERS)] = "unknown winner (expected one of model_a, model_b, tie, tie_bothbad)"
    reasons[(a == b) & ~null_model] = "a model battles itself"
    reasons[null_model] = "missing model name"
    bad = reasons != ""
    full = pa.table(cols, schema=pa.schema([f.with_nullable(True) for f in BATTLE_SCHEMA]))
    valid = full.filter(pa.array(~bad)).cast(BATTLE_SCHEMA)
    rows = np.flatnonzero(bad) + 1
    quarantine = pa.table(
        {
            "source": pa.array([source] * len(rows), pa.string()),
            "row": pa.array(rows, pa.int64()),
            "reason": pa.array(
                [f"{r}; got {w[i - 1]!r}" if "winner" in r else r for i, r in zip(rows, reasons[bad], strict=True)],
                pa.string(),
            ),
        },
        schema=QUARANTINE_SCHEMA,
    )
    return Battles(valid, quarantine)


def _read_any(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            text_cols = {c: pa.string() for c in ("model_a", "model_b", "winner", "prompt_id", "judge")}
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=text_cols))
        if suffix in (".jsonl", ".json"):
            return pajson.read_json(path)
    except FileNotFoundError as exc:
        raise BattleFormatError(f"{path}: no such file") from exc
    except pa.ArrowInvalid as exc:
        raise BattleFormatError(f"{path}: cannot parse as {suffix[1:]}: {exc}") from exc
    raise BattleFormatError(f"{path}: unknown battle file type {suffix!r}; expected .parquet, .csv or .jsonl")
