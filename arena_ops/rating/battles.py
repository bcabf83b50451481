"""The battle table: its schema, readers for Parquet / CSV / JSONL, validation with row numbers.

Required columns: ``model_a``, ``model_b`` (strings) and ``winner`` ∈ {model_a, model_b, tie, tie_bothbad}.
Optional columns (kept when present): ``prompt_id``, ``judge``, ``iteration``, ``score_a``, ``score_b``,
``len_a``, ``len_b`` (response lengths, used by style control), ``battle_id``. Model names are normalised (Unicode
NFC, surrounding whitespace removed). Rows with an unknown winner, a missing, empty or "nan" model name, or a model
battling itself are rejected: :func:`validate_battles` returns them as a quarantine table with the source file, the
1-based row number (the line number in JSONL and the data-row number in CSV) and the reason; they are never dropped
silently. A JSONL line that is not a JSON object is quarantined the same way. Duplicates are dropped and counted, never
rated twice: a file given twice is read once, and a ``battle_id`` seen before is quarantined ("duplicate battle_id").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
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
    "battle_id": pa.string(),
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
    duplicate_inputs: int = 0  # files given more than once (read once)
    rows: np.ndarray | None = None  # each valid row's number in its source (validate_battles)

    @property
    def models(self) -> list[str]:
        return sorted(set(self.table["model_a"].to_pylist()) | set(self.table["model_b"].to_pylist()))


def read_battles(paths: Iterable[str | Path]) -> Battles:
    """Read and validate battle files (``.parquet``, ``.csv``, ``.jsonl``/``.json``) into one table.

    A file given twice is read once (``duplicate_inputs`` counts the repeats); rows whose ``battle_id`` was already
    seen, in this file or an earlier one, are quarantined."""
    tables, quarantines = [], []
    seen_paths: set[Path] = set()
    seen_ids: list[tuple[pa.Array, str]] = []
    repeats = 0
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen_paths:
            repeats += 1
            continue
        seen_paths.add(resolved)
        table, broken = _read_any(Path(path))
        b = validate_battles(table, source=str(path), row_numbers=None if broken is None else broken[0])
        b = _drop_duplicate_ids(b, str(path), seen_ids)
        tables.append(b.table)
        quarantines.extend([b.quarantine] + ([broken[1]] if broken is not None else []))
    if not tables:
        raise BattleFormatError("no battle files given")
    quarantine = pa.concat_tables(quarantines).sort_by([("source", "ascending"), ("row", "ascending")])
    return Battles(pa.concat_tables(tables), quarantine, duplicate_inputs=repeats)


def _drop_duplicate_ids(b: Battles, source: str, seen: list[tuple[pa.Array, str]]) -> Battles:
    """Quarantine rows whose ``battle_id`` appeared before (earlier in this file, or in a file of ``seen``: each
    file's new distinct ids and its name). One hash pass (``dictionary_encode`` numbers ids in order of first
    appearance, so a row is a first occurrence iff its index exceeds every earlier one), then numpy. Measured side
    by side on 1M ids (under load): 0.32 s vs 0.64 s for a Python set loop (all distinct), 0.20 s vs 0.50 s (two
    repeats); ``pc.count_distinct`` alone took ~1 s."""
    # A battle is its id *and* the models it is evidence for: the same battle met again under the same names is rated
    # once; under another target label (a recorded target rated per iteration) it counts for that label.
    key = pc.binary_join_element_wise(
        *(pc.cast(b.table[c].combine_chunks(), pa.string()) for c in ("battle_id", "model_a", "model_b")), "\x1f"
    )
    enc = pc.dictionary_encode(key)
    idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(idx)
    if n == 0 or (idx < 0).all():
        return b
    before = np.concatenate([[-1], np.maximum.accumulate(idx)[:-1]])
    keep = idx > before  # first occurrence within this file
    # Distinct ids already in an earlier file: position in the concatenation of `seen`, or -1.
    earlier_of_id = np.full(len(enc.dictionary), -1, dtype=np.int64)
    if seen:
        hit = pc.index_in(enc.dictionary, value_set=pa.concat_arrays([ids for ids, _ in seen]))
        earlier_of_id = hit.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    earlier = np.where(idx >= 0, earlier_of_id[np.maximum(idx, 0)], -1)
    keep &= earlier < 0
    keep |= idx < 0  # rows without an id are never duplicates
    seen.append((pc.filter(enc.dictionary, pa.array(earlier_of_id < 0)), source))
    dup = np.flatnonzero(~keep)
    if not len(dup):
        return b
    bounds = np.cumsum([len(ids) for ids, _ in seen[:-1]])
    first_in = [seen[int(np.searchsorted(bounds, e, side="right"))][1] if e >= 0 else source for e in earlier[dup]]
    dup_ids = [k.split("\x1f", 1)[0] for k in pc.take(enc.dictionary, pa.array(idx[dup])).to_pylist()]
    rows = np.asarray(b.rows) if b.rows is not None else np.arange(1, n + 1)
    q = pa.table(
        {
            "source": pa.array([source] * len(dup), pa.string()),
            "row": pa.array(rows[dup], pa.int64()),
            "reason": pa.array(
                [f"duplicate battle_id {i!r} (first in {f})" for i, f in zip(dup_ids, first_in, strict=True)],
                pa.string(),
            ),
        },
        schema=QUARANTINE_SCHEMA,
    )
    kept = b.rows[keep] if b.rows is not None else None
    return Battles(b.table.filter(pa.array(keep)), pa.concat_tables([b.quarantine, q]), b.duplicate_inputs, kept)


def validate_battles(table: pa.Table, source: str = "<table>", row_numbers: list[int] | None = None) -> Battles:
    """Cast to :data:`BATTLE_SCHEMA`, normalise model names and split off invalid rows (unknown winner, self-battle,
    missing or empty model). ``row_numbers``: each row's number in the source (default 1, 2, …)."""
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
    for side in ("model_a", "model_b"):
        cols[side] = _normalise_names(cols[side])
    a, b, w = (cols[c].to_numpy(zero_copy_only=False) for c in REQUIRED)
    reasons = np.full(table.num_rows, "", dtype=object)
    null_model = pc.or_(pc.is_null(cols["model_a"]), pc.is_null(cols["model_b"])).to_numpy(zero_copy_only=False)
    blank = pa.array(["", "nan"])
    empty = pc.or_(pc.is_in(cols["model_a"], value_set=blank), pc.is_in(cols["model_b"], value_set=blank))
    empty = empty.to_numpy(zero_copy_only=False).astype(bool)
    reasons[~np.isin(w, WINNERS)] = "unknown winner (expected one of model_a, model_b, tie, tie_bothbad)"
    reasons[(a == b) & ~null_model] = "a model battles itself"
    for side in ("model_a", "model_b"):
        for why, bad_name in _name_checks(cols[side], side):
            reasons[bad_name & ~null_model] = why
    reasons[empty & ~null_model] = "empty or 'nan' model name"
    reasons[null_model] = "missing model name"
    bad = reasons != ""
    full = pa.table(cols, schema=pa.schema([f.with_nullable(True) for f in BATTLE_SCHEMA]))
    valid = full.filter(pa.array(~bad)).cast(BATTLE_SCHEMA)
    numbers = np.arange(1, table.num_rows + 1) if row_numbers is None else np.asarray(row_numbers, dtype=np.int64)
    rows = numbers[bad]
    quarantine = pa.table(
        {
            "source": pa.array([source] * len(rows), pa.string()),
            "row": pa.array(rows, pa.int64()),
            "reason": pa.array(
                [f"{r}; got {x!r}" if "winner" in r else r for x, r in zip(w[bad], reasons[bad], strict=True)],
                pa.string(),
            ),
        },
        schema=QUARANTINE_SCHEMA,
    )
    # One rule for every path (`arena elo`, the DAG's board, the round report): a battle_id seen before in the table
    # is the same battle again, rated once.
    return _drop_duplicate_ids(Battles(valid, quarantine, rows=numbers[~bad]), source, [])


