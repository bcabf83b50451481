"""`dag.test()` of a whole round (`arena_flywheel_round__dagtest`, generated from a flywheel folder) on CPU: real vLLM
tiny models on Ray Serve (the session deployment), real TRL SFT step under DeepSpeed, artifacts in an S3-protocol store
(moto on loopback). A second run of the same iteration changes nothing; a stage retrained into the same key is
evaluated anew, and nothing else is redone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arena_ops import layout
from arena_ops.config import load_config
from arena_ops.round import Round
from arena_ops.store import ArtifactStore
from tests.integration.conftest import Serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

RUN_DAG = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from airflow.utils import db
db.resetdb()
import arena_flywheel_round as m
run = getattr(m, "arena_flywheel_round__dagtest").test(run_conf=json.loads(sys.argv[2]))
tis = run.get_task_instances()
states = {ti.task_id + ("" if ti.map_index < 0 else f"[{ti.map_index}]"): str(ti.state) for ti in tis}
print("RESULT " + json.dumps({"state": str(run.state), "tasks": states}))
"""


def round_config(serving: Serving, tmp_path: Path, s3_server: str, bucket: str) -> Path:
    """The session deployment's tiny-a as target against recorded correct answers, judged by a regex verifier on a
    task with checkable answers: the target's losses are certain, so the round has SFT data to train on. (The LLM
    judge on Ray Serve is covered by test_battle.py.)"""
    problems = [(a, b) for a in range(1, 7) for b in range(1, 3)]
    (tmp_path / "tasks.jsonl").write_text(
        "".join(
            json.dumps({"id": f"add-{a}-{b}", "instruction": f"What is {a} plus {b}?", "output": rf"^\s*{a + b}(?!\d)"})
            + "\n"
            for a, b in problems
        )
    )
    (tmp_path / "oracle.jsonl").write_text(
        "".join(json.dumps({"prompt_id": f"add-{a}-{b}", "response": str(a + b)}) + "\n" for a, b in problems)
    )
    cfg = yaml.safe_load(serving.config.read_text())
    root = serving.config.parent
    for spec in [cfg["models"]["target"], cfg["models"]["judge"]]:
        spec["source"]["path"] = str((root / spec["source"]["path"]).resolve())
    cfg["models"]["target"]["sampling"] = {"temperature": 0.0, "max_tokens": 4}
    cfg["models"]["competitors"] = [
        {"name": "oracle", "source": {"kind": "recorded", "path": str(tmp_path / "oracle.jsonl")}}
    ]
    cfg.update(
        flywheel="dagtest",
        storage={"root": f"s3://{bucket}/arena", "s3": {"endpoint_url": s3_server}},
        data={
            "sources": [str(tmp_path / "tasks.jsonl")],
            "num_shards": 3,
            "min_instruction_chars": 0,
            "prefix_dedup_chars": 0,
            "minhash_threshold": None,
            "languages": None,
        },
        battle={"sample_limit": 4, "concurrency": 4, "chunk_size": 4},
        judge={"kind": "verifier", "verifier": "regex"},
        training={"stages": ["sft"], "sft": {"learning_rate": 1.0e-4, "epochs": 1, "max_steps": 1, "max_length": 256}},
        rating={"bootstrap_rounds": 20},
        airflow={"schedule": None, "judge_chunks": 2, "train_poke_s": 2, "retries": 1},
    )
    folder = tmp_path / "flywheels"  # $ARENA_FLYWHEELS: the DAG file generates arena_flywheel_round__dagtest
    folder.mkdir()
    path = folder / "round.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_dag(serving: Serving, tmp_path: Path, config: Path, conf: dict) -> dict:
    env = {
        **serving.env,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "ARENA_FLYWHEELS": str(config.parent),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    res = subprocess.run(
        [sys.executable, "-c", RUN_DAG, str(REPO / "dags"), json.dumps(conf)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=tmp_path,
    )
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout[-3000:] + res.stderr[-5000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    if out["state"] != "success":  # surface the failing task's traceback
        log = res.stdout + res.stderr
        (tmp_path / "dag.log").write_text(log)
        start = log.find("Traceback")
        pytest.fail(f"{out['tasks']}\n{log[start - 300 : start + 6000] if start >= 0 else log[-6000:]}")
    return out


def test_round_dag_end_to_end_and_idempotent(
    serving: Serving, tmp_path: Path, s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = round_config(serving, tmp_path, s3_server, s3_bucket)
    first = run_dag(serving, tmp_path, config, {"iteration": 0})
    assert first["state"] == "success", (first["tasks"], first.get("log"))
    tasks = first["tasks"]
    assert tasks["wait_sft"] == "success" and tasks["submit_dpo"] == "success"  # dpo: not in this round's plan
    assert tasks["battles_2"] == "success" and tasks["evaluate_sft"] == "success"

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    cfg = load_config(config)
    store = ArtifactStore.from_config(cfg.storage)
    rnd = Round.load(store, "dagtest", 0)
    assert [(s.name, s.slice) for s in rnd.steps] == [("sft", 0)] and rnd.start.label == "tiny-a@base"
    battles = store.manifest(layout.battles("dagtest", 0, "sft-shard-000"))
    assert battles.meta["battles"] + battles.meta["invalid"] == 4 and battles.meta["battled_model"] == rnd.start.uri
    model = store.manifest(layout.model("dagtest", 0, "sft"))
    assert model.meta["metrics"]["steps"] == 1 and model.meta["base_model"] == rnd.start.uri
    handle = store.read_json(layout.job("dagtest", 0, "sft") + "/handle.json")
    assert handle["stage"] == "sft" and "/tmp" not in json.dumps({k: v for k, v in handle.items() if k != "pid"})
    report = json.loads(store.get_bytes(layout.round_report("dagtest", 0) + "/report.json"))
    assert report["steps"][0]["battles"]["count"] == battles.meta["battles"]
    assert report["training"][0]["stage"] == "sft" and report["steps"][0]["produced"]["sft"]["label"] == "tiny-a@i0-sft"
    parts = (store.list("dagtest/iter=0/responses"), store.list("dagtest/iter=0/judgments"))

    second = run_dag(serving, tmp_path, config, {"iteration": 0})
    assert second["state"] == "success", (second["tasks"], second.get("log"))
    assert (store.list("dagtest/iter=0/responses"), store.list("dagtest/iter=0/judgments")) == parts
    again = store.manifest(layout.battles("dagtest", 0, "sft-shard-000"))
    assert again.committed_at == battles.committed_at
    assert store.manifest(layout.model("dagtest", 0, "sft")).committed_at == model.committed_at

    # A stage retrained into the same key (another learning rate, as a cleared task rerun or an ablation that reuses
    # the name would): the model's content is new, so its evaluation answers anew — what the base model battled and
    # its evaluation are reused. The same functions the DAG's tasks call, in this process.
    from arena_ops import catalogue, flywheel
    from arena_ops.data.pipeline import read_shard
    from arena_ops.revisions import weights_revision
    from arena_ops.training.run import train_stage

    for k in ("ARENA_RAY_STATE", "ARENA_RAY_TMP", "ARENA_RAY_PORT"):
        monkeypatch.setenv(k, serving.env[k])
    import arena_ops.serving.deploy as deploy  # its module constants read the env at import

    monkeypatch.setattr(deploy, "STATE_DIR", Path(serving.env["ARENA_RAY_STATE"]))
    monkeypatch.setattr(deploy, "LOCAL_HEAD_PORT", int(serving.env["ARENA_RAY_PORT"]))
    ref = rnd.ref()
    # A Mix test set (the slice's own checkable prompts will do here), then both models of the round rated on it.
    with store.artifact_at(layout.testset("dagtest", "mix")) as w:
        w.write_table("data.parquet", read_shard(cfg, store, 0))
    assert not flywheel.evaluate(ref, "start")["mix"].get("reused")
    assert not flywheel.evaluate(ref, "sft")["mix"].get("reused")
    eval_key = layout.eval_battles("dagtest", "mix", "i0-sft")
    before = store.manifest(eval_key)
    old_revision = weights_revision(store.key_uri(layout.model("dagtest", 0, "sft")), cfg.storage)
    eval_parts = set(store.list("dagtest/eval/mix/responses"))
    snap = rnd.cfg()
    snap.training.sft.learning_rate = 3.0e-3
    train_stage(snap, store, 0, "sft", base=rnd.start.uri, labels={"label": "tiny-a@i0-sft"})
    new_revision = weights_revision(store.key_uri(layout.model("dagtest", 0, "sft")), cfg.storage)
    assert new_revision != old_revision and new_revision.startswith("sha256:")

    assert flywheel.battle_step(ref, 0).get("reused") is True  # the base model's battles: unchanged inputs
    assert flywheel.evaluate(ref, "start")["mix"].get("reused") is True
    redone = flywheel.evaluate(ref, "sft")["mix"]
    assert not redone.get("reused"), redone
    after = store.manifest(eval_key)
    assert after.committed_at != before.committed_at and after.meta["plan_key"] != before.meta["plan_key"]
    assert set(store.list("dagtest/eval/mix/responses")) > eval_parts  # new answers, the old ones kept
    table = store.read_artifact_table(eval_key)
    target_revisions = set(table["revision_a"].to_pylist()) | set(table["revision_b"].to_pylist())
    assert new_revision in target_revisions and old_revision not in target_revisions
    labels = {e.label for e in catalogue.battle_tables(store, "dagtest", "eval", testset="mix")}
    assert labels == {"tiny-a@base", "tiny-a@i0-sft"}
