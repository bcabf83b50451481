"""Train one stage of a round: resolve its base model and dataset, write the job to the store, launch it, wait.

Everything a later task needs lives in the store, never on a local disk: the job spec (``job.json``,
``ds_config.json``) at ``{flywheel}/iter={i}/jobs/{stage}``, the typed handle (:class:`TrainingJob`,
``handle.json``) beside it, and — written by the job's supervisor when it ends — ``status-{fingerprint}.json`` and
``train-{fingerprint}.log``. So ``submit`` and ``wait`` may run on different machines (KubernetesExecutor, Celery).

The registry is the set of committed ``{flywheel}/iter={i}/model/{stage}`` artifacts: each manifest records
iteration, stage, base model, dataset, hyperparameters, metrics and the model URI the next step serves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from arena_ops import layout
from arena_ops.config import ArenaConfig, ServedSource
from arena_ops.errors import TrainingError
from arena_ops.store import ArtifactStore

from .launch import (
    LOG_TAIL_LINES,
    deepspeed_config,
    poll_ray_job,
    start_local,
    submit_ray_job,
    validate_deepspeed_config,
)
from .stage_registry import ORDER, STAGES, stage

log = logging.getLogger(__name__)


class TrainingJob(BaseModel):
    """The handle of one stage's training job, persisted at ``{job_key}/handle.json``."""

    flywheel: str
    iteration: int
    stage: str
    job_key: str
    model_key: str
    fingerprint: str | None = None
    launcher: str = "local"
    ray_job_id: str | None = None
    pid: int | None = None
    done: dict[str, Any] | None = None  # the registry entry (or the skip reason) when nothing had to run

    def save(self, store: ArtifactStore) -> TrainingJob:
        store.write_json(f"{self.job_key}/handle.json", self.model_dump(mode="json"))
        return self

    @classmethod
    def load(cls, store: ArtifactStore, flywheel: str, iteration: int, stage_name: str) -> TrainingJob:
        key = f"{layout.job(flywheel, iteration, stage_name)}/handle.json"
        if not store.exists(key):
            raise TrainingError(f"no submitted {stage_name} job for {flywheel} iteration {iteration} ({key})")
        return cls.model_validate(store.read_json(key))

    @property
    def status_key(self) -> str:
        return f"{self.job_key}/status-{self.fingerprint}.json"

    @property
    def log_key(self) -> str:
        return f"{self.job_key}/train-{self.fingerprint}.log"


def registry(cfg: ArenaConfig, store: ArtifactStore) -> list[dict[str, Any]]:
    """Every registered model of the flywheel, oldest first, with its ``model_uri``."""
    out = []
    for it in store.list_iterations(cfg.flywheel):
        for name in store.list_artifacts(cfg.flywheel, it, layout.MODEL):
            prefix = layout.model(cfg.flywheel, it, name)
            m = store.manifest(prefix)
            out.append({**m.meta, "model_uri": store.key_uri(prefix), "committed_at": m.committed_at})
    order = {s: i for i, s in enumerate(ORDER)}
    return sorted(out, key=lambda e: (e["iteration"], order.get(e["stage"], 9)))


def base_weights(cfg: ArenaConfig) -> str:
    """The configured target weights (iteration 0's start); empty for recorded/external targets (not trainable)."""
    src = cfg.models.target.source
    return src.path if isinstance(src, ServedSource) else ""


def default_base(cfg: ArenaConfig, store: ArtifactStore, iteration: int, stage_name: str) -> str:
    """The base-model rule outside a round: this iteration's newest policy from a stage before ``stage_name``, else
    the newest policy of an earlier iteration, else the configured weights. (Rounds pass their own start model.)"""
    before = ORDER[: ORDER.index(stage(stage_name).name)]
    entries = [e for e in registry(cfg, store) if STAGES[e["stage"]].policy]
    now = [e for e in entries if e["iteration"] == iteration and e["stage"] in before]
    earlier = [e for e in entries if e["iteration"] < iteration]
    chosen = now or earlier
    return chosen[-1]["model_uri"] if chosen else base_weights(cfg)


def stage_hyperparams(cfg: ArenaConfig, stage_name: str, iteration: int) -> dict[str, Any]:
    """The stage's hyperparameters for ``iteration``: the configured ones, the learning rate scaled by
    ``training.lr_decay ** iteration``."""
    hp = stage(stage_name).hyperparams(cfg).model_dump()
    hp["learning_rate"] *= cfg.training.lr_decay**iteration
    return hp