def _name_checks(names: pa.ChunkedArray | pa.Array, side: str) -> list[tuple[str, np.ndarray]]:
    """(reason, rows) of names that are not a model: placeholders, invisible-only, control characters. Checked on
    the distinct names (a board has tens; a table, millions of rows), then spread to the rows."""
    enc = pc.dictionary_encode(names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names)
    distinct, idx = enc.dictionary, enc.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    checks = [
        (f"placeholder {side} name (None, null, N/A…): not a model", pc.is_in(pc.utf8_lower(distinct), _PLACEHOLDERS)),
        (f"{side} name is only invisible characters", pc.match_substring_regex(distinct, _INVISIBLE_ONLY)),
        (f"control character in the {side} name", pc.match_substring_regex(distinct, _CONTROL)),
    ]
    out = []
    for why, flags in checks:
        bad = np.append(pc.fill_null(flags, False).to_numpy(zero_copy_only=False), False)  # index -1: a null name
        if bad.any():
            out.append((why, bad[idx]))
    return out


_CONTROL = r"[\x{00}-\x{1f}\x{7f}-\x{9f}]"  # ESC[2J in a name would clear the terminal that prints the board
_INVISIBLE_ONLY = r"^[\s\x{00ad}\x{200b}-\x{200f}\x{2060}-\x{206f}\x{feff}]+$"
_PLACEHOLDERS = pa.array(["none", "null", "n/a", "na", "nil", "undefined", "-", "?"])


