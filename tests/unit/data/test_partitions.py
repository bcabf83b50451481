"""Date partitions: each day's files read through pyarrow.fs (globs included), cleaned, deduplicated against every
earlier day, decontaminated, cut into slices once; missing, empty or small days are skipped with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from arena_ops import layout
from arena_ops.config import load_config
from arena_ops.data.ingest import CONVERSATION_SCHEMA, ingest, prompt_id
from arena_ops.data.partitions import ensure_partition, prepared, read_slice
from arena_ops.data.sources import expand, matches
from arena_ops.errors import ConfigError, DataError, PartitionUnavailableError
from arena_ops.round import plan_steps, prepare_day, resolve
from arena_ops.store import ArtifactStore
from tests.conftest import daily_instructions

ARENA = str(Path(sys.executable).parent / "arena")


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, **data: object) -> Path:
    raw = {
        "flywheel": "nightly",
        "storage": {"root": f"file://{tmp_path}/store"},
        "models": {
            "target": {"name": "a", "source": {"kind": "recorded", "path": "a.jsonl"}},
            "competitors": [{"name": "b", "source": {"kind": "recorded", "path": "b.jsonl"}}],
            "judge": {"name": "b", "source": {"kind": "recorded", "path": "b.jsonl"}},
        },
        "data": {
            "mode": "partitioned",
            "sources": ["incoming/ds={ds}/*.jsonl"],
            "prefix_dedup_chars": 0,
            "decontam_top_k": 0,  # the embedding and n-gram checks are tested with decontam
            "decontam_ngram": None,  # the generated days share template phrases: exact matches only
            "min_rows_per_slice": 5,
            **data,
        },
        "judge": {"kind": "verifier"},
        "training": {"schedule": "paper", "stages": ["sft", "dpo", "rl"]},
        "airflow": {"start_date": "2026-03-01"},
    }
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _testset(store: ArtifactStore, rows: list[dict]) -> None:
    table = ingest_rows(rows)
    with store.artifact_at(layout.dataset("nightly", "testset-diverse")) as w:
        w.write_table("data.parquet", table)


def ingest_rows(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"prompt_id": prompt_id([r["instruction"]]), "turns": [r["instruction"]], "source": "t"} for r in rows],
        schema=CONVERSATION_SCHEMA,
    )


@pytest.fixture
def days(tmp_path: Path) -> dict:
    """Day 1: 60 instructions; day 2: 60 new ones, 15 near-duplicates of day 1, 3 exact repeats of day 1, and 2
    test-set items (the test set holds 4 items of neither day)."""
    day1, fresh = daily_instructions(0, 60), daily_instructions(1, 60)
    tests = daily_instructions(2, 4)
    near = [
        {**r, "id": f"near-{i}", "instruction": r["instruction"].rstrip(".") + ", please."}
        for i, r in enumerate(day1[:15])
    ]
    exact = [{**r, "id": f"again-{i}"} for i, r in enumerate(day1[20:23])]
    _write(tmp_path / "incoming/ds=2026-03-01/part-0.jsonl", day1[:30])
    _write(tmp_path / "incoming/ds=2026-03-01/part-1.jsonl", day1[30:])
    _write(tmp_path / "incoming/ds=2026-03-02/all.jsonl", fresh + near + exact + tests[:2])
    _write(tmp_path / "incoming/ds=2026-03-04/tiny.jsonl", fresh[:4])  # too few for 3 slices × 5
    (tmp_path / "incoming/ds=2026-03-05").mkdir()
    _write(tmp_path / "incoming/ds=2026-03-05/empty.jsonl", [])
    cfg = load_config(_config(tmp_path))
    store = ArtifactStore.from_config(cfg.storage)
    _testset(store, tests)
    return {"cfg": cfg, "store": store, "day1": day1, "fresh": fresh, "tests": tests, "root": tmp_path}


def test_each_day_is_cleaned_against_every_earlier_day_and_cut_into_slices(days: dict) -> None:
    cfg, store = days["cfg"], days["store"]
    one = ensure_partition(cfg, store, "2026-03-01")
    assert (one["rows_read"], one["kept"], one["slices"], one["removed"]) == (60, 60, 3, {})
    assert sum(one["slice_rows"]) == 60 and max(one["slice_rows"]) - min(one["slice_rows"]) <= 1
    two = ensure_partition(cfg, store, "2026-03-02")
    assert two["rows_read"] == 80 and two["checked_against"] == ["2026-03-01"]
    assert two["removed"] == {"seen_near": 15, "seen_exact": 3, "decontam": 2}, two
    assert two["kept"] == 60
    assert prepared(store, "nightly") == ["2026-03-01", "2026-03-02"]
    day1_ids = {pid for k in range(3) for pid in read_slice(cfg, store, "2026-03-01", k)["prompt_id"].to_pylist()}
    day2_ids = [pid for k in range(3) for pid in read_slice(cfg, store, "2026-03-02", k)["prompt_id"].to_pylist()]
    assert len(day2_ids) == len(set(day2_ids)) == 60 and not day1_ids & set(day2_ids)
    assert not {prompt_id([r["instruction"]]) for r in days["tests"]} & set(day2_ids)
    removed = store.read_artifact_table(layout.dataset("nightly", "ds=2026-03-02"), "removed.parquet").to_pylist()
    near = [r for r in removed if r["step"] == "seen_near"]
    assert {r["matched_id"] for r in near} <= day1_ids  # each names the earlier day's row it repeats


def test_a_prepared_day_is_reused_and_changed_inputs_prepare_it_anew_until_its_round_started(days: dict) -> None:
    cfg, store = days["cfg"], days["store"]
    ensure_partition(cfg, store, "2026-03-01")
    key = layout.dataset("nightly", "ds=2026-03-01")
    first = store.manifest(key).committed_at
    assert ensure_partition(cfg, store, "2026-03-01")["fingerprint"] == store.manifest(key).meta["fingerprint"]
    assert store.manifest(key).committed_at == first  # nothing rewritten
    _write(days["root"] / "incoming/ds=2026-03-01/late.jsonl", daily_instructions(3, 6))
    assert ensure_partition(cfg, store, "2026-03-01", started=True)["rows_read"] == 60  # kept under a started round
    assert ensure_partition(cfg, store, "2026-03-01")["rows_read"] == 66  # not started: the late file is read


@pytest.mark.parametrize(
    ("ds", "reason"),
    [
        ("2026-03-03", "no data for 2026-03-03: nothing matches"),
        ("2026-03-05", "hold no rows"),
        ("2026-03-04", "too little data for 2026-03-04: 4 instructions kept of 4 read, the schedule needs 15"),
    ],
)
def test_a_missing_empty_or_small_day_is_unavailable_and_writes_nothing(days: dict, ds: str, reason: str) -> None:
    with pytest.raises(PartitionUnavailableError, match=reason):
        ensure_partition(days["cfg"], days["store"], ds)
    assert not days["store"].list(f"nightly/data/ds={ds}")


def test_the_round_of_a_day_battles_its_partition_and_a_day_without_data_records_no_round(days: dict) -> None:
    cfg, store = days["cfg"], days["store"]
    steps = plan_steps(cfg, 1)
    assert [(s.name, s.partition, s.slice, s.run) for s in steps] == [
        ("sft", "2026-03-02", 0, "sft-ds=2026-03-02-0"),
        ("dpo", "2026-03-02", 1, "dpo-ds=2026-03-02-1"),
        ("rl", "2026-03-02", 2, "rl-ds=2026-03-02-2"),
    ]
    config = str(days["root"] / "nightly.yaml")
    rnd = resolve(config, iteration=0)  # day 1: prepared by resolve
    assert [s.partition for s in rnd.steps] == ["2026-03-01"] * 3
    assert store.is_committed(layout.dataset("nightly", "ds=2026-03-01"))
    with pytest.raises(PartitionUnavailableError, match="no data for 2026-03-03"):
        resolve(config, iteration=2)
    assert not store.is_committed(layout.round_record("nightly", 2))
    assert prepare_day(cfg, store, "2026-03-01")["kept"] == 60


def test_cli_upload_prepare_by_day_and_partitions_json(days: dict) -> None:
    root = days["root"]
    config = str(root / "nightly.yaml")

    def arena(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        return subprocess.run([ARENA, "--config", config, *args], capture_output=True, text=True, env=env, timeout=300)

    drop = _write(root / "drop" / "late.jsonl", daily_instructions(4, 20))  # a day's data, uploaded as a user does
    res = arena("data", "upload", str(drop), f"file://{root}/incoming/ds=2026-03-06/")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (root / "incoming/ds=2026-03-06/late.jsonl").read_bytes() == drop.read_bytes()
    for ds in ("2026-03-01", "2026-03-02", "2026-03-01", "2026-03-06"):  # the third is a no-op
        res = arena("data", "prepare", "--ds", ds)
        assert res.returncode == 0, res.stderr[-2000:]
    res = arena("data", "prepare", "--ds", "2026-03-03")
    assert res.returncode == 3 and "no data for 2026-03-03" in res.stdout
    res = arena("data", "prepare", "--ds", "03/01/2026")
    assert res.returncode != 0 and "expected YYYY-MM-DD" in res.stdout + res.stderr
    res = arena("data", "partitions", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    assert [r["ds"] for r in got] == ["2026-03-01", "2026-03-02", "2026-03-06"]
    assert set(got[0]) >= {"ds", "rows_read", "kept", "removed", "slices"}
    assert got[1]["removed"]["seen_near"] == 15 and got[1]["kept"] == 60 and got[1]["slices"] == 3
    assert got[2]["rows_read"] == got[2]["kept"] == 20


def test_sources_glob_through_pyarrow_fs_and_a_glob_matching_nothing_names_the_source(tmp_path: Path) -> None:
    for rel in ("a/x.jsonl", "a/b/z.jsonl", "a/.hidden.jsonl", "c/x.jsonl"):
        _write(tmp_path / rel, [{"instruction": f"Describe the file {rel} in one sentence."}])
    (tmp_path / "a/y.json").write_text(json.dumps([{"instruction": "Describe a JSON array in one sentence."}]))
    names = lambda pattern: [os.path.relpath(f.path, tmp_path) for f in matches(pattern)]  # noqa: E731
    assert names(f"{tmp_path}/a/*.jsonl") == ["a/x.jsonl"]
    assert names(f"file://{tmp_path}/a/**/*.jsonl") == ["a/b/z.jsonl", "a/x.jsonl"]
    assert names(f"{tmp_path}/*/x.jsonl") == ["a/x.jsonl", "c/x.jsonl"]
    assert names(f"{tmp_path}/a/x.jsonl") == ["a/x.jsonl"]
    assert [f.uri for f in expand([f"file://{tmp_path}/c/x.jsonl"])] == [f"file://{tmp_path}/c/x.jsonl"]
    with pytest.raises(DataError, match=r"data source '.*/nope/\*\.jsonl' \(data.sources\): the glob matches no"):
        expand([f"{tmp_path}/nope/*.jsonl"])
    with pytest.raises(DataError, match="unsupported scheme"):
        expand(["gs://bucket/x.jsonl"])
    assert ingest([f"file://{tmp_path}/a/*.json*"]).table.num_rows == 2


def test_partitioned_config_is_checked(tmp_path: Path) -> None:
    path = _config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["sources"] = ["incoming/*.jsonl"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"every source must name its day with \{ds\}"):
        load_config(path)
    raw["data"].update(mode="corpus", sources=["incoming/ds={ds}/*.jsonl"])
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="set data.mode: partitioned"):
        load_config(path)
    raw["data"].update(sources=["incoming/*.jsonl"])  # corpus mode with a partitioned flywheel's settings
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="min_rows_per_slice: only read under data.mode: partitioned"):
        load_config(path)


def test_a_rounds_page_shows_its_days_data_and_the_quarantined_rows(days: dict) -> None:
    """The Arena view's round page names the day each step battles on, what was read, quarantined (a problem, with
    where the rows are), removed and kept."""
    from arena_ops.ui.data import ArenaReader

    bad = days["root"] / "incoming/ds=2026-03-02/broken.jsonl"
    bad.write_text('{"id": "ok-1", "instruction": "A line that is fine."}\nnot json at all\n')
    resolve(str(days["root"] / "nightly.yaml"), iteration=0)
    resolve(str(days["root"] / "nightly.yaml"), iteration=1)
    reader = ArenaReader(days["store"])
    one = reader.round_page("nightly", 0)
    (day,) = one["data"]
    got = (day["source"], day["files"], day["read"], day["quarantined"], day["kept"])
    assert got == ("day 2026-03-01", 2, 60, 0, 60)
    assert not one["problems"] and [s["partition"] for s in one["steps"]] == ["2026-03-01"] * 3
    two = reader.round_page("nightly", 1)
    (day,) = two["data"]
    assert (day["source"], day["files"], day["read"], day["quarantined"]) == ("day 2026-03-02", 2, 82, 1)
    assert day["removed"] == {"seen_near": 15, "seen_exact": 3, "decontam": 2} and day["kept"] == 61
    (problem,) = two["problems"]
    assert problem["where"] == "data, day 2026-03-02" and "1 row(s)" in problem["reason"]
    assert problem["reason"].endswith("nightly/data/ds=2026-03-02/quarantine.parquet names each file, row and reason")
    from fastapi.testclient import TestClient

    from arena_ops.airflow.auth import airflow_user
    from arena_ops.ui.app import create_app

    app = create_app(lambda: days["store"], airflow_user)
    app.dependency_overrides[airflow_user] = lambda: "tester"
    page = TestClient(app).get("/rounds/1", params={"flywheel": "nightly"}).text
    assert '<tr data-source="day 2026-03-02">' in page and '<td class="quarantined err">1</td>' in page
    assert "decontam 2, seen_exact 3, seen_near 15" in page and "Skipped or failed" in page