def prepare_stage(
    cfg: ArenaConfig,
    store: ArtifactStore,
    iteration: int,
    stage_name: str,
    base: str,
    labels: dict[str, str] | None = None,
) -> TrainingJob:
    """Resolve the dataset and the models the stage needs, write the job spec to the store. ``done`` is set when
    there is nothing to train (no rows, or this exact job is already registered)."""
    spec = stage(stage_name)
    t, fw = cfg.training, cfg.flywheel
    job = TrainingJob(
        flywheel=fw,
        iteration=iteration,
        stage=spec.name,
        job_key=layout.job(fw, iteration, spec.name),
        model_key=layout.model(fw, iteration, spec.name),
        launcher=t.launcher.kind,
    )
    data_prefix = layout.train_data(fw, iteration, spec.name)
    if not store.is_committed(data_prefix):
        raise TrainingError(f"no {spec.name} training data for iteration {iteration}: build the step's data first")
    data_manifest = store.manifest(data_prefix)
    if data_manifest.rows == 0:
        log.info("%s: no training rows in iteration %d; stage skipped", spec.name, iteration)
        return job.model_copy(
            update={"done": {"stage": spec.name, "iteration": iteration, "skipped": "no training rows"}}
        )
    if not base:
        raise TrainingError(f"{spec.name}: the target is not a served model, so there are no weights to train")
    needs = {}
    for need in spec.needs:
        prefix = layout.model(fw, iteration, need)
        if not store.is_committed(prefix):
            raise TrainingError(
                f"{spec.name} needs this round's {need} model: train {need} of iteration {iteration} first"
            )
        needs[need] = store.key_uri(prefix)
    hp = stage_hyperparams(cfg, spec.name, iteration)
    ds = deepspeed_config(t.deepspeed, hp["gradient_accumulation_steps"], hp["per_device_batch_size"])
    validate_deepspeed_config(ds)
    device = _device(cfg)
    spec_body: dict[str, Any] = {
        "stage": spec.name,
        "iteration": iteration,
        "trainer": spec.trainer,
        "base_model": base,
        "needs": needs,
        "dataset_key": f"{data_prefix}/data.parquet",
        "dataset_uri": store.key_uri(f"{data_prefix}/data.parquet"),
        "hyperparams": hp,
        "storage": job_storage(cfg),
        "model_key": job.model_key,
        "job_key": job.job_key,
        "rl_algorithm": t.rl_algorithm,
        "seed": t.seed,
        "launcher": t.launcher.kind,
        "device": device,
        "bf16": device == "gpu",
        "deepspeed_config": "ds_config.json",  # beside job.json, wherever the job runs
        **(labels or {}),
    }
    fingerprint = hashlib.sha256(
        json.dumps([spec_body, data_manifest.file("data.parquet").sha256, ds], sort_keys=True).encode()
    ).hexdigest()[:16]
    spec_body["fingerprint"] = fingerprint
    job = job.model_copy(update={"fingerprint": fingerprint})
    if store.is_committed(job.model_key) and store.manifest(job.model_key).meta.get("fingerprint") == fingerprint:
        log.info("%s of iteration %d is already trained with these inputs", spec.name, iteration)
        entry = {**store.manifest(job.model_key).meta, "model_uri": store.key_uri(job.model_key), "reused": True}
        return job.model_copy(update={"done": entry})
    with store.artifact_at(job.job_key, meta={"fingerprint": fingerprint, "stage": spec.name}) as w:
        w.write_json("job.json", spec_body)
        w.write_json("ds_config.json", {k: v for k, v in ds.items() if k != "_arena_validate"})
    return job


def job_storage(cfg: ArenaConfig) -> dict[str, Any]:
    """The store as a training job sees it. A job never runs inside Airflow, where connections resolve: it reads
    and writes with its environment's credentials — the node's on a Ray cluster, or those its local launcher
    resolved (:func:`job_credentials`). The endpoint of an Airflow connection is not a secret: it travels."""
    storage = cfg.storage.model_dump(mode="json")
    s3 = cfg.storage.s3
    if s3.conn_id and cfg.storage.root.startswith("s3://"):
        from arena_ops.store import s3_credentials

        kwargs = s3_credentials(s3, cfg.storage.root)
        if "endpoint_override" in kwargs:
            storage["s3"]["endpoint_url"] = f"{kwargs['scheme']}://{kwargs['endpoint_override']}"
        storage["s3"]["region"] = kwargs["region"]
    storage["s3"]["conn_id"] = None
    return storage


