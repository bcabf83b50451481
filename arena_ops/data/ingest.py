"""Ingest instruction files into one canonical conversation table; bad rows go to a quarantine table.

Formats (detected per row): ShareGPT and WizardLM/Evol-Instruct (``conversations`` of ``from``/``value``), OpenAI
``messages`` (``role``/``content``), LMSYS-Chat-1M (``conversation`` of ``role``/``content``), OpenOrca
(``system_prompt``/``question``/``response``), FLAN (``inputs``/``targets``), Alpaca (``instruction``/``input``/
``output``), MT-Bench questions (``question_id``/``turns``) and Self-Instruct seed tasks (``instruction``/
``instances``). Containers: ``.jsonl``, ``.json`` (an array), ``.parquet``,
``.csv``. ``prompt_id`` is a content hash of the user turns, so the same instruction gets the same id wherever it
comes from and ids are stable across runs.

Bad input is one quarantined row, never an aborted run: each line (JSONL) or record (CSV) is decoded and parsed on
its own — not UTF-8, not JSON, nested deeper than :data:`MAX_DEPTH`, longer than :data:`MAX_RECORD_BYTES` — and
every field is type-checked, not coerced (a list where text belongs, an object or NaN as an id), and text with NUL
characters, lone surrogates or only invisible characters is refused. The quarantine names the file, the 1-based
line (JSONL, CSV: the line the record starts on) or element (JSON, Parquet) and the reason.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from arena_ops.data.sources import SourceFile, expand
from arena_ops.errors import DataError

if TYPE_CHECKING:
    from arena_ops.config import StorageConfig

log = logging.getLogger(__name__)

CONVERSATION_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("turns", pa.list_(pa.string()), nullable=False),
        ("reference", pa.list_(pa.string())),
        ("system", pa.string()),
        ("category", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        ("source_id", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema([("source", pa.string()), ("row", pa.int64()), ("reason", pa.string())])

MAX_RECORD_BYTES = 4 << 20  # one instruction record; longer lines are quarantined, not parsed
MAX_DEPTH = 64  # JSON nesting of one record
_INVISIBLE = re.compile(r"[\s\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff]*")

_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}


class RowError(ValueError):
    """A row that cannot become a conversation; the message says why."""


@dataclass
class Ingested:
    table: pa.Table
    quarantine: pa.Table

    @property
    def counts(self) -> dict[str, int]:
        return {"rows": self.table.num_rows, "quarantined": self.quarantine.num_rows}


def prompt_id(turns: list[str], system: str | None = None) -> str:
    """Stable content id of a conversation's user turns (and system prompt): 16 hex chars of sha256."""
    payload = json.dumps({"system": system or "", "turns": [t.strip() for t in turns]}, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def ingest(paths: Iterable[str], storage: StorageConfig | None = None, what: str = "data.sources") -> Ingested:
    """Read every file (globs expanded, each pattern's matches sorted) into a conversation table plus a quarantine
    table. ``s3://`` sources are read with ``storage``'s S3 settings (see :mod:`arena_ops.data.sources`)."""
    return ingest_files(expand(list(paths), storage, what))


def ingest_files(files: Iterable[SourceFile]) -> Ingested:
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for src in files:
        n_ok = n_bad = 0
        for line, raw in _records(src):
            try:
                rows.append(to_conversation(raw, source=src.name))
                n_ok += 1
            except RecursionError:
                bad.append({"source": src.uri, "row": line, "reason": f"nested deeper than {MAX_DEPTH} levels"})
                n_bad += 1
            except RowError as exc:
                bad.append({"source": src.uri, "row": line, "reason": str(exc)})
                n_bad += 1
        log.info("ingested %s: %d rows, %d quarantined", src.uri, n_ok, n_bad)
    return Ingested(
        pa.Table.from_pylist(rows, schema=CONVERSATION_SCHEMA), pa.Table.from_pylist(bad, schema=QUARANTINE_SCHEMA)
    )


def _records(src: SourceFile) -> Iterator[tuple[int, Any]]:
    """(1-based row/line number, raw record); unparseable lines are yielded as a RowError value."""
    path, suffix = src.uri, src.suffix
    try:
        if suffix == ".jsonl":
            with src.open() as f:
                for line, raw in enumerate(f, start=1):
                    if line == 1:
                        raw = raw.removeprefix(codecs.BOM_UTF8)  # an editor's byte-order mark is not the record
                    if not raw.strip():
                        continue
                    yield line, _json_record(raw)
        elif suffix == ".json":
            try:
                with src.open() as f:
                    data = json.loads(f.read().decode("utf-8"))
            except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise DataError(f"{path}: not valid JSON: {str(exc)[:200]}") from exc
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
            yield from enumerate(data, start=1)
        elif suffix == ".csv":
            yield from _csv_records(src)
        elif suffix == ".parquet":
            yield from _parquet_records(src)
        else:
            raise DataError(f"{path}: unknown file type {suffix!r}; expected .jsonl, .json, .parquet or .csv")
    except OSError as exc:  # a file that went away or a storage error mid-read: name the file
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _parquet_records(src: SourceFile) -> Iterator[tuple[int, Any]]:
    """Rows in batches (a small file can expand to far more than it weighs); a row whose text is longer than
    :data:`MAX_RECORD_BYTES` is quarantined, as a JSONL line would be, without being built."""
    try:
        parquet = pq.ParquetFile(src.path, filesystem=src.fs)
        row = 0
        for batch in parquet.iter_batches(batch_size=256):
            sizes = np.zeros(batch.num_rows, dtype=np.int64)
            for col in batch.columns:
                sizes += _text_bytes(col)
            for k, size in enumerate(sizes):
                row += 1
                if size > MAX_RECORD_BYTES:
                    yield row, RowError(f"record of {size} bytes of text is longer than {MAX_RECORD_BYTES}")
                else:
                    yield row, batch.slice(k, 1).to_pylist()[0]
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{src.uri}: cannot read parquet: {exc}") from exc


def _text_bytes(col: pa.Array) -> np.ndarray:
    """Bytes of text per row of one column (strings, and strings inside lists and structs); 0 for the rest."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return pc.fill_null(pc.binary_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _text_bytes(col.flatten())
        offsets = col.offsets.to_numpy(zero_copy_only=False)
        sums = np.concatenate([[0], np.cumsum(inner)])
        starts, ends = offsets[:-1] - offsets[0], offsets[1:] - offsets[0]
        return sums[ends] - sums[starts]
    if pa.types.is_struct(t):
        out = np.zeros(len(col), dtype=np.int64)
        for k in range(t.num_fields):
            out += _text_bytes(col.field(k))
        return out
    return np.zeros(len(col), dtype=np.int64)


def _json_record(raw: bytes) -> Any:
    if len(raw) > MAX_RECORD_BYTES:
        return RowError(f"record of {len(raw)} bytes is longer than {MAX_RECORD_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RowError(f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        return RowError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return RowError(f"not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return RowError(f"nested deeper than {MAX_DEPTH} levels")


def _depth(text: str) -> int:
    """Bracket depth outside strings (linear; what the JSON parser would recurse)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string, escaped = True, False
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _csv_records(src: SourceFile) -> Iterator[tuple[int, Any]]:
    """CSV records with the line each starts on; a record with bytes that are not UTF-8 is one RowError."""
    path = src.uri
    # A field may be as long as a record may be (the csv module's default limit is 128 KiB); the limit is global.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_BYTES))
    with io.TextIOWrapper(src.open(), encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}: cannot read the CSV header: {exc}") from exc
        start = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                end = reader.line_num
                span = f"line {start}" if end <= start else f"lines {start}–{end}"
                if "field larger than field limit" in str(exc):
                    # Raised while still inside a quoted field: the next line is more of that field, not a record.
                    # No later line can be proved to start a record, so the rest of the file is quarantined.
                    rest = sum(1 for _ in f)
                    why = (
                        f"malformed CSV record (from line {start}): a field longer than {MAX_RECORD_BYTES} bytes; "
                        f"the rest of the file ({rest} more line(s), to line {end + rest}) is quarantined with it: "
                        "no later line can be proved to start a record"
                    )
                    yield start, RowError(why)
                    return
                # A quote error is raised at the offending character, and the reader resumes at the next line: later
                # records are read, not lost.
                yield start, RowError(f"malformed CSV record ({span}): {exc} (an unterminated quote?)")
                start = end + 1
                continue
            line, start = start, reader.line_num + 1
            if not fields:
                continue
            if any(_has_surrogate(v) for v in fields):
                yield line, RowError("not UTF-8: a byte that does not decode in this record")
            elif len(fields) != len(header):
                yield line, RowError(f"{len(fields)} fields where the header has {len(header)}")
            else:
                yield line, {k: (v if v != "" else None) for k, v in zip(header, fields, strict=True)}


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _clean_text(value: str, what: str) -> str:
    """Refuse text no model should see: lone surrogates (broken UTF-16 escapes), NUL, or nothing visible."""
    if _has_surrogate(value):
        raise RowError(f"{what}: a lone surrogate (a broken \\u escape) is not text")
    if "\x00" in value:
        raise RowError(f"{what}: contains a NUL character")
    return value


def to_conversation(raw: Any, source: str) -> dict[str, Any]:
    """One raw record → a canonical row; raises :class:`RowError` with the reason."""
    if isinstance(raw, RowError):
        raise raw
    if not isinstance(raw, dict):
        raise RowError(f"expected an object, got {type(raw).__name__}")
    system = None
    if "conversations" in raw:
        turns, reference, system = _from_messages(raw["conversations"], "from", "value")
    elif "messages" in raw:
        turns, reference, system = _from_messages(raw["messages"], "role", "content")
    elif "conversation" in raw:  # LMSYS-Chat-1M
        turns, reference, system = _from_messages(raw["conversation"], "role", "content")
    elif "question" in raw and "response" in raw:  # OpenOrca
        turns, reference = [_text(raw, "question")], [_text(raw, "response")]
        system = _text(raw, "system_prompt") if raw.get("system_prompt") else None
    elif "inputs" in raw and "targets" in raw:  # FLAN collection
        turns, reference = [_text(raw, "inputs")], [_text(raw, "targets")]
    elif "turns" in raw:
        turns, reference = _strings(raw["turns"], "turns"), None
    elif "instruction" in raw:
        turns, reference = _from_alpaca(raw)
    else:
        raise RowError(
            "unknown format: no conversations/messages/conversation/question+response/inputs+targets/turns/"
            f"instruction key (keys: {sorted(raw)})"
        )
    if not turns or any(_INVISIBLE.fullmatch(t) for t in turns):
        raise RowError("empty instruction (nothing visible)")
    turns = [_clean_text(t, f"turn {k + 1}") for k, t in enumerate(turns)]
    reference = None if reference is None else [_clean_text(r, "reference") for r in reference]
    system = None if system is None else _clean_text(system, "system prompt")
    source_id = _identifier(raw)
    category = raw.get("category")
    if category is not None and not isinstance(category, (str, int)):
        raise RowError(f"'category' is {type(category).__name__}, expected a string")
    return {
        "prompt_id": prompt_id(turns, system),
        "turns": turns,
        "reference": reference,
        "system": system,
        "category": str(category) if category is not None else None,
        "source": source,
        "source_id": source_id,
    }


def _identifier(raw: dict[str, Any]) -> str | None:
    """The record's own id: a string or an integer, as written — never an object's repr or a NaN."""
    for key in ("id", "question_id", "prompt_id"):
        value = raw.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RowError(f"{key!r} is {type(value).__name__}, expected a string or an integer")
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise RowError(f"{key!r} is {value!r}, expected a string or an integer")
            value = int(value)
        text = _clean_text(str(value), key).strip()
        if not text:
            raise RowError(f"{key!r} is empty")
        return text
    return None


def _from_messages(msgs: Any, role_key: str, text_key: str) -> tuple[list[str], list[str] | None, str | None]:
    if isinstance(msgs, str):
        try:
            msgs = json.loads(msgs)  # CSV cells hold the list as JSON text
        except json.JSONDecodeError:
            raise RowError(f"{role_key}-messages field is a string that is not a JSON list") from None
    if not isinstance(msgs, list) or not msgs:
        raise RowError("conversation must be a non-empty list of messages")
    turns: list[str] = []
    answers: list[str] = []
    system = None
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or role_key not in m or text_key not in m:
            raise RowError(f"message {i} lacks {role_key!r} or {text_key!r}")
        role, text = str(m[role_key]).lower(), m[text_key]
        if not isinstance(text, str):
            raise RowError(f"message {i}: {text_key!r} is {type(text).__name__}, expected a string")
        if role == "system" and i == 0:
            system = text
        elif role in _USER_ROLES:
            if len(turns) != len(answers):
                raise RowError(f"message {i}: two user messages in a row")
            turns.append(text)
        elif role in _ASSISTANT_ROLES:
            if len(answers) != len(turns) - 1:
                raise RowError(f"message {i}: assistant message without a preceding user message")
            answers.append(text)
        else:
            raise RowError(f"message {i}: unknown role {role!r}")
    if not turns:
        raise RowError("no user message")
    reference = answers if len(answers) == len(turns) else None
    return turns, reference, system


def _from_alpaca(raw: dict[str, Any]) -> tuple[list[str], list[str] | None]:
    instruction = raw["instruction"]
    if not isinstance(instruction, str):
        raise RowError(f"'instruction' is {type(instruction).__name__}, expected a string")
    inp, out = raw.get("input"), raw.get("output")
    if "instances" in raw:  # Self-Instruct seed tasks
        inst = raw["instances"]
        if not isinstance(inst, list) or not inst or not isinstance(inst[0], dict):
            raise RowError("'instances' must be a non-empty list of {input, output}")
        inp, out = inst[0].get("input"), inst[0].get("output")
    for key, value in (("input", inp), ("output", out)):
        if value is not None and not isinstance(value, str):
            raise RowError(f"{key!r} is {type(value).__name__}, expected a string")
    text = instruction.strip()
    if inp:
        text = f"{text}\n\n{inp.strip()}"
    return [text], [out] if out else None


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise RowError(f"{key!r} is {type(value).__name__}, expected a string")
    return value


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RowError(f"{key!r} must be a list of strings")
    return list(value)
