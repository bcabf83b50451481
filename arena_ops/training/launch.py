"""DeepSpeed configs and job launchers: ``local`` (a subprocess, 1…N processes) and ``ray_job`` (Ray Jobs API).

A job that fails raises :class:`TrainingError` with the tail of its log. The Airflow worker never imports torch or
DeepSpeed: training always runs in the launched process.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arena_ops.config import DeepSpeedConfig, LauncherConfig
from arena_ops.errors import TrainingError

if TYPE_CHECKING:
    from arena_ops.store import ArtifactStore

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 60


def deepspeed_config(ds: DeepSpeedConfig, grad_accum: int, micro_batch: int) -> dict[str, Any]:
    """A ZeRO config. Batch sizes, precision and clipping are "auto": the HF Trainer fills them from its arguments
    (RL trainers raise the per-device batch to a multiple of the generations per prompt, so fixed values would
    disagree); ``grad_accum`` and ``micro_batch`` are what validation checks the rest against."""
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage >= 2:
        zero.update({"overlap_comm": False, "contiguous_gradients": True})
    if ds.zero_stage == 3:  # save_model() then writes one consolidated checkpoint, not per-rank shards
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "_arena_validate": {"micro_batch": micro_batch, "grad_accum": grad_accum},
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
    }


def validate_deepspeed_config(config: dict[str, Any]) -> None:
    """DeepSpeed's own parser, before anything is launched: unknown keys or bad values fail here. Where DeepSpeed is
    not installed (the Airflow image submits to Ray) the job's own DeepSpeed checks the config when it starts."""
    if importlib.util.find_spec("deepspeed") is None:
        log.info("DeepSpeed is not installed here: the training job validates its config when it starts")
        return
    hints = config.get("_arena_validate", {"micro_batch": 1, "grad_accum": 1})
    concrete = json.loads(
        json.dumps({k: v for k, v in config.items() if k != "_arena_validate"}).replace('"auto"', "false")
    )
    concrete.update(
        gradient_clipping=1.0,
        train_micro_batch_size_per_gpu=hints["micro_batch"],
        gradient_accumulation_steps=hints["grad_accum"],
    )
    concrete.pop("train_batch_size", None)
    try:
        from deepspeed.runtime.config import DeepSpeedConfig as _DSConfig

        _DSConfig(concrete, mpu=None)
    except Exception as exc:  # DeepSpeed raises assorted types for bad configs
        raise TrainingError(f"invalid DeepSpeed config: {type(exc).__name__}: {exc}\n{json.dumps(config)}") from exc


#: Where :func:`free_port` picks: above Ray's worker ports (10002-19999 by default), below the kernel's ephemeral range,
#: and below PORT_CEILING: 25000 up to the ephemeral range is left to ports a config fixes ahead of binding them (the
#: test suite's stacks take theirs there), which a job's pick must not take while such a component restarts.
PORT_FLOOR, PORT_CEILING = 20000, 25000


def free_port() -> int:
    """A free loopback port for a listener started a moment later (torch.distributed's store, a server).

    Not the kernel's choice (``bind(0)``): that comes from the ephemeral range, where any outgoing connection on the
    machine may take the port between this check and the listener's bind — seen as EADDRINUSE in a training job
    beside a second CI lane's Ray and Airflow traffic. Below that range only another listener can take it.
    """
    high = min(_ephemeral_range()[0], PORT_CEILING)
    if high - PORT_FLOOR >= 1000:
        rng = random.SystemRandom()
        for _ in range(100):
            port = rng.randrange(PORT_FLOOR, high)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no room below the ephemeral range (or all taken): the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):  # not Linux: IANA's dynamic range, which macOS and Windows use
        return 49152, 65535


