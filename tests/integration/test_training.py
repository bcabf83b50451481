"""Every TRL stage runs a few real steps under DeepSpeed ZeRO on CPU (launched as a job), its parameters change,
and the model is registered in the store; a 2-process launch works; a failing job surfaces its log."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from safetensors.numpy import load_file

from arena_ops.config import ArenaConfig, load_config
from arena_ops.errors import TrainingError
from arena_ops.store import ArtifactStore
from arena_ops.training.launch import deepspeed_config, validate_deepspeed_config
from arena_ops.training.run import default_base, registry, train_stage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
U = lambda t: [{"role": "user", "content": t}]  # noqa: E731
A = lambda t: [{"role": "assistant", "content": t}]  # noqa: E731
QA = [("What is 2 plus 2?", "4", "5"), ("Capital of France?", "Paris", "Rome"), ("Colour of the sky?", "Blue", "Green")]


def setup(tmp_path: Path, base: Path, **overrides: object) -> tuple[ArenaConfig, ArtifactStore]:
    steps = {"max_steps": 2, "max_length": 128, "per_device_batch_size": 1}
    cfg = load_config(
        REPO / "configs/tiny.yaml",
        {
            "storage.root": f"file://{tmp_path}/store",
            "models.target.source.path": str(base),
            "training.sft": steps,
            "training.dpo": steps,
            "training.rm": steps,
            "training.rl": steps,
            **overrides,
        },
    )
    store = ArtifactStore.from_config(cfg.storage)
    tables = {
        "sft": pa.table(
            {"prompt_id": ["a", "b", "c"], "prompt": [U(q) for q, _, _ in QA], "completion": [A(g) for _, g, _ in QA]}
        ),
        "dpo": pa.table(
            {
                "prompt_id": ["a", "b", "c"],
                "prompt": [U(q) for q, _, _ in QA],
                "chosen": [A(g) for _, g, _ in QA],
                "rejected": [A(b) for _, _, b in QA],
            }
        ),
        "rl": pa.table({"prompt_id": ["a", "b", "c"], "prompt": [U(q) for q, _, _ in QA]}),
    }
    tables["rm"] = tables["dpo"]
    for name, t in tables.items():
        with store.artifact(cfg.flywheel, 0, "train-data", name, meta={}) as w:
            w.write_table("data.parquet", t)
    return cfg, store


def weights(model_uri: str) -> dict:
    return load_file(str(Path(model_uri.removeprefix("file://")) / "model.safetensors"))


def changed(before: dict, after: dict) -> bool:
    shared = [k for k in before if k in after and before[k].shape == after[k].shape]
    return bool(shared) and any(not (before[k] == after[k]).all() for k in shared)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arena_ops.tiny_model import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("base") / "tiny", arch="llama", seed=0)


def test_every_stage_trains_under_zero_and_registers(base: Path, tmp_path: Path) -> None:
    cfg, store = setup(tmp_path, base, **{"training.deepspeed.zero_stage": 2})
    original = load_file(str(base / "model.safetensors"))
    sft = train_stage(cfg, store, 0, "sft")
    assert sft["metrics"]["steps"] == 2 and changed(original, weights(sft["model_uri"]))
    assert default_base(cfg, store, 0, "dpo") == sft["model_uri"]  # DPO continues from this iteration's SFT
    dpo = train_stage(cfg, store, 0, "dpo")
    assert dpo["base_model"] == sft["model_uri"] and changed(weights(sft["model_uri"]), weights(dpo["model_uri"]))
    rm = train_stage(cfg, store, 0, "rm")
    assert rm["metrics"]["steps"] == 2 and "score.weight" in weights(rm["model_uri"])
    rl = train_stage(cfg, store, 0, "rl")
    assert rl["base_model"] == dpo["model_uri"] and changed(weights(dpo["model_uri"]), weights(rl["model_uri"]))
    assert [e["stage"] for e in registry(cfg, store)] == ["sft", "dpo", "rm", "rl"]
    entry = registry(cfg, store)[0]
    assert entry["dataset"].endswith("train-data/sft/data.parquet") and entry["hyperparams"]["max_steps"] == 2
    # Same inputs again: the registered model is reused, nothing is launched.
    assert train_stage(cfg, store, 0, "sft").get("reused") is True


def test_zero3_with_offload_and_two_processes(base: Path, tmp_path: Path) -> None:
    cfg, store = setup(
        tmp_path,
        base,
        **{
            "training.deepspeed": {"zero_stage": 3, "offload_optimizer": True, "offload_params": True},
            "training.launcher.num_processes": 2,
        },
    )
    sft = train_stage(cfg, store, 0, "sft")
    assert sft["metrics"]["world_size"] == 2 and sft["metrics"]["steps"] == 2
    assert changed(load_file(str(base / "model.safetensors")), weights(sft["model_uri"]))


def test_failing_job_surfaces_its_log(base: Path, tmp_path: Path) -> None:
    cfg, store = setup(tmp_path, tmp_path / "no-such-model")
    with pytest.raises(TrainingError, match=r"training job failed \(exit 1\).*last lines:(.|\n)*no-such-model"):
        train_stage(cfg, store, 0, "sft")


SUBMIT = r"""
import sys
from arena_ops.config import load_config
from arena_ops.store import ArtifactStore
from arena_ops.training.run import prepare_stage, submit_stage
cfg = load_config(sys.argv[1])
store = ArtifactStore.from_config(cfg.storage)
print(submit_stage(cfg, store, prepare_stage(cfg, store, 0, "sft", sys.argv[2])).model_dump_json())
"""
WAIT = r"""
import json, sys, time
from arena_ops.config import load_config
from arena_ops.store import ArtifactStore
from arena_ops.training.run import TrainingJob, finish_stage, poll_stage
cfg = load_config(sys.argv[1])
store = ArtifactStore.from_config(cfg.storage)
job = TrainingJob.load(store, cfg.flywheel, 0, "sft")  # the handle, from the store: nothing is passed on
deadline = time.monotonic() + 600
while not poll_stage(cfg, store, job):
    assert time.monotonic() < deadline, "job never finished"
    time.sleep(1)
