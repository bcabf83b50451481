"""DAG integrity: every DAG file imports cleanly in a fresh interpreter, parses fast, imports nothing heavy at parse
time, and every task retries; the DAGs are generated per flywheel of the folder ``$ARENA_FLYWHEELS`` — none without
a folder, and a broken config reported by name while the other flywheels' DAGs still load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (REPO / "dags").glob("arena_*.py"))
HEAVY = ["torch", "vllm", "ray", "deepspeed", "transformers", "trl", "datasets", "sklearn", "sentence_transformers"]

PROBE = r"""
import json, os, sys, time, importlib.util
sys.path.insert(0, os.environ["DAGS"])
import airflow.sdk  # the SDK itself is not what we time
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
parse_s = time.perf_counter() - t0
dags = {v.dag_id: v for v in vars(mod).values() if v.__class__.__name__ == "DAG"}
heavy = [m for m in json.loads(os.environ["HEAVY"]) if m in sys.modules]
out = {"parse_s": parse_s, "heavy": heavy, "dags": {}}
for dag_id, d in dags.items():
    out["dags"][dag_id] = {
        "tasks": {t.task_id: t.retries for t in d.tasks},
        "params": sorted(d.params),
        "max_active_runs": d.max_active_runs,
        "catchup": d.catchup,
        "description": d.description,
        "tags": sorted(d.tags),
        "waits": sorted({type(t).__name__ for t in d.tasks if t.task_id.startswith("wait_")}),
        "schedule_assets": sorted(a.uri for a in getattr(getattr(d.timetable, "asset_condition", None), "objects", [])),
        "outlets": sorted({a.uri for t in d.tasks for a in t.outlets}),
    }
print(json.dumps(out))
"""


def parse(path: Path, tmp_path: Path, folder: Path | None) -> dict:
    env = {
        "DAGS": str(REPO / "dags"),
        "HEAVY": json.dumps(HEAVY),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PATH": "/usr/bin:/bin",
    }
    if folder is not None:
        env["ARENA_FLYWHEELS"] = str(folder)
    res = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["log"] = res.stdout + res.stderr
    return out


def tiny_variant(
    folder: Path, name: str, data_settings: dict | None = None, top: dict | None = None, **training: object
) -> Path:
    """A copy of configs/tiny.yaml under another flywheel name (paths made absolute, so it loads from anywhere)."""
    from arena_ops.config import load_config
    from arena_ops.round import snapshot

    data = snapshot(load_config(REPO / "configs" / "tiny.yaml"))
    data["flywheel"] = name
    data.setdefault("training", {}).update(training)
    data["data"].update(data_settings or {})
    data.update(top or {})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The tiny flywheel (a link, as `arena stack up` makes one) and a K = 3.0 copy of it named tiny-k3."""
    d = tmp_path / "flywheels"
    d.mkdir()
    (d / "tiny.yaml").symlink_to(REPO / "configs" / "tiny.yaml")
    bench = {"name": "wizard-mix", "models": ["tiny-target", "tiny-qwen2"], "testset": "mix"}
    tiny_variant(d, "tiny-k3", top={"benchmarks": [bench]}, k_sft=3.0, k_sft_first=3.0)  # it declares a benchmark
    corpus = load_tiny_sources()
    nightly = {"mode": "partitioned", "sources": ["/data/prompts/ds={ds}/*.jsonl"], "testset_sources": corpus}
    tiny_variant(d, "tiny-nightly", data_settings=nightly)  # on date partitions: it has an ingest DAG too
    return d


def load_tiny_sources() -> list[str]:
    from arena_ops.config import load_config

    return load_config(REPO / "configs" / "tiny.yaml").data.sources


ALL = ["tiny", "tiny_k3", "tiny_nightly"]
PARTITIONED = ["tiny_nightly"]  # the DAG files that generate DAGs for these only
ONLY = {"arena_ingest": PARTITIONED, "arena_bench": ["tiny_k3__wizard_mix"]}  # one DAG per declared benchmark


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_fast_light_and_with_retries(path: Path, tmp_path: Path, folder: Path) -> None:
    out = parse(path, tmp_path, folder)
    assert out["heavy"] == [], f"{path.name} imports {out['heavy']} at parse time"
    assert out["parse_s"] < 2.0, f"{path.name} took {out['parse_s']:.2f}s to parse two flywheels"
    base = path.stem
    assert sorted(out["dags"]) == [f"{base}__{suffix}" for suffix in ONLY.get(base, ALL)], out["dags"].keys()
    for dag_id, d in out["dags"].items():
        assert d["tasks"] and all(r >= 1 for r in d["tasks"].values()), (dag_id, d["tasks"])


