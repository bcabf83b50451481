"""Train one stage of a round: resolve its base model and dataset, write the job, launch it, return the registry
entry. The registry is the set of committed ``{flywheel}/iter={i}/model/{stage}`` artifacts: each manifest records
iteration, stage, base model, dataset, hyperparameters, metrics and the model URI the next round serves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from arena_ops.config import ArenaConfig, ServedSource
from arena_ops.errors import TrainingError
from arena_ops.store import ArtifactStore

from .build import STAGE as DATA_STAGE
from .launch import (
    deepspeed_config,
    poll_local,
    poll_ray_job,
    run_local,
    run_ray_job,
    start_local,
    submit_ray_job,
    validate_deepspeed_config,
)

log = logging.getLogger(__name__)

ROUND_ORDER = ("sft", "dpo", "rl")  # the paper's order; the reward model is trained when rl is in the plan
DATASET_OF = {"sft": "sft", "dpo": "dpo", "rm": "rm", "rl": "rl"}


def registry(cfg: ArenaConfig, store: ArtifactStore) -> list[dict[str, Any]]:
    """Every registered model of the flywheel, oldest first, with its ``model_uri``."""
    out = []
    for it in store.list_iterations(cfg.flywheel):
        for stage in store.list_artifacts(cfg.flywheel, it, "model"):
            prefix = store.artifact_key(cfg.flywheel, it, "model", stage)
            m = store.manifest(prefix)
            out.append({**m.meta, "model_uri": store.key_uri(prefix), "committed_at": m.committed_at})
    order = {s: i for i, s in enumerate(("sft", "dpo", "rm", "rl"))}
    return sorted(out, key=lambda e: (e["iteration"], order.get(e["stage"], 9)))


def round_target(cfg: ArenaConfig, store: ArtifactStore, iteration: int) -> str:
    """The target served in round ``iteration``: the last policy trained in an earlier round, else the base."""
    policies = [e for e in registry(cfg, store) if e["iteration"] < iteration and e["stage"] != "rm"]
    if policies:
        return policies[-1]["model_uri"]
    src = cfg.models.target.source
    return src.path if isinstance(src, ServedSource) else ""  # recorded/external targets are not trained


def stage_base(cfg: ArenaConfig, store: ArtifactStore, iteration: int, stage: str) -> str:
    """sft starts from the round's target; dpo from this round's sft model if any; rl from dpo or sft; rm from the
    round's target (as a classifier)."""
    if stage in ("dpo", "rl"):
        earlier = ROUND_ORDER[: ROUND_ORDER.index(stage)]
        done = {e["stage"]: e for e in registry(cfg, store) if e["iteration"] == iteration}
        for s in reversed(earlier):
            if s in done:
                return done[s]["model_uri"]
    return round_target(cfg, store, iteration)


def prepare_stage(cfg: ArenaConfig, store: ArtifactStore, iteration: int, stage: str) -> dict[str, Any]:
    """Resolve base model and dataset and write the job files. Returns a handle: ``{"done": entry}`` when there is
    nothing to train (no rows, or this exact job is already registered), else ``{"work": dir, …}`` to launch."""
    if stage not in DATASET_OF:
        raise TrainingError(f"unknown stage {stage!r}; expected one of {list(DATASET_OF)}")
    t = cfg.training
    hp = {"sft": t.sft, "dpo": t.dpo, "rm": t.rm, "rl": t.rl}[stage].model_dump()
    data_prefix = store.artifact_key(cfg.flywheel, iteration, DATA_STAGE, DATASET_OF[stage])
    if not store.is_committed(data_prefix):
        raise TrainingError(f"no {stage} training data for iteration {iteration}: run `arena train build-data` first")
    data_manifest = store.manifest(data_prefix)
    if data_manifest.rows == 0:
        log.info("%s: no training rows in iteration %d; stage skipped", stage, iteration)
        return {"done": {"stage": stage, "iteration": iteration, "skipped": "no training rows"}}
    ds = deepspeed_config(t.deepspeed, hp["gradient_accumulation_steps"], hp["per_device_batch_size"])
    validate_deepspeed_config(ds)
    job: dict[str, Any] = {
        "stage": stage,
        "base_model": stage_base(cfg, store, iteration, stage),
        "dataset_key": f"{data_prefix}/data.parquet",
        "dataset_uri": store.key_uri(f"{data_prefix}/data.parquet"),
        "hyperparams": hp,
        "storage": cfg.storage.model_dump(mode="json"),
        "artifact": {"flywheel": cfg.flywheel, "iteration": iteration},
        "rl_algorithm": t.rl_algorithm,
        "seed": 0,
        "launcher": t.launcher.kind,
        "device": _device(cfg),
        "bf16": _device(cfg) == "gpu",
    }
    if stage == "rl":
        rm = next((e for e in registry(cfg, store) if e["iteration"] == iteration and e["stage"] == "rm"), None)
        if rm is None:
            raise TrainingError(f"rl needs this round's reward model: train stage rm of iteration {iteration} first")
        job["reward_model"] = rm["model_uri"]
    job["fingerprint"] = hashlib.sha256(
        json.dumps([job, data_manifest.file("data.parquet").sha256, ds], sort_keys=True).encode()
    ).hexdigest()[:16]
    model_prefix = store.artifact_key(cfg.flywheel, iteration, "model", stage)
    if store.is_committed(model_prefix) and store.manifest(model_prefix).meta.get("fingerprint") == job["fingerprint"]:
        log.info("%s of iteration %d is already trained with these inputs", stage, iteration)
        return {"done": {**store.manifest(model_prefix).meta, "model_uri": store.key_uri(model_prefix), "reused": True}}
    work = Path(tempfile.mkdtemp(prefix=f"arena-{stage}-"))
    job["deepspeed_config"] = "ds_config.json" if t.launcher.kind == "ray_job" else str(work / "ds_config.json")
    (work / "job.json").write_text(json.dumps(job, indent=2))
    ds_file = {k: v for k, v in ds.items() if k != "_arena_validate"}
    (work / "ds_config.json").write_text(json.dumps(ds_file, indent=2))
    return {"work": str(work), "stage": stage, "iteration": iteration, "model_prefix": model_prefix}