print(json.dumps(finish_stage(store, job)))
"""


def test_submit_and_wait_in_separate_processes_share_only_the_store(base: Path, tmp_path: Path) -> None:
    """As under KubernetesExecutor or Celery: the submitting and the waiting task run on different machines."""
    import json
    import os
    import subprocess
    import sys

    cfg, _ = setup(tmp_path, base)
    path = tmp_path / "arena.yaml"
    path.write_text(cfg.to_yaml())
    submit_tmp, wait_tmp = tmp_path / "submitter-tmp", tmp_path / "waiter-tmp"
    submit_tmp.mkdir()
    wait_tmp.mkdir()

    def run(code: str, tmp: Path) -> str:
        env = {**os.environ, "TMPDIR": str(tmp)}
        res = subprocess.run(
            [sys.executable, "-c", code, str(path), str(base)], capture_output=True, text=True, env=env
        )
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout.strip().splitlines()[-1]

    handle = json.loads(run(SUBMIT, submit_tmp))
    assert handle["pid"] and not any(str(submit_tmp) in str(v) for v in handle.values())
    entry = json.loads(run(WAIT, wait_tmp))
    assert entry["metrics"]["steps"] == 2 and entry["model_uri"].endswith("/iter=0/model/sft")
    assert list(wait_tmp.iterdir()) == []  # the waiter needed no local files
    assert entry["log"].endswith(f"/iter=0/jobs/sft/train-{handle['fingerprint']}.log")


def test_deepspeed_config_is_validated_before_launch() -> None:
    from arena_ops.config import DeepSpeedConfig

    ds = deepspeed_config(DeepSpeedConfig(zero_stage=3, offload_params=True), grad_accum=2, micro_batch=1)
    validate_deepspeed_config(ds)
    with pytest.raises(TrainingError, match="invalid DeepSpeed config"):
        validate_deepspeed_config({**ds, "zero_optimization": {"stage": 7}})


@pytest.fixture
def ray_jobs_cluster(tmp_path: Path):
    """A throwaway Ray head with the dashboard (Jobs API) on loopback, in its own process group."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    import httpx

    from tests.conftest import free_port

    dash, gcs = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    ray_bin = str(Path(sys.executable).parent / "ray")
    cmd = [
        ray_bin,
        "start",
        "--head",
        "--block",
        f"--port={gcs}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        "--include-dashboard=true",
        "--num-cpus=2",
        f"--temp-dir={tempfile.mkdtemp(prefix='rj-', dir='/tmp')}",
        "--disable-usage-stats",
    ]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "ray start exited"
            time.sleep(1)
        yield url, env, f"127.0.0.1:{gcs}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)  # `ray start --block` rarely exits on SIGTERM within 30 s (measured); don't wait for it
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_ray_job_launcher_trains_and_registers(base: Path, tmp_path: Path, ray_jobs_cluster, monkeypatch) -> None:
    url, _env, _gcs = ray_jobs_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cfg, store = setup(tmp_path, base, **{"training.launcher": {"kind": "ray_job", "ray_address": url}})
    sft = train_stage(cfg, store, 0, "sft", timeout_s=600)
    assert sft["launcher"] == "ray_job" and sft["metrics"]["steps"] == 2
    assert changed(load_file(str(base / "model.safetensors")), weights(sft["model_uri"]))
    # The job's own last line, fetched from Ray Jobs into the store.
    assert sft["model_uri"] in Path(sft["log"].removeprefix("file://")).read_text()


