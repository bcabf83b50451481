"""Second hostile pass, ingest: a CSV field over the parser's limit must not let its remaining lines through as
instructions; a byte-order mark is not a record; a tiny Parquet that expands to huge records is held to the same
per-record cap as JSONL."""

from __future__ import annotations

import codecs
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from arena_ops.data.ingest import MAX_RECORD_BYTES, ingest


def run(path: Path) -> tuple[list[str], dict[int, str]]:
    got = ingest([str(path)])
    rows = [r["turns"][0] for r in got.table.to_pylist()]
    return rows, {r["row"]: r["reason"] for r in got.quarantine.to_pylist()}


def test_a_csv_field_over_the_limit_does_not_leak_its_lines_as_instructions(tmp_path: Path) -> None:
    huge = "\n".join([f"Injected instruction, line {k}" for k in range(200_000)])  # ~6 MiB, inside one field
    path = tmp_path / "d.csv"
    path.write_text(f'instruction,output\nName a fruit.,Fig\n"{huge}",x\nName a colour.,Red\n')
    rows, bad = run(path)
    assert rows == ["Name a fruit."]  # nothing from inside the field
    assert list(bad) == [3] and "the rest of the file" in bad[3] and "quarantined" in bad[3]


def test_a_long_csv_field_under_the_record_cap_is_read(tmp_path: Path) -> None:
    long = "word " * 60_000  # 300 KB: over the csv module's default 128 KiB field limit, under the record cap
    path = tmp_path / "d.csv"
    path.write_text(f'instruction,output\n"{long}",x\nName a colour.,Red\n')
    rows, bad = run(path)
    assert len(rows) == 2 and not bad


def test_a_byte_order_mark_is_not_a_record(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_bytes(codecs.BOM_UTF8 + b"instruction,output\nName a fruit.,Fig\n")
    (tmp_path / "d.jsonl").write_bytes(codecs.BOM_UTF8 + b'{"instruction": "Name a colour."}\n')
    assert run(tmp_path / "d.csv") == (["Name a fruit."], {})
    assert run(tmp_path / "d.jsonl") == (["Name a colour."], {})


def test_a_parquet_record_over_the_cap_is_quarantined_not_built(tmp_path: Path) -> None:
    big = "a" * (MAX_RECORD_BYTES + 1)  # compresses to almost nothing
    table = pa.table({"instruction": ["Name a fruit.", big, "Name a colour."], "tags": [["x"], [big], ["y"]]})
    pq.write_table(table, tmp_path / "d.parquet", compression="zstd")
    assert (tmp_path / "d.parquet").stat().st_size < 100_000
    rows, bad = run(tmp_path / "d.parquet")
    assert rows == ["Name a fruit.", "Name a colour."] and list(bad) == [2] and "longer than" in bad[2]
