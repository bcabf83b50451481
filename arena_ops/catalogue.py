"""The battle catalogue: the one place that lists a flywheel's battle tables and says under which label each was
battled. Elo, the round report, the best-policy choice, the Arena view and ``arena store ls`` all read battle tables
through it (``tests/unit/test_catalogue.py`` checks that no other module lists them).

A round's target changes every step, but it battles under one served name (``tiny-target``). Each battle table's
manifest records the version that battled (``target_label``: ``tiny-target@i0-sft``); :func:`labelled` gives the
table's rows under that label, as the boards name the model.

Two kinds of table:

- **training** battles — a round's steps, ``{flywheel}/iter={i}/battles/{run}``;
- **evaluation** battles — one evaluated model on one test set, ``{flywheel}/eval/{testset}/battles/{tag}``; their
  ``iteration`` is the round that evaluated the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from arena_ops import layout
from arena_ops.store import ArtifactStore

Kind = Literal["training", "eval"]
TESTSETS = ("mix", "diverse", "hard")


@dataclass(frozen=True)
class BattleTable:
    """One committed battle table and the label its target battled under."""

    key: str
    kind: Kind
    iteration: int
    run: str  # a step's run (``sft-shard-000``) or ``eval-{testset}``
    testset: str | None  # evaluation tables only
    target: str | None  # the served name of the target in the rows (``tiny-target``)
    label: str | None  # the version that battled (``tiny-target@i0-sft``); None: not a target version
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def battle_tables(
    store: ArtifactStore,
    flywheel: str,
    kind: Kind | None = None,
    testset: str | None = None,
    iteration: int | None = None,
    run: str | None = None,
) -> list[BattleTable]:
    """The flywheel's committed battle tables, training tables first (by iteration, run), then evaluations (by test
    set, iteration, tag). Each filter narrows the list."""
    out: list[BattleTable] = []
    if kind in (None, "training") and testset is None:
        for it in store.list_iterations(flywheel):
            if iteration is not None and it != iteration:
                continue
            for name in store.list_artifacts(flywheel, it, layout.BATTLES):
                if run is None or name == run:
                    key = layout.battles(flywheel, it, name)
                    out.append(_entry(store, key, "training", it, name, None))
    if kind in (None, "eval"):
        for ts in TESTSETS:
            if testset is not None and ts != testset:
                continue
            if run is not None and run != layout.eval_run(ts):
                continue
            prefix = f"{layout.eval_base(flywheel, ts)}/{layout.BATTLES}"
            found = [
                _entry(store, f"{prefix}/{tag}", "eval", None, layout.eval_run(ts), ts, tag)
                for tag in store.list_artifacts_at(prefix)
            ]
            out += sorted(
                (t for t in found if iteration is None or t.iteration == iteration), key=lambda t: (t.iteration, t.key)
            )
    return out


def step_table(store: ArtifactStore, flywheel: str, iteration: int, run: str) -> BattleTable | None:
    """A round step's battle table, if committed."""
    key = layout.battles(flywheel, iteration, run)
    return _entry(store, key, "training", iteration, run, None) if store.is_committed(key) else None


def eval_table(store: ArtifactStore, flywheel: str, testset: str, tag: str) -> BattleTable | None:
    """One evaluated model's battle table on a test set (``tag``: ``base``, ``i0-sft``), if committed."""
    key = layout.eval_battles(flywheel, testset, tag)
    return _entry(store, key, "eval", None, layout.eval_run(testset), testset, tag) if store.is_committed(key) else None


def step_table_key(flywheel: str, iteration: int, run: str) -> str:
    """Where a step's battle table is (or will be): for messages and content keys of what is built from it."""
    return layout.battles(flywheel, iteration, run)


def _entry(
    store: ArtifactStore, key: str, kind: Kind, it: int | None, run: str, testset: str | None, tag: str | None = None
) -> BattleTable:
    meta = store.manifest(key).meta
    label = meta.get("target_label")
    target = meta.get("target_name") or (label.rsplit("@", 1)[0] if label else None)
    if label is None and tag is not None and target:
        label = f"{target}@{tag}"
    iteration = it if it is not None else int(meta.get("iteration") or 0)
    return BattleTable(key, kind, iteration, run, testset, target, label, meta)


def labelled(entry: BattleTable, table: pa.Table) -> pa.Table:
    """``table`` (rows of ``entry``, any columns) with the target renamed to the label it battled under; a
    dictionary-encoded column is renamed in its dictionary only."""
    if not entry.label or not entry.target or entry.label == entry.target:
        return table
    for col in ("model_a", "model_b"):
        if col in table.column_names:
            idx = table.column_names.index(col)
            table = table.set_column(idx, col, _renamed(table[col], entry.target, entry.label))
    return table


def read(store: ArtifactStore, entry: BattleTable) -> pa.Table:
    """The table's valid battles (content verified against the manifest), labelled."""
    return labelled(entry, store.read_artifact_table(entry.key))


def read_all(store: ArtifactStore, entries: list[BattleTable]) -> pa.Table | None:
    """Every listed table's battles, labelled, in one table; None when there are none."""
    tables = [read(store, e) for e in entries]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def evaluations(store: ArtifactStore, flywheel: str, testset: str = "mix") -> dict[str, pa.Table]:
    """Evaluated model label → its labelled battles on the test set."""
    return {e.label or e.key: read(store, e) for e in battle_tables(store, flywheel, "eval", testset=testset)}


def testsets_with_battles(store: ArtifactStore, flywheel: str) -> list[str]:
    return sorted({e.testset for e in battle_tables(store, flywheel, "eval") if e.testset}, key=TESTSETS.index)


def _renamed(column: pa.ChunkedArray, name: str, label: str) -> pa.ChunkedArray:
    if not pa.types.is_dictionary(column.type):
        return pc.if_else(pc.equal(column, name), label, column)
    chunks = []
    for chunk in column.chunks:
        values = pc.if_else(pc.equal(chunk.dictionary, name), label, chunk.dictionary)
        chunks.append(pa.DictionaryArray.from_arrays(chunk.indices, values))
    return pa.chunked_array(chunks, type=column.type)
