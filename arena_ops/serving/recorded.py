"""Recorded responses: a model you cannot serve (e.g. published GPT-4 answers), read from a file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from arena_ops.errors import ServingError


class RecordedResponseMissing(ServingError):
    """The file has no response for a prompt (and turn) that was asked for."""


class RecordedResponses:
    """``prompt_id`` (+ optional ``turn``, default 1) → ``response``, from JSONL, Parquet or CSV.

    MT-Bench style answer files (``question_id`` and ``choices[0].turns``) are read too.
    """

    def __init__(self, path: str | Path, name: str = "recorded") -> None:
        self.path = Path(path)
        self.name = name
        self._answers = _load(self.path)

    def __len__(self) -> int:
        return len(self._answers)

    def has(self, prompt_id: str, turn: int = 1) -> bool:
        return (str(prompt_id), turn) in self._answers

    def response(self, prompt_id: str, turn: int = 1) -> str:
        try:
            return self._answers[(str(prompt_id), turn)]
        except KeyError:
            raise RecordedResponseMissing(
                f"{self.name}: {self.path} has no response for prompt_id={prompt_id!r} turn={turn}"
            ) from None

    def missing(self, prompt_ids: list[str], turns: int = 1) -> list[str]:
        """Prompt ids (of those given) lacking any of their ``turns`` responses."""
        return [p for p in prompt_ids if any((str(p), t) not in self._answers for t in range(1, turns + 1))]


def _load(path: Path) -> dict[tuple[str, int], str]:
    table = _read(path)
    cols = set(table.column_names)
    if "question_id" in cols and "choices" in cols:  # FastChat's MT-Bench answer files
        out = {}
        for row in table.select(["question_id", "choices"]).to_pylist():
            for t, text in enumerate(row["choices"][0]["turns"], start=1):
                out[(str(row["question_id"]), t)] = text
        return out
    if not {"prompt_id", "response"} <= cols:
        raise ServingError(f"{path}: recorded responses need prompt_id and response columns (have {sorted(cols)})")
    turns = table["turn"].to_pylist() if "turn" in cols else [1] * table.num_rows
    out: dict[tuple[str, int], str] = {}
    for line, (pid, turn, text) in enumerate(
        zip(table["prompt_id"].to_pylist(), turns, table["response"].to_pylist(), strict=True), start=1
    ):
        if pid is None or text is None:
            raise ServingError(f"{path}: row {line} has an empty prompt_id or response")
        key = (str(pid), int(turn or 1))
        if key in out:
            raise ServingError(f"{path}: row {line} repeats prompt_id={pid!r} turn={key[1]}")
        out[key] = text
    return out


def _read(path: Path) -> pa.Table:
    if not path.exists():
        raise ServingError(f"{path}: recorded-responses file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"prompt_id": pa.string()}))
        if suffix in (".jsonl", ".json"):
            return pajson.read_json(path)
    except pa.ArrowInvalid as exc:
        raise ServingError(f"{path}: cannot parse recorded responses: {exc}") from exc
    raise ServingError(f"{path}: unknown file type {suffix!r}; expected .jsonl, .parquet or .csv")