def local_command(job_file: Path, num_processes: int, ds_config: Path | None) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a local launch (1 process: plain python with a torch.distributed env)."""
    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "arena-flywheel" / "torch_extensions"))
    entry = [sys.executable, "-m", "arena_ops.training.stages", str(job_file)]
    if num_processes == 1:
        # DeepSpeed needs a distributed env even for one process (else it looks for mpi4py).
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        return entry, env
    on_cpu = json.loads(job_file.read_text()).get("device", "cpu") == "cpu"
    accelerate = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port()),
    ]
    if ds_config is not None:
        # accelerate refuses --cpu next to --use_deepspeed; the Trainer's use_cpu puts DeepSpeed on CPU (gloo).
        accelerate += ["--use_deepspeed", "--deepspeed_config_file", str(ds_config)]
    elif on_cpu:
        accelerate.append("--cpu")
    return [*accelerate, "-m", "arena_ops.training.stages", str(job_file)], env


def _ray_client(launcher: LauncherConfig):  # -> JobSubmissionClient
    from ray.job_submission import JobSubmissionClient

    if not launcher.ray_address:
        raise TrainingError("training.launcher.ray_address is required for kind ray_job (e.g. http://head:8265)")
    return JobSubmissionClient(launcher.ray_address)


def _threads_env(launcher: LauncherConfig) -> dict[str, dict[str, str]]:
    return {"env_vars": {"OMP_NUM_THREADS": str(launcher.cpus)}} if launcher.cpus else {}


def submit_ray_job(launcher: LauncherConfig, job_file: Path, work_dir: Path, ds_config: Path | None) -> str:
    """Submit to a Ray cluster through the Jobs API; ``work_dir`` (job spec, DeepSpeed config) travels as the job's
    ``working_dir``. The cluster's image must have arena-flywheel installed. Returns the job id."""
    client = _ray_client(launcher)
    rel = [f"./{job_file.name}"]
    if launcher.num_processes > 1:
        ds = ["--use_deepspeed", "--deepspeed_config_file", f"./{ds_config.name}"] if ds_config else []
        cmd = [
            "python",
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            str(launcher.num_processes),
            *ds,
            "-m",
            "arena_ops.training.stages",
            *rel,
        ]
    else:
        cmd = [
            "env",
            "RANK=0",
            "LOCAL_RANK=0",
            "WORLD_SIZE=1",
            "MASTER_ADDR=127.0.0.1",  # the job picks a free MASTER_PORT of its node (arena_ops.training.stages)
            "python",
            "-m",
            "arena_ops.training.stages",
            *rel,
        ]
    deadline = time.monotonic() + 120
    while True:
        try:
            job_id = client.submit_job(
                entrypoint=shlex.join(cmd),
                runtime_env={"working_dir": str(work_dir), **_threads_env(launcher)},
                entrypoint_num_cpus=launcher.cpus,
                entrypoint_resources=dict(launcher.ray_resources) or None,
            )
            break
        except RuntimeError as exc:  # a fresh head's job agent needs a moment: "No available agent to submit job"
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise TrainingError(f"Ray job submission to {launcher.ray_address} failed: {exc}") from exc
            time.sleep(3)
    log.info("submitted Ray job %s to %s", job_id, launcher.ray_address)
    return job_id


def poll_ray_job(launcher: LauncherConfig, job_id: str, store: ArtifactStore, log_key: str) -> bool:
    """True when the job succeeded, False while it runs; raises with the log tail when it failed or was stopped.
    The job's log is copied to the store (``log_key``) when it ends."""
    from ray.job_submission import JobStatus

    client = _ray_client(launcher)
    status = client.get_job_status(job_id)
    if status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        return False
    logs = client.get_job_logs(job_id)
    store.put_bytes(log_key, logs.encode())
    if status != JobStatus.SUCCEEDED:
        tail = "\n".join(logs.splitlines()[-LOG_TAIL_LINES:])
        raise TrainingError(f"Ray job {job_id} ended {status}; last lines:\n{tail}")
    return True


def stop_ray_job(launcher: LauncherConfig, job_id: str) -> None:
    _ray_client(launcher).stop_job(job_id)


def start_local(
    job_file: Path, num_processes: int, ds_config: Path | None, extra_env: dict[str, str] | None = None
) -> int:
    """Start a local job detached from this process (it outlives an Airflow worker slot) under a supervisor that,
    when the job ends, puts its exit status and log into the store (see :func:`supervise`). Returns the pid.
    ``extra_env``: e.g. the store's credentials (in the job's environment only, never in a file)."""
    cmd, env = local_command(job_file, num_processes, ds_config)
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "arena_ops.training.launch", str(job_file.parent), "--", *cmd],
        env=env,
        cwd=job_file.parent,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log.info("started training job pid %d: %s (work dir %s)", proc.pid, shlex.join(cmd), job_file.parent)
    return proc.pid


def supervise(work_dir: Path, cmd: list[str]) -> int:
    """Run the job, its output to ``train.log``; then publish ``status-{fingerprint}.json`` and the log to the job's
    store prefix, so that whoever waits — on any machine — reads the outcome from the store."""
    from arena_ops.config import StorageConfig
    from arena_ops.store import ArtifactStore

    job = json.loads((work_dir / "job.json").read_text())
    log_file = work_dir / "train.log"
    with open(log_file, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    store = ArtifactStore.from_config(StorageConfig.model_validate(job["storage"]))
    prefix, fp = job["job_key"], job["fingerprint"]
    store.put_file(f"{prefix}/train-{fp}.log", log_file)
    store.write_json(f"{prefix}/status-{fp}.json", {"exit_code": code, "finished_at": time.time()})
    shutil.rmtree(work_dir, ignore_errors=True)  # its job spec and log are in the store now
    return code


if __name__ == "__main__":
    _work, _sep, *_cmd = sys.argv[1:]
    sys.exit(supervise(Path(_work), _cmd))