def finish_stage(store: ArtifactStore, handle: dict[str, Any]) -> dict[str, Any]:
    """The registry entry of a finished job (it commits the model itself)."""
    if "done" in handle:
        return handle["done"]
    prefix = handle["model_prefix"]
    if not store.is_committed(prefix):
        raise TrainingError(f"the {handle['stage']} job finished but committed no model at {store.key_uri(prefix)}")
    return {**store.manifest(prefix).meta, "model_uri": store.key_uri(prefix), "log": f"{handle['work']}/train.log"}


def train_stage(
    cfg: ArenaConfig, store: ArtifactStore, iteration: int, stage: str, timeout_s: float = 6 * 3600
) -> dict[str, Any]:
    """Train ``stage`` of round ``iteration`` and wait; a rerun with the same inputs returns the registered model."""
    handle = prepare_stage(cfg, store, iteration, stage)
    if "done" in handle:
        return handle["done"]
    work, t = Path(handle["work"]), cfg.training
    if t.launcher.kind == "ray_job":
        run_ray_job(t.launcher, work / "job.json", work, work / "ds_config.json", timeout_s)
    else:
        run_local(work / "job.json", work / "train.log", t.launcher.num_processes, work / "ds_config.json", timeout_s)
    return finish_stage(store, handle)


def submit_stage(cfg: ArenaConfig, handle: dict[str, Any]) -> dict[str, Any]:
    """Start a prepared job without waiting (Airflow submits, then a reschedule-mode sensor polls)."""
    if "done" in handle:
        return handle
    work, t = Path(handle["work"]), cfg.training
    if t.launcher.kind == "ray_job":
        return {**handle, "ray_job_id": submit_ray_job(t.launcher, work / "job.json", work, work / "ds_config.json")}
    return {
        **handle,
        "pid": start_local(work / "job.json", work / "train.log", t.launcher.num_processes, work / "ds_config.json"),
    }


def poll_stage(cfg: ArenaConfig, handle: dict[str, Any]) -> bool:
    """True when the submitted job has finished successfully; raises TrainingError (with the log tail) on failure."""
    if "done" in handle:
        return True
    if "ray_job_id" in handle:
        return poll_ray_job(cfg.training.launcher, handle["ray_job_id"], Path(handle["work"]))
    return poll_local(Path(handle["work"]))


def stages_for_round(cfg: ArenaConfig, plan: list[str] | None = None) -> list[str]:
    """The round's stages in the paper's order; ``rl`` brings its reward model (``rm``) just before it."""
    wanted = plan or cfg.training.stages
    out = [s for s in ROUND_ORDER if s in wanted]
    if "rl" in out:
        out.insert(out.index("rl"), "rm")
    return out


def _device(cfg: ArenaConfig) -> str:
    src = cfg.models.target.source
    return src.engine.device if isinstance(src, ServedSource) else "cpu"
