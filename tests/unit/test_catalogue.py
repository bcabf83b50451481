"""The battle catalogue: one listing of a flywheel's battle tables with the label each was battled under, and a guard
that every reader of battle tables goes through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pyarrow as pa
import pytest

from arena_ops import catalogue, layout
from arena_ops.store import ArtifactStore

REPO = Path(__file__).resolve().parents[2]
# Where battle-table keys may be spelled: the key builder, the catalogue, and the one writer (a battle run).
ALLOWED = {"arena_ops/layout.py", "arena_ops/catalogue.py", "arena_ops/battle/run.py"}


def table(store: ArtifactStore, key: str, meta: dict, winners: list[str]) -> None:
    rows = [{"model_a": "tgt", "model_b": "c1", "winner": w} for w in winners]
    with store.artifact_at(key, meta=meta) as w:
        w.write_table("data.parquet", pa.Table.from_pylist(rows))


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    s = ArtifactStore.from_uri(f"file://{tmp_path}/store")
    table(s, layout.battles("fw", 0, "sft-shard-000"), {"target_label": "tgt@base", "target_name": "tgt"}, ["model_a"])
    table(s, layout.battles("fw", 1, "sft-shard-003"), {"target_label": "tgt@i0-sft", "target_name": "tgt"}, ["tie"])
    table(s, layout.battles("fw", 2, "all-shard-002"), {}, ["model_b"])  # written before labels were recorded
    for it, tag in ((0, "base"), (1, "i0-sft")):
        meta = {"target_label": f"tgt@{tag}", "target_name": "tgt", "iteration": it, "testset": "mix"}
        table(s, layout.eval_battles("fw", "mix", tag), meta, ["model_b", "model_a"])
    with s.artifact_at(layout.battles("other", 0, "sft-shard-000"), meta={}) as w:  # another flywheel: never listed
        w.write_table("data.parquet", pa.table({"model_a": ["x"], "model_b": ["y"], "winner": ["tie"]}))
    return s


def test_lists_training_then_evaluations_with_their_labels(store: ArtifactStore) -> None:
    found = catalogue.battle_tables(store, "fw")
    assert [(t.kind, t.iteration, t.run, t.label) for t in found] == [
        ("training", 0, "sft-shard-000", "tgt@base"),
        ("training", 1, "sft-shard-003", "tgt@i0-sft"),
        ("training", 2, "all-shard-002", None),
        ("eval", 0, "eval-mix", "tgt@base"),
        ("eval", 1, "eval-mix", "tgt@i0-sft"),
    ]
    assert [t.run for t in catalogue.battle_tables(store, "fw", "training", iteration=1)] == ["sft-shard-003"]
    assert [t.label for t in catalogue.battle_tables(store, "fw", iteration=1)] == ["tgt@i0-sft", "tgt@i0-sft"]
    assert catalogue.battle_tables(store, "fw", "eval", testset="hard") == []
    assert catalogue.testsets_with_battles(store, "fw") == ["mix"]


def test_rows_come_under_the_label_they_were_battled_under(store: ArtifactStore) -> None:
    evals = catalogue.evaluations(store, "fw", "mix")
    assert sorted(evals) == ["tgt@base", "tgt@i0-sft"]
    assert set(evals["tgt@i0-sft"]["model_a"].to_pylist()) == {"tgt@i0-sft"}
    old = catalogue.step_table(store, "fw", 2, "all-shard-002")
    assert old is not None and catalogue.read(store, old)["model_a"].to_pylist() == ["tgt"]  # no label: as stored
    dictionary = pa.table({"model_a": pa.array(["tgt", "c1"]).dictionary_encode(), "model_b": ["c1", "tgt"]})
    entry = catalogue.battle_tables(store, "fw", "training", iteration=0)[0]
    out = catalogue.labelled(entry, dictionary)
    assert out["model_a"].to_pylist() == ["tgt@base", "c1"] and out["model_b"].to_pylist() == ["c1", "tgt@base"]
    assert pa.types.is_dictionary(out["model_a"].type)
    assert catalogue.step_table(store, "fw", 5, "sft-shard-015") is None
    assert catalogue.eval_table(store, "fw", "mix", "i1-sft") is None


def _spells_battle_tables(tree: ast.AST) -> list[str]:
    """Places a module builds a battle-table key itself: ``layout.BATTLES``, ``layout.battles``,
    ``layout.eval_battles``, or a string with ``/battles``."""
    hits = []
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    fstrings = [n for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)]
    parts = {id(v) for n in fstrings for v in n.values}
    assets = {  # f"arena://{flywheel}/battles": an Asset's URI, not a table
        id(v)
        for n in fstrings
        if isinstance(n.values[0], ast.Constant) and str(n.values[0].value).startswith("arena://")
        for v in n.values
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("BATTLES", "battles", "eval_battles"):
            if isinstance(node.value, ast.Name) and node.value.id == "layout":
                hits.append(f"line {node.lineno}: layout.{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "/battles" in node.value:
            if id(node) in docs or id(node) in assets:
                continue
            route = node.value.startswith("/") and id(node) not in parts  # a URL route, not a key's tail
            if not route and not node.value.startswith("arena://"):  # nor is the Asset's URI a table
                hits.append(f"line {node.lineno}: {node.value!r}")
    return hits


def test_every_reader_of_battle_tables_goes_through_the_catalogue() -> None:
    offenders = {}
    for path in sorted([*REPO.glob("arena_ops/**/*.py"), *REPO.glob("dags/*.py"), *REPO.glob("plugins/*.py")]):
        rel = str(path.relative_to(REPO))
        if rel in ALLOWED:
            continue
        hits = _spells_battle_tables(ast.parse(path.read_text(), filename=rel))
        if hits:
            offenders[rel] = hits
    assert offenders == {}, f"list or read battle tables through arena_ops.catalogue, not by their keys: {offenders}"


def test_the_guard_can_fail() -> None:
    src = 'from arena_ops import layout\nk = layout.battles("fw", 0, "r")\nx = f"{fw}/eval/mix/battles"\n'
    assert len(_spells_battle_tables(ast.parse(src))) == 2


def test_no_import_cycle_between_round_and_flywheel() -> None:
    tree = ast.parse((REPO / "arena_ops" / "round.py").read_text())
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert "arena_ops.flywheel" not in imported