def _normalise_names(column: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """NFC and surrounding whitespace removed; "NaN"/"nan" (a spreadsheet's empty cell) becomes "nan" (rejected).
    Arrow kernels, not a Python loop: ``arena elo`` reads millions of battles."""
    names = pc.utf8_trim_whitespace(pc.utf8_normalize(column, "NFC"))
    return pc.if_else(pc.equal(pc.utf8_lower(names), "nan"), pa.scalar("nan"), names)


def _read_any(path: Path) -> tuple[pa.Table, tuple[list[int], pa.Table] | None]:
    """The file's table; for JSONL also (each row's line number, the quarantine of lines that are not JSON objects)."""
    suffix = path.suffix.lower()
    if path.is_dir():
        raise BattleFormatError(f"{path}: is a directory; give battle files (.parquet, .csv or .jsonl)")
    try:
        if suffix == ".parquet":
            return pq.read_table(path), None
        if suffix == ".csv":
            text_cols = {c: pa.string() for c in ("model_a", "model_b", "winner", "prompt_id", "judge", "battle_id")}
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=text_cols)), None
        if suffix in (".jsonl", ".json"):
            return _read_jsonl(path)
    except FileNotFoundError as exc:
        raise BattleFormatError(f"{path}: no such file") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise BattleFormatError(f"{path}: cannot parse as {suffix[1:]}: {exc}") from exc
    raise BattleFormatError(f"{path}: unknown battle file type {suffix!r}; expected .parquet, .csv or .jsonl")


def _is_text(v: object) -> bool:
    return isinstance(v, str)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_JSON_TYPES = {k: _is_text for k in REQUIRED} | {
    k: (_is_int if t == pa.int64() else _is_number if t == pa.float64() else _is_text) for k, t in OPTIONAL.items()
}
_TYPE_NAMES = {_is_text: "a string", _is_number: "a number", _is_int: "an integer"}
_JSON_NAMES = {k: _TYPE_NAMES[f] for k, f in _JSON_TYPES.items()}


def _read_jsonl(path: Path) -> tuple[pa.Table, tuple[list[int], pa.Table]]:
    """Line by line, so that one broken line is one quarantined row (numbered from 1), not a failed file."""
    rows: list[dict] = []
    numbers: list[int] = []
    bad: list[tuple[int, str]] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                bad.append((n, f"not UTF-8: {exc.reason} at byte {exc.start}"))
                continue
            except (ValueError, RecursionError) as exc:
                bad.append((n, f"not JSON: {str(exc)[:120]}"))
                continue
            if not isinstance(obj, dict):
                bad.append((n, f"not a JSON object but {type(obj).__name__}"))
                continue
            wrong = [k for k in (*REQUIRED, *OPTIONAL) if obj.get(k) is not None and not _JSON_TYPES[k](obj[k])]
            if wrong:
                k = wrong[0]
                bad.append((n, f"field {k!r}: expected {_JSON_NAMES[k]}, got {type(obj[k]).__name__}"))
                continue
            rows.append({k: obj.get(k) for k in (*REQUIRED, *OPTIONAL)})
            numbers.append(n)
    quarantine = pa.table(
        {
            "source": pa.array([str(path)] * len(bad), pa.string()),
            "row": pa.array([n for n, _ in bad], pa.int64()),
            "reason": pa.array([why for _, why in bad], pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )
    schema = pa.schema([pa.field(c, pa.string()) for c in REQUIRED] + [pa.field(k, t) for k, t in OPTIONAL.items()])
    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise BattleFormatError(f"{path}: a column has values of mixed types: {exc}") from exc
    return table, (numbers, quarantine)