def job_credentials(cfg: ArenaConfig) -> dict[str, str]:
    """Environment variables with the S3 keys of ``storage.s3.conn_id``, for a job this process launches."""
    s3 = cfg.storage.s3
    if not (s3.conn_id and cfg.storage.root.startswith("s3://")):
        return {}
    from arena_ops.store import s3_credentials

    kwargs = s3_credentials(s3, cfg.storage.root)
    env = {s3.access_key_env: kwargs["access_key"], s3.secret_key_env: kwargs["secret_key"]}
    if kwargs.get("session_token"):
        env[s3.session_token_env] = kwargs["session_token"]
    return env


def _local_copy(store: ArtifactStore, job: TrainingJob) -> Path:
    """The job spec in a fresh local directory of the machine that launches it (used by the launch only)."""
    work = Path(tempfile.mkdtemp(prefix=f"arena-{job.stage}-"))
    for name in ("job.json", "ds_config.json"):
        store.get_file(f"{job.job_key}/{name}", work / name)
    return work


def submit_stage(cfg: ArenaConfig, store: ArtifactStore, job: TrainingJob) -> TrainingJob:
    """Start a prepared job without waiting; the handle is saved to the store (Airflow submits, a sensor waits)."""
    if job.done is not None:
        return job.save(store)
    if store.exists(job.status_key):  # a rerun of this very job: its old result must not answer the new one
        store.delete(job.status_key)
    work, t = _local_copy(store, job), cfg.training
    if t.launcher.kind == "ray_job":
        try:
            ray_id = submit_ray_job(t.launcher, work / "job.json", work, work / "ds_config.json")
        finally:
            shutil.rmtree(work, ignore_errors=True)  # Ray packaged and uploaded the working dir at submission
        return job.model_copy(update={"ray_job_id": ray_id}).save(store)
    env = {**job_credentials(cfg), **({"OMP_NUM_THREADS": str(t.launcher.cpus)} if t.launcher.cpus else {})}
    pid = start_local(work / "job.json", t.launcher.num_processes, work / "ds_config.json", env)
    return job.model_copy(update={"pid": pid}).save(store)


def poll_stage(cfg: ArenaConfig, store: ArtifactStore, job: TrainingJob) -> bool:
    """True when the job has finished successfully; raises TrainingError (with the log tail) when it failed."""
    if job.done is not None:
        return True
    if job.ray_job_id is not None:
        return poll_ray_job(cfg.training.launcher, job.ray_job_id, store, job.log_key)
    exited = exit_status(store, job)
    if exited is None:
        return False
    code, tail = exited
    if code != 0:
        raise TrainingError(f"training job failed (exit {code}); log {store.key_uri(job.log_key)}; last lines:\n{tail}")
    return True


def exit_status(store: ArtifactStore, job: TrainingJob) -> tuple[int, str] | None:
    """A supervised job's exit code and the last lines of its log, from the store; None while it runs."""
    if not store.exists(job.status_key):
        return None
    code = int(store.read_json(job.status_key).get("exit_code", 1))
    if code == 0:
        return 0, ""
    text = store.get_bytes(job.log_key).decode(errors="replace") if store.exists(job.log_key) else ""
    return code, "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def finish_stage(store: ArtifactStore, job: TrainingJob) -> dict[str, Any]:
    """The registry entry of a finished job (it commits the model itself)."""
    if job.done is not None:
        return job.done
    if not store.is_committed(job.model_key):
        raise TrainingError(f"the {job.stage} job finished but committed no model at {store.key_uri(job.model_key)}")
    entry = store.manifest(job.model_key).meta
    return {**entry, "model_uri": store.key_uri(job.model_key), "log": store.key_uri(job.log_key)}


def train_stage(
    cfg: ArenaConfig,
    store: ArtifactStore,
    iteration: int,
    stage_name: str,
    base: str | None = None,
    labels: dict[str, str] | None = None,
    timeout_s: float = 6 * 3600,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """Train ``stage_name`` of ``iteration`` and wait; a rerun with the same inputs returns the registered model."""
    if base is None:
        base = default_base(cfg, store, iteration, stage_name)
    job = submit_stage(cfg, store, prepare_stage(cfg, store, iteration, stage_name, base, labels))
    deadline = time.monotonic() + timeout_s
    try:
        while not poll_stage(cfg, store, job):
            if time.monotonic() > deadline:
                raise TrainingError(f"{stage_name} job exceeded {timeout_s:.0f}s")
            time.sleep(poll_s)
    except (KeyboardInterrupt, TrainingError) as exc:
        if job.ray_job_id and (not isinstance(exc, TrainingError) or "exceeded" in str(exc)):
            from .launch import stop_ray_job

            stop_ray_job(cfg.training.launcher, job.ray_job_id)
        raise
    return finish_stage(store, job)


def _device(cfg: ArenaConfig) -> str:
    src = cfg.models.target.source
    return src.engine.device if isinstance(src, ServedSource) else "cpu"
