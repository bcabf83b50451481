"""Recorded responses: a model read from a file; a missing prompt is an error, never an empty answer."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arena_ops.errors import ServingError
from arena_ops.serving.recorded import RecordedResponseMissing, RecordedResponses


def test_jsonl_with_turns(tmp_path: Path) -> None:
    p = tmp_path / "gpt4.jsonl"
    rows = [
        {"prompt_id": "81", "turn": 1, "response": "Aloha!"},
        {"prompt_id": "81", "turn": 2, "response": "A"},
        {"prompt_id": "82", "response": "Dear..."},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    rec = RecordedResponses(p, name="gpt-4")
    assert rec.response("81") == "Aloha!" and rec.response("81", turn=2) == "A" and rec.response("82") == "Dear..."
    assert rec.missing(["81", "82", "83"], turns=2) == ["82", "83"]
    with pytest.raises(
        RecordedResponseMissing, match=r"gpt-4: .*gpt4\.jsonl has no response for prompt_id='83' turn=1"
    ):
        rec.response("83")


def test_parquet_and_integer_ids(tmp_path: Path) -> None:
    p = tmp_path / "r.parquet"
    pq.write_table(pa.table({"prompt_id": [1, 2], "response": ["x", "y"]}), p)
    assert RecordedResponses(p).response("2") == "y"


def test_mt_bench_answer_file_format(tmp_path: Path) -> None:
    p = tmp_path / "answers.jsonl"
    p.write_text(json.dumps({"question_id": 81, "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["t1", "t2"]}]}))
    rec = RecordedResponses(p)
    assert rec.response("81", 2) == "t2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": 1, "text": "x"}', "need prompt_id and response columns"),
        ('{"prompt_id": "1", "response": "a"}\n{"prompt_id": "1", "response": "b"}', "row 2 repeats prompt_id='1'"),
        ('{"prompt_id": "1", "response": null}', "row 1 has an empty prompt_id or response"),
    ],
)
def test_bad_files(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(content)
    with pytest.raises(ServingError, match=message):
        RecordedResponses(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ServingError, match="not found"):
        RecordedResponses(tmp_path / "none.jsonl")
