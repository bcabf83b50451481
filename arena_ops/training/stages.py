"""TRL training stages; the module entry point of every launched training job.

    python -m arena_ops.training.stages job.json          # or under `accelerate launch` / `deepspeed`

``job.json`` (written by :mod:`arena_ops.training.launch`) names the stage, the base model directory, the dataset
(a local Parquet file in TRL's conversational format), the output directory, hyperparameters and the DeepSpeed config
file. Stages: ``sft`` (SFTTrainer), ``dpo`` (DPOTrainer), ``rm`` (RewardTrainer) and ``rl`` — GRPO or RLOO with the
reward model as reward. The paper used PPO; TRL 1.16 has no PPOTrainer, and GRPO/RLOO are its maintained on-policy
RL trainers (both keep the KL penalty to the reference model, the paper's 0.4, as ``beta``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any


def _common_args(job: dict[str, Any]) -> dict[str, Any]:
    hp = job["hyperparams"]
    args: dict[str, Any] = {
        "output_dir": job["output_dir"],
        "learning_rate": hp["learning_rate"],
        "num_train_epochs": hp["epochs"],
        "per_device_train_batch_size": hp["per_device_batch_size"],
        "gradient_accumulation_steps": hp["gradient_accumulation_steps"],
        "max_steps": hp.get("max_steps") or -1,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "seed": job.get("seed", 0),
        "bf16": job.get("bf16", False),
        "use_cpu": job.get("device", "cpu") == "cpu",
        "lr_scheduler_type": hp.get("lr_scheduler_type", "linear"),
        "warmup_steps": hp.get("warmup_steps", 0),
        "dataloader_num_workers": 0,
    }
    if job.get("deepspeed_config"):
        args["deepspeed"] = job["deepspeed_config"]
    return args


def _dataset(path: str):  # -> datasets.Dataset
    from datasets import load_dataset

    return load_dataset("parquet", data_files=path, split="train")


def _beta(hp: dict[str, Any], default: float) -> float:
    return default if hp.get("beta") is None else float(hp["beta"])  # 0 is a valid beta (no KL / no margin)


def sft_trainer(job: dict[str, Any], common: dict[str, Any], tokenizer: Any, dataset: Any, dtype: Any) -> Any:
    import trl
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=dtype)
    args = trl.SFTConfig(**common, max_length=job["hyperparams"]["max_length"])
    return trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def dpo_trainer(job: dict[str, Any], common: dict[str, Any], tokenizer: Any, dataset: Any, dtype: Any) -> Any:
    import trl
    from transformers import AutoModelForCausalLM

    hp = job["hyperparams"]
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=dtype)
    args = trl.DPOConfig(**common, max_length=hp["max_length"], beta=_beta(hp, 0.1))
    return trl.DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def rm_trainer(job: dict[str, Any], common: dict[str, Any], tokenizer: Any, dataset: Any, dtype: Any) -> Any:
    import trl
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(job["model"], num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = trl.RewardConfig(**common, max_length=job["hyperparams"]["max_length"])
    return trl.RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def rl_args(job: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """GRPO/RLOO arguments: KL beta, group size and completion length from ``training.rl``."""
    hp = job["hyperparams"]
    rl = {
        "beta": _beta(hp, 0.0),
        "num_generations": int(hp.get("num_generations") or 2),
        "max_completion_length": int(hp.get("max_completion_length") or 128),
    }
    # Each device batch holds whole groups of generations.
    batch = max(common["per_device_train_batch_size"], rl["num_generations"])
    return {**common, "per_device_train_batch_size": batch, **rl}


def rl_trainer(job: dict[str, Any], common: dict[str, Any], tokenizer: Any, dataset: Any, dtype: Any) -> Any:
    import trl
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=dtype)
    cls, cfg_cls = (
        (trl.GRPOTrainer, trl.GRPOConfig)
        if job.get("rl_algorithm", "grpo") == "grpo"
        else (trl.RLOOTrainer, trl.RLOOConfig)
    )
    reward = AutoModelForSequenceClassification.from_pretrained(job["models"]["rm"], num_labels=1)
    reward_tok = AutoTokenizer.from_pretrained(job["models"]["rm"])
    if reward_tok.pad_token is None:
        reward_tok.pad_token = reward_tok.eos_token
    reward.config.pad_token_id = reward_tok.pad_token_id
    return cls(
        model=model,
        reward_funcs=reward,
        args=cfg_cls(**rl_args(job, common)),
        train_dataset=dataset,
        processing_class=tokenizer,
        reward_processing_classes=reward_tok,
    )


def trainer_fn(path: str) -> Any:
    """``"module:function"`` from the stage registry → the function."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def drop_tied_copies(output_dir: str) -> int:
    """Remove ``lm_head.weight`` from a single-file checkpoint whose config ties it to the input embedding and where
    it equals that embedding; returns the bytes saved. ``Trainer.save_model`` under DeepSpeed writes both copies
    (Gemma 3 270M: 1.7 GB instead of 1.07 GB per checkpoint, uploaded, stored and downloaded every stage);
    ``from_pretrained`` re-ties the head to the embedding, so the copy carries nothing."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = Path(output_dir, "model.safetensors")
    config_path = Path(output_dir, "config.json")
    if not path.exists() or not config_path.exists():
        return 0
    config = json.loads(config_path.read_text())
    tied = config.get("tie_word_embeddings", (config.get("text_config") or {}).get("tie_word_embeddings", False))
    if not tied:
        return 0
    with safe_open(str(path), "pt") as f:  # the header only: most checkpoints have no head copy to drop
        if "lm_head.weight" not in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            return 0
    tensors = load_file(str(path))
    head = tensors["lm_head.weight"]
    embedding = next((v for k, v in tensors.items() if k.endswith("embed_tokens.weight")), None)
    if embedding is None or head.shape != embedding.shape or not torch.equal(head, embedding):
        return 0
    before = path.stat().st_size
    del tensors["lm_head.weight"]
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
    return before - path.stat().st_size


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Train one stage; saves the model and tokenizer to ``output_dir`` and returns the metrics."""
    import torch
    from transformers import AutoTokenizer

    stage = job["stage"]
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = _dataset(job["dataset"])
    dtype = torch.bfloat16 if job.get("bf16") else torch.float32
    trainer = trainer_fn(job["trainer"])(job, _common_args(job), tokenizer, dataset, dtype)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    runtime = float(result.metrics.get("train_runtime", seconds))
    trainer.save_model(job["output_dir"])
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(job["output_dir"])
        drop_tied_copies(job["output_dir"])
    steps = max(int(result.global_step), 1)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "stage": stage,
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_seconds": round(runtime, 3),
        "startup_seconds": round(seconds - runtime, 3),  # DeepSpeed engine set-up (and op builds, first time)
        "seconds_per_step": round(runtime / steps, 4),
        "examples": len(dataset),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    if trainer.accelerator.is_main_process:
        Path(job["output_dir"], "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def materialise_model(uri: str, storage: dict[str, Any]) -> str:
    """A local directory for a base model given as a local path, ``file://`` or ``s3://`` URI (or a hub id)."""
    if uri.startswith("s3://"):
        from arena_ops.config import EngineConfig, StorageConfig
        from arena_ops.serving.app import ServedModel, local_model_dir

        return local_model_dir(ServedModel("base", uri, EngineConfig()), StorageConfig.model_validate(storage))
    return uri.removeprefix("file://")


def _store(job: dict[str, Any]):  # -> ArtifactStore
    from arena_ops.config import StorageConfig
    from arena_ops.store import ArtifactStore

    return ArtifactStore.from_config(StorageConfig.model_validate(job["storage"]))


def publish(job: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Commit the trained model to the store as ``{flywheel}/iter={i}/model/{stage}``; its manifest is the
    registry entry (base model, dataset, hyperparameters, metrics)."""
    store = _store(job)
    entry = {
        "iteration": job["iteration"],
        "stage": job["stage"],
        "base_model": job["base_model"],
        "base_label": job.get("base_label"),
        "label": job.get("label"),
        "dataset": job["dataset_uri"],
        "launcher": job.get("launcher"),
        "hyperparams": job["hyperparams"],
        "fingerprint": job["fingerprint"],
        "metrics": metrics,
    }
    with store.artifact_at(job["model_key"], meta=entry) as w:
        w.put_dir(job["output_dir"])
        w.write_json("registry.json", entry)
    return w.uri


def _spent(started: float) -> dict[str, Any]:
    """The job's wall seconds (model download, start-up and training; not the upload), CPU seconds of all its
    processes (this rank's, times the world size: the ranks do the same work), and GPU seconds where NVML answers
    and training ran on CUDA (one GPU per rank) — the cost ledger's training row."""
    import torch

    from arena_ops.ledger import cpu_seconds, nvml_gpus

    wall, world = time.perf_counter() - started, int(os.environ.get("WORLD_SIZE", "1"))
    on_gpu = torch.cuda.is_available() and nvml_gpus() is not None
    return {
        "job_wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu_seconds() * world, 3),
        "gpu_seconds": round(wall * world, 3) if on_gpu else None,
    }


def main(argv: list[str] | None = None) -> None:
    import tempfile

    started = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m arena_ops.training.stages JOB.json")
    job = json.loads(Path(argv[0]).read_text())
    if os.environ.get("WORLD_SIZE") == "1" and not os.environ.get("MASTER_PORT"):
        # One process (a Ray job's default): a free port of this node for torch.distributed's store — a fixed one
        # failed with EADDRINUSE when two jobs shared a node.
        from arena_ops.training.launch import free_port

        os.environ["MASTER_PORT"] = str(free_port())
    scratch = Path(tempfile.mkdtemp(prefix="arena-train-"))
    job.setdefault("output_dir", str(scratch / "out"))
    job["model"] = materialise_model(job["base_model"], job["storage"])
    job["models"] = {name: materialise_model(uri, job["storage"]) for name, uri in (job.get("needs") or {}).items()}
    job["dataset"] = str(scratch / "data.parquet")
    _store(job).get_file(job["dataset_key"], job["dataset"])
    if job.get("deepspeed_config") and not Path(job["deepspeed_config"]).is_absolute():
        job["deepspeed_config"] = str(Path(argv[0]).resolve().parent / job["deepspeed_config"])
    try:
        from arena_ops.training.extensions import load_ops

        load_ops(job)  # before the trainer: DeepSpeed's JIT ops, past any build lock a killed job left behind
        metrics = {**run(job), **_spent(started)}
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps({"metrics": metrics, "model_uri": publish(job, metrics)}))
        _shutdown_distributed()
    finally:
        # The checkpoint is in the store now (or the job failed and reruns from the store): the scratch copy would
        # only fill the node's disk — 1.1 GB per Gemma 3 270M stage.
        shutil.rmtree(scratch, ignore_errors=True)


def _shutdown_distributed() -> None:
    # Every rank waits for rank 0's upload, then the process group is torn down explicitly: left to interpreter exit,
    # a 2-process CPU run sometimes aborted ("terminate called without an active exception") after success.
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
