"""Resumable work: units with content keys, run concurrently, committed to the store in chunks.

A stage (``responses`` or ``judgments``) of one run (a step's slice, or a test set) is a set of committed *parts*,
``{base}/{stage}/{run}-{digest}`` (``base`` is ``{flywheel}/iter={i}`` or ``{flywheel}/eval/{testset}``), each a
Parquet table whose rows carry the ``key`` of the unit that produced them. A rerun reads the keys already committed
and does only the missing units, so a crash loses at most the chunk in flight and no unit is ever stored twice
(readers also drop repeated keys, in case two runs raced).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from arena_ops.errors import EndpointFailing
from arena_ops.store import ArtifactStore

log = logging.getLogger(__name__)

U = TypeVar("U")


def content_key(*parts: Any) -> str:
    """A stable 20-hex-char key of JSON-serialisable parts."""
    payload = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@dataclass
class Parts:
    """The committed parts of one stage of one run."""

    store: ArtifactStore
    base: str  # a prefix from arena_ops.layout
    stage: str
    run: str
    schema: pa.Schema
    owner: str | None = None  # the battle table these parts are committed for (the cost ledger counts them there)

    def names(self) -> list[str]:
        arts = self.store.list_artifacts_at(f"{self.base}/{self.stage}")
        return sorted(a for a in arts if a.startswith(f"{self.run}-"))

    def read(self) -> pa.Table:
        """All committed rows, first occurrence of each key kept."""
        tables = [self.store.read_artifact_table(f"{self.base}/{self.stage}/{n}") for n in self.names()]
        if not tables:
            return self.schema.empty_table()
        table = pa.concat_tables([self._conform(t) for t in tables])
        keys = table["key"].to_pylist()
        first: dict[tuple[str, Any], int] = {}
        row_ids = table["turn"].to_pylist() if "turn" in table.column_names else [None] * len(keys)
        for i, k in enumerate(zip(keys, row_ids, strict=True)):
            first.setdefault(k, i)
        if len(first) < len(keys):
            log.warning("%s/%s: dropped %d repeated rows", self.stage, self.run, len(keys) - len(first))
            table = table.take(pa.array(sorted(first.values()), pa.int64()))
        return table

    def _conform(self, table: pa.Table) -> pa.Table:
        # Parts written before a nullable column was added read back with nulls in it.
        for f in self.schema:
            if f.name not in table.column_names:
                table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
        return table.select(self.schema.names).cast(self.schema)

    def read_owned(self, owner: str) -> pa.Table:
        """The rows of the parts committed for ``owner`` (each part has one: its work is counted once)."""
        keys = [f"{self.base}/{self.stage}/{n}" for n in self.names()]
        tables = [self._conform(self.store.read_artifact_table(k)) for k in keys if self._owner(k) == owner]
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def _owner(self, key: str) -> str | None:
        return self.store.manifest(key).meta.get("owner")

    def done_keys(self) -> set[str]:
        return set(pc.unique(self.read()["key"]).to_pylist())

    def commit(self, rows: list[dict[str, Any]]) -> str:
        table = pa.Table.from_pylist(rows, schema=self.schema)
        digest = content_key(sorted(set(table["key"].to_pylist())))[:12]
        name = f"{self.run}-{digest}"
        with self.store.artifact_at(
            f"{self.base}/{self.stage}/{name}", meta={"rows": len(rows), "owner": self.owner}
        ) as w:
            w.write_table("data.parquet", table)
        return name


@dataclass
class Outcome(Generic[U]):
    done: int = 0
    failures: list[tuple[U, str]] = field(default_factory=list)


async def execute(
    units: Sequence[U],
    work: Callable[[U], Awaitable[list[dict[str, Any]]]],
    parts: Parts,
    chunk_size: int,
    progress: Callable[[int], None] | None = None,
) -> Outcome[U]:
    """Run ``work`` on every unit concurrently (the clients bound concurrency); commit rows every ``chunk_size``.

    A unit whose work raises is recorded as a failure and the others go on; what finished is committed even when
    the run is cancelled or interrupted, so a rerun resumes.
    """
    outcome: Outcome[U] = Outcome()
    buffer: list[dict[str, Any]] = []
    buffered = 0

    async def one(unit: U) -> tuple[U, list[dict[str, Any]] | None, str | None]:
        try:
            return unit, await work(unit), None
        except EndpointFailing:  # every request refused the same way: no unit can succeed, so the run stops
            raise
        except Exception as exc:  # a failed unit must not sink the chunk: it is reported and retried on rerun
            return unit, None, f"{type(exc).__name__}: {exc}"

    tasks = [asyncio.ensure_future(one(u)) for u in units]
    try:
        for fut in asyncio.as_completed(tasks):
            unit, rows, error = await fut
            if error is not None:
                outcome.failures.append((unit, error))
                log.warning("unit failed: %s", error)
            else:
                buffer.extend(rows or [])
                buffered += 1
                outcome.done += 1
            if progress:
                progress(1)
            if buffered >= chunk_size:
                await asyncio.to_thread(parts.commit, buffer)
                buffer, buffered = [], 0
    finally:
        for t in tasks:
            t.cancel()
        if buffer:
            parts.commit(buffer)
    return outcome
