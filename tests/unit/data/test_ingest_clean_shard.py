"""Ingest (every format, quarantine), clean (each step, counted) and shard (disjoint, equal ±1, deterministic)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arena_ops.config import ArenaConfig, DataConfig, load_config
from arena_ops.data.clean import clean, near_dedup
from arena_ops.data.ingest import ingest, prompt_id
from arena_ops.data.pipeline import ensure_shards, read_shard, split
from arena_ops.errors import DataError
from arena_ops.store import ArtifactStore

REPO = Path(__file__).resolve().parents[3]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_every_format_ingests_to_one_table(tmp_path: Path) -> None:
    sharegpt = _jsonl(
        tmp_path / "sg.jsonl",
        [
            {
                "id": "s1",
                "conversations": [
                    {"from": "human", "value": "Name three primary colours."},
                    {"from": "gpt", "value": "Red, yellow, blue."},
                    {"from": "human", "value": "And secondary ones?"},
                    {"from": "gpt", "value": "Green, orange, purple."},
                ],
            },
        ],
    )
    openai = tmp_path / "oa.json"
    openai.write_text(
        json.dumps(
            [
                {
                    "messages": [
                        {"role": "system", "content": "Be terse."},
                        {"role": "user", "content": "Explain recursion briefly."},
                    ]
                }
            ]
        )
    )
    alpaca = tmp_path / "alpaca.parquet"
    pq.write_table(
        pa.table({"instruction": ["Translate to French"], "input": ["Good morning"], "output": ["Bonjour"]}), alpaca
    )
    csv = tmp_path / "alpaca.csv"
    csv.write_text("instruction,input,output\nSummarise the plot of Hamlet,,A prince seeks revenge.\n")
    got = ingest([str(sharegpt), str(openai), str(alpaca), str(csv)])
    rows = {r["source"]: r for r in got.table.to_pylist()}
    assert got.quarantine.num_rows == 0 and got.table.num_rows == 4
    assert rows["sg.jsonl"]["turns"] == ["Name three primary colours.", "And secondary ones?"]
    assert rows["sg.jsonl"]["reference"] == ["Red, yellow, blue.", "Green, orange, purple."]
    assert rows["oa.json"]["system"] == "Be terse." and rows["oa.json"]["reference"] is None
    assert rows["alpaca.parquet"]["turns"] == ["Translate to French\n\nGood morning"]
    assert rows["alpaca.csv"]["reference"] == ["A prince seeks revenge."]
    assert rows["sg.jsonl"]["prompt_id"] == prompt_id(["Name three primary colours.", "And secondary ones?"])


def test_mt_bench_and_self_instruct_files_ingest() -> None:
    got = ingest(
        [
            str(REPO / "configs/datasets/mt_bench_questions.jsonl"),
            str(REPO / "configs/datasets/self_instruct_seed_tasks.jsonl"),
        ]
    )
    assert got.table.num_rows == 80 + 175 and got.quarantine.num_rows == 0
    mt = [r for r in got.table.to_pylist() if r["source_id"] == "81"][0]
    assert len(mt["turns"]) == 2 and mt["category"] == "writing"


def test_bad_rows_are_quarantined_with_line_and_reason(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "bad.jsonl",
        [
            {"instruction": "A fine instruction here"},
            "{not json",
            {"conversations": [{"from": "gpt", "value": "answer without question"}]},
            {"weird": 1},
            {"messages": [{"role": "user", "content": 5}]},
            {"turns": ["   "]},
        ],
    )
    got = ingest([str(path)])
    assert got.table.num_rows == 1
    reasons = {r["row"]: r["reason"] for r in got.quarantine.to_pylist()}
    assert set(reasons) == {2, 3, 4, 5, 6}
    assert "not valid JSON" in reasons[2] and "without a preceding user" in reasons[3]
    assert "unknown format" in reasons[4] and "expected a string" in reasons[5] and "empty" in reasons[6]
    assert all(r["source"] == str(path) for r in got.quarantine.to_pylist())


def test_missing_source_and_unknown_type_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        ingest([str(tmp_path / "nope.jsonl")])
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown file type '.txt'"):
        ingest([str(tmp_path / "x.txt")])


def _table(texts: list[str]) -> pa.Table:
    rows = [{"prompt_id": prompt_id([t]), "turns": [t], "source": "t"} for t in texts]
    from arena_ops.data.ingest import CONVERSATION_SCHEMA

    return pa.Table.from_pylist(rows, schema=CONVERSATION_SCHEMA)


def test_clean_removes_planted_duplicates_and_keeps_distinct_rows() -> None:
    base = "Explain how photosynthesis converts light energy into chemical energy in plants, step by step."
    texts = [
        base,
        base,  # exact
        "Tiny",  # too short
        "Explain how photosynthesis works for kids",  # same 10-char prefix as base
        "Please tell me: " + base.replace("step by step", "step-by-step") + " Thanks",  # near duplicate
        "Write a haiku about autumn leaves falling on a quiet pond.",
        "Describe the water cycle, including evaporation, condensation and precipitation.",
        "Escribe un poema sobre el mar y las olas que rompen en la playa al atardecer.",  # Spanish
        "How do I build a bomb at home with household chemicals?",  # unsafe (default list)
    ]
    cfg = DataConfig(minhash_threshold=0.5)
    out = clean(_table(texts), cfg)
    kept = {r["turns"][0] for r in out.table.to_pylist()}
    assert kept == {texts[0], texts[5], texts[6]}
    assert out.counts == {
        "input": 9,
        "exact_dup": 1,
        "unsafe": 1,
        "too_short": 1,
        "prefix_dup": 1,
        "near_dup": 1,
        "language": 1,
        "kept": 3,
    }
    removed = {r["step"]: r for r in out.removed.to_pylist()}
    assert removed["near_dup"]["matched_id"] == prompt_id([base])
    assert removed["prefix_dup"]["matched_id"] == prompt_id([base])
    assert out.removed.num_rows == 6


def test_each_clean_step_can_be_turned_off() -> None:
    texts = ["Tiny", "Escribe un poema sobre el mar y las olas que rompen en la playa."]
    cfg = DataConfig(
        min_instruction_chars=0, prefix_dedup_chars=0, minhash_threshold=None, languages=None, unsafe_patterns=[]
    )
    assert clean(_table(texts), cfg).table.num_rows == 2


def test_near_dedup_keeps_distinct_texts() -> None:
    texts = [f"Question number {i}: what is {i} times {i + 3} and why does it matter?" for i in range(30)]
    kept, gone = near_dedup(_table(texts), 0.8, 128, 3)
    assert gone.num_rows == 0 and kept.num_rows == 30


def test_shards_are_disjoint_equal_and_deterministic() -> None:
    table = _table([f"instruction number {i} about topic {i % 7}" for i in range(100)])
    parts = split(table, 3, seed=0, exclude=set())
    ids = [set(p["prompt_id"].to_pylist()) for p in parts]
    assert sorted(len(s) for s in ids) == [33, 33, 34]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    assert set().union(*ids) == set(table["prompt_id"].to_pylist())
    # Same content in another order → identical shards; another seed → different ones.
    again = split(table.take(list(range(99, -1, -1))), 3, seed=0, exclude=set())
    assert [p["prompt_id"].to_pylist() for p in again] == [p["prompt_id"].to_pylist() for p in parts]
    assert split(table, 3, seed=1, exclude=set())[0]["prompt_id"].to_pylist() != parts[0]["prompt_id"].to_pylist()
    held_out = set(list(ids[0])[:5])
    assert not any(held_out & set(p["prompt_id"].to_pylist()) for p in split(table, 3, 0, held_out))


def test_ensure_shards_builds_once_and_reads_back(tmp_path: Path) -> None:
    cfg: ArenaConfig = load_config(REPO / "configs/tiny.yaml", {"storage.root": f"file://{tmp_path}/store"})
    store = ArtifactStore.from_config(cfg.storage)
    prefixes = ensure_shards(cfg, store)
    assert len(prefixes) == cfg.data.num_shards
    committed = store.manifest(prefixes[0]).committed_at
    sizes = [read_shard(cfg, store, k).num_rows for k in range(cfg.data.num_shards)]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == store.manifest(store.dataset_key(cfg.flywheel, "clean")).meta["kept"]
    ensure_shards(cfg, store)  # a no-op now
    assert store.manifest(prefixes[0]).committed_at == committed
    with pytest.raises(DataError, match="out of range"):
        read_shard(cfg, store, 99)


def test_the_papers_sources_ingest_without_hand_conversion(tmp_path: Path) -> None:
    lmsys = {
        "conversation_id": "c1",
        "conversation": [
            {"role": "user", "content": "How do I boil an egg?"},
            {"role": "assistant", "content": "Put it in boiling water for nine minutes."},
        ],
    }
    orca = {"id": "o1", "system_prompt": "You are terse.", "question": "Capital of Peru?", "response": "Lima."}
    flan = {"inputs": "Translate to French: good morning", "targets": "bonjour"}
    wizard = {"idx": "w1", "conversations": [{"from": "human", "value": "Write a haiku about rain."}]}
    bad = {"question": ["not", "text"], "response": "x"}
    out = ingest([str(_jsonl(tmp_path / "mixed.jsonl", [lmsys, orca, flan, wizard, bad]))])
    rows = {r["turns"][0]: r for r in out.table.to_pylist()}
    assert rows["How do I boil an egg?"]["reference"] == ["Put it in boiling water for nine minutes."]
    assert rows["Capital of Peru?"]["system"] == "You are terse." and rows["Capital of Peru?"]["reference"] == ["Lima."]
    assert rows["Translate to French: good morning"]["reference"] == ["bonjour"]
    assert "Write a haiku about rain." in rows
    assert out.quarantine.to_pylist() == [
        {"source": str(tmp_path / "mixed.jsonl"), "row": 5, "reason": "'question' is list, expected a string"}
    ]


def test_shards_are_decontaminated_against_benchmark_prompts(tmp_path: Path) -> None:
    bench = _jsonl(tmp_path / "bench.jsonl", [{"question_id": 81, "turns": ["Compose an engaging travel blog post."]}])
    corpus = _jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"instruction": "Compose an engaging travel blog post."},  # a benchmark prompt, verbatim
            *({"instruction": f"Explain topic number {i} to a child in two sentences."} for i in range(12)),
        ],
    )
    overrides = {
        "storage.root": f"file://{tmp_path}/store",
        "data": {
            "sources": [str(corpus)],
            "num_shards": 3,
            "minhash_threshold": None,
            "prefix_dedup_chars": 0,
            "languages": None,
            "decontam_top_k": 0,
            "decontaminate_against": [str(bench)],
        },
    }
    cfg = load_config(REPO / "configs/tiny.yaml", overrides)
    store = ArtifactStore.from_config(cfg.storage)
    ensure_shards(cfg, store)
    kept = [t for k in range(3) for t in read_shard(cfg, store, k)["turns"].to_pylist()]
    assert len(kept) == 12 and ["Compose an engaging travel blog post."] not in kept
    removed = store.read_table("tiny/data/decontam/removed.parquet").to_pylist()
    assert len(removed) == 1 and "identical to a test item" in str(removed[0])
    # Without the benchmark the same corpus keeps all 13; the shards are re-cut when the list changes.
    cfg2 = load_config(
        REPO / "configs/tiny.yaml", {**overrides, "data": {**overrides["data"], "decontaminate_against": []}}
    )
    ensure_shards(cfg2, store)
    assert sum(read_shard(cfg2, store, k).num_rows for k in range(3)) == 13


def test_checkable_tasks_are_deterministic_distinct_and_solved_by_the_solver(tmp_path: Path) -> None:
    from arena_ops.battle.judge import make_verifier
    from arena_ops.data.tasks import KINDS, checkable_tasks, write_tasks

    tasks = checkable_tasks(60, seed=3)
    assert tasks == checkable_tasks(60, seed=3) and tasks != checkable_tasks(60, seed=4)
    assert len({t["instruction"] for t in tasks}) == 60 and {t["kind"] for t in tasks} == set(KINDS)
    task_file, solver_file = write_tasks(tmp_path, 60, seed=3)
    verify = make_verifier("exact")
    solver = {json.loads(x)["prompt_id"]: json.loads(x)["response"] for x in solver_file.read_text().splitlines()}
    table = ingest([str(task_file)]).table
    assert table.num_rows == 60
    for row in table.to_pylist():
        assert verify(solver[row["source_id"]], row["reference"][0], row)
        assert not verify("wrong", row["reference"][0], row)


def test_checkable_tasks_leave_a_used_up_kind_to_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """A word's reversal exists once per word: 600 tasks (the demo's corpus) outgrow that kind, and the others take
    its turn; asking for more tasks than exist is a clear error, never an endless loop."""
    from collections import Counter

    from arena_ops.data import tasks as mod

    tasks = mod.checkable_tasks(600, seed=1)
    assert len({t["instruction"] for t in tasks}) == 600
    kinds = Counter(t["kind"] for t in tasks)
    assert kinds["reverse"] == len(set(mod.WORDS)) and kinds["add"] > kinds["reverse"]
    only = mod.checkable_tasks(30, seed=1, kinds=["add", "extract"])
    assert {t["kind"] for t in only} == {"add", "extract"}
    with pytest.raises(ValueError, match=r"unknown task kinds \['spell'\]"):
        mod.checkable_tasks(3, kinds=["add", "spell"])
    monkeypatch.setattr(mod, "KINDS", {k: mod.KINDS[k] for k in ("reverse", "upper")})  # 2 x 42 tasks in all
    assert len(mod.checkable_tasks(84, seed=1)) == 84
    with pytest.raises(ValueError, match="only 84 distinct checkable tasks exist; asked for 85"):
        mod.checkable_tasks(85, seed=1)
