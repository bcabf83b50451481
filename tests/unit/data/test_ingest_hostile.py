"""Hostile instruction files: one bad record is one quarantined row (file, line, reason), never an aborted run, and
no field is silently coerced."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from arena_ops.data.ingest import MAX_DEPTH, ingest

GOOD = json.dumps({"instruction": "Name a fruit.", "output": "Fig."})


def run(tmp_path: Path, name: str, content: bytes) -> tuple[list[dict], dict[int, str]]:
    path = tmp_path / name
    path.write_bytes(content)
    out = ingest([str(path)])
    q = out.quarantine.to_pylist()
    assert all(r["source"] == str(path) for r in q)
    return out.table.to_pylist(), {r["row"]: r["reason"] for r in q}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"instruction": "bad \\ud800 escape"}', "lone surrogate"),
        ('{"instruction": "caf\u00e9 in latin-1"}'.encode("latin-1"), "not UTF-8: byte 0xe9"),
        (bytes(range(11, 40)) + b"\xff\xfe", "not UTF-8"),  # binary garbage (no newline in it)
        (b"[" * 100_000 + b"]" * 100_000, f"nested deeper than {MAX_DEPTH}"),
        (b'{"instruction": ["a", "b"]}', "'instruction' is list, expected a string"),
        (b'{"instruction": "x", "input": ["a", "b"]}', "'input' is list, expected a string"),
        (b'{"instruction": "x", "id": {"a": 1}}', "'id' is dict, expected a string or an integer"),
        (b'{"instruction": "x", "id": NaN}', "'id' is nan"),
        (b'{"instruction": "x\\u0000y"}', "NUL character"),
        (b'{"instruction": "\\u200b\\u200b \\ufeff"}', "nothing visible"),
        (b'{"instruction": "x", "output": 3}', "'output' is int, expected a string"),
        (b"not json at all", "not valid JSON"),
    ],
)
def test_one_bad_jsonl_line_is_one_quarantined_row(tmp_path: Path, line: bytes, reason: str) -> None:
    rows, bad = run(tmp_path, "data.jsonl", b"\n".join([GOOD.encode(), line, GOOD.encode()]) + b"\n")
    assert len(rows) == 2 and list(bad) == [2], bad
    assert reason in bad[2], bad[2]


def test_ids_as_written(tmp_path: Path) -> None:
    lines = [{"instruction": f"q{k}", "id": v} for k, v in enumerate(["a-1", 7, 81.0])]
    rows, bad = run(tmp_path, "d.jsonl", "".join(json.dumps(r) + "\n" for r in lines).encode())
    assert not bad and [r["source_id"] for r in rows] == ["a-1", "7", "81"]


def test_a_non_utf8_byte_in_csv_quarantines_that_record_only(tmp_path: Path) -> None:
    content = b"instruction,output\nName a fruit.,Fig\nCaf\xe9 menu?,Soup\nName a colour.,Red\n"
    rows, bad = run(tmp_path, "d.csv", content)
    assert [r["turns"][0] for r in rows] == ["Name a fruit.", "Name a colour."]
    assert bad == {3: "not UTF-8: a byte that does not decode in this record"}


def test_csv_records_are_numbered_by_their_first_line_and_quoted_newlines_are_kept(tmp_path: Path) -> None:
    content = b'instruction,output\n"Two\nlines",ok\nshort\nName a fruit.,Fig\n'
    rows, bad = run(tmp_path, "d.csv", content)
    assert [r["turns"][0] for r in rows] == ["Two\nlines", "Name a fruit."]
    assert bad == {4: "1 fields where the header has 2"}


def test_an_unterminated_quote_at_the_end_is_one_row_not_a_crash(tmp_path: Path) -> None:
    content = b'instruction,output\nName a fruit.,Fig\n"never closed,x\n'
    rows, bad = run(tmp_path, "d.csv", content)
    assert len(rows) == 1 and list(bad) == [3] and "unterminated quote" in bad[3]


def test_records_after_a_malformed_one_are_read_not_lost(tmp_path: Path) -> None:
    """A quote opened on line 3 and closed mid-field on line 5 makes lines 3–5 one malformed record (quarantined with
    its span); the reader resumes on line 6 (it used to stop there, dropping every later row silently)."""
    content = b'id,instruction,output\n1,Name a fruit.,Fig\n2,"open quote,x\n3,swallowed,y\n4,also,"z"w\n'
    content += b"5,Name a colour.,Red\n"
    rows, bad = run(tmp_path, "d.csv", content)
    assert [r["turns"][0] for r in rows] == ["Name a fruit.", "Name a colour."]
    assert list(bad) == [3] and bad[3].startswith("malformed CSV record (lines 3–5):")


def test_fuzz_random_bytes_never_abort_an_ingest(tmp_path: Path) -> None:
    """Random bytes and random splices of JSON fragments, as JSONL and CSV: rows or quarantined rows, in bounded
    time, never an exception."""
    rng = random.Random(7)
    pieces = [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"instruction"',
        b":",
        b",",
        b'"x"',
        b"\\ud800",
        b"\xff",
        b"\n",
        b"\x00",
        b'"',
        b"1e999",
        b"NaN",
        b'"turns"',
        b'"messages"',
        b'{"role": "user", "content": "hi"}',
    ]
    start = time.monotonic()
    for k in range(200):
        if k % 2:
            blob = rng.randbytes(rng.randrange(0, 400))
        else:
            blob = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 60)))
        for name in ("f.jsonl", "f.csv"):
            path = tmp_path / name
            path.write_bytes(blob)
            try:
                out = ingest([str(path)])
            except Exception as exc:  # noqa: BLE001 - the assertion names what escaped
                if name.endswith(".csv") and "CSV header" in str(exc):
                    continue  # a file whose header cannot be read is one error for the file, with its name
                pytest.fail(f"{name} {blob[:80]!r}: {type(exc).__name__}: {exc}")
            assert set(out.quarantine["source"].to_pylist()) <= {str(path)}  # every bad record names its file
    assert time.monotonic() - start < 60