def test_each_flywheel_has_its_own_asset(tmp_path: Path, folder: Path) -> None:
    """The rounds of each flywheel update its own battles Asset, and each Elo DAG is scheduled on its own only."""
    rounds = parse(REPO / "dags" / "arena_flywheel_round.py", tmp_path, folder)["dags"]
    elo = parse(REPO / "dags" / "arena_elo.py", tmp_path, folder)["dags"]
    for name, suffix in (("tiny", "tiny"), ("tiny-k3", "tiny_k3")):
        asset = f"arena://{name}/battles"
        assert rounds[f"arena_flywheel_round__{suffix}"]["outlets"] == [asset]
        assert elo[f"arena_elo__{suffix}"]["schedule_assets"] == [asset]
        assert f"flywheel:{name}" in rounds[f"arena_flywheel_round__{suffix}"]["tags"]
    ingest = parse(REPO / "dags" / "arena_ingest.py", tmp_path, folder)["dags"]
    assert ingest["arena_ingest__tiny_nightly"]["outlets"] == ["arena://tiny-nightly/data"]


@pytest.mark.parametrize("setting", ["unset", "empty", "missing"])
def test_no_folder_no_dags_and_no_error(setting: str, tmp_path: Path) -> None:
    folder = {"unset": None, "empty": tmp_path / "empty", "missing": tmp_path / "nowhere"}[setting]
    if setting == "empty":
        folder.mkdir()  # type: ignore[union-attr]
    for path in DAG_FILES:
        out = parse(path, tmp_path, folder)
        assert out["dags"] == {}, (path.name, out["dags"])
        assert "ARENA_FLYWHEELS" in out["log"], out["log"][-2000:]  # the reason is logged


def test_a_broken_config_is_reported_by_file_and_key_and_the_others_still_load(tmp_path: Path, folder: Path) -> None:
    broken = folder / "broken.yaml"
    text = (REPO / "configs" / "tiny.yaml").read_text().replace("flywheel: tiny", "flywheel: broken", 1)
    broken.write_text(text.replace("num_shards:", "num_shardz:", 1))
    rounds = parse(REPO / "dags" / "arena_flywheel_round.py", tmp_path, folder)
    assert {"arena_flywheel_round__tiny", "arena_flywheel_round__tiny_k3"} <= set(rounds["dags"])
    shown = rounds["dags"]["arena_flywheel_round__broken"]
    assert "broken.yaml" in shown["description"] and "num_shardz" in shown["description"], shown["description"]
    assert "broken-config" in shown["tags"] and list(shown["tasks"]) == ["config_error"]
    assert "broken.yaml" in rounds["log"] and "num_shardz" in rounds["log"]
    elo = parse(REPO / "dags" / "arena_elo.py", tmp_path, folder)["dags"]
    assert sorted(elo) == [f"arena_elo__{suffix}" for suffix in ALL]


def test_round_dag_shape_and_params(tmp_path: Path, folder: Path) -> None:
    out = parse(REPO / "dags" / "arena_flywheel_round.py", tmp_path, folder)["dags"]["arena_flywheel_round__tiny"]
    tasks = set(out["tasks"])
    assert {"resolve", "prepare_data", "evaluate_start", "report"} <= tasks
    for k in (1, 2, 3):  # one battle → data step per slice of the paper's iteration
        assert {f"battles_{k}", f"training_data_{k}"} <= tasks
    for stage in ("sft", "dpo", "rm", "rl"):  # every stage of the registry is submitted, then waited for
        assert {f"submit_{stage}", f"wait_{stage}"} <= tasks
    assert {"evaluate_sft", "evaluate_dpo", "evaluate_rl"} <= tasks and "evaluate_rm" not in tasks
    # No config_path: a round runs its own flywheel's config, never another's.
    assert out["params"] == ["competitors", "iteration", "promotion_approval", "sample_limit", "stages"]
    # An ambiguous promotion waits for a person (Airflow's human-in-the-loop operator), then the answer is recorded.
    assert {"needs_approval", "promotion_review", "record_approval"} <= tasks
    assert out["max_active_runs"] == 1 and out["catchup"] is False
    assert out["waits"] == ["WaitForTraining"]  # deferred: training waits without holding a worker slot