def test_init_trains_the_start_model_as_a_ray_job_and_iteration_0_starts_from_it(
    base: Path, tmp_path: Path, ray_jobs_cluster, monkeypatch
) -> None:
    """The paper's SFT-I0: a sample of a ShareGPT-format corpus, SFT as a Ray job, the start model of iteration 0."""
    import json

    from arena_ops.round import start_model
    from arena_ops.training.init import train_init

    url, _env, _gcs = ray_jobs_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    convs = [
        {"id": f"c{i}", "conversations": [{"from": "human", "value": q + f" ({i})"}, {"from": "gpt", "value": a}]}
        for i, (q, a, _) in enumerate(QA * 4)
    ]
    convs.append({"id": "no-answer", "conversations": [{"from": "human", "value": "Unanswered?"}]})
    (tmp_path / "sharegpt.json").write_text(json.dumps(convs))
    cfg, store = setup(
        tmp_path,
        base,
        **{
            "training.launcher": {"kind": "ray_job", "ray_address": url},
            "training.init": {"max_steps": 2, "max_length": 128, "per_device_batch_size": 1},
            "data.init_sources": [str(tmp_path / "sharegpt.json")],
            "data.init_sample": 8,
        },
    )
    assert start_model(cfg, store, 0).label == "tiny-target@base"  # before init: the configured weights
    entry = train_init(cfg, store, timeout_s=600)
    assert entry["launcher"] == "ray_job" and entry["stage"] == "init" and entry["metrics"]["steps"] == 2
    assert entry["data"]["rows"] == 8 and entry["data"]["candidates"] == 12 and entry["data"]["quarantined"] == 1
    assert changed(load_file(str(base / "model.safetensors")), weights(entry["model_uri"]))
    start = start_model(cfg, store, 0)
    assert start.uri == entry["model_uri"] and start.label == "tiny-target@i0-init"
    assert train_init(cfg, store)["reused"] is True  # the same sample and settings: nothing is launched


def test_embedding_runs_as_a_ray_task_where_sentence_transformers_is_missing(
    base: Path, tmp_path: Path, ray_jobs_cluster, monkeypatch
) -> None:
    """The Airflow image has no torch: decontamination and test-set clustering embed on the Ray cluster instead."""
    import numpy as np

    from arena_ops.data import embed as embed_mod
    from arena_ops.errors import DataError

    _url, _env, gcs = ray_jobs_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    texts = ["Write a haiku about rain.", "Sort a list in Python.", "Write a short poem about rain."]
    local = embed_mod.embed(texts)
    monkeypatch.setattr(embed_mod, "embeds_here", lambda: False)
    cfg, _ = setup(tmp_path, base, **{"serving.ray_address": None})
    with pytest.raises(DataError, match=r"arena-flywheel\[embed\]"):
        embed_mod.embedder(cfg)
    cfg, _ = setup(tmp_path, base, **{"serving.ray_address": gcs})
    remote = embed_mod.embedder(cfg)(texts)
    assert remote.shape == local.shape == (3, 384)
    np.testing.assert_allclose(remote, local, atol=1e-5)
    assert not __import__("ray").is_initialized()  # the driver connection was for the call only
