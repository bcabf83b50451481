"""DeepSpeed's JIT-built C++ ops, loaded before training under a lock that cannot go stale.

torch builds and loads a JIT extension under a *baton*: a ``lock`` file in the extension's build directory, created
with ``O_EXCL`` and removed when the build or up-to-date check is over — on every load, not only the first. A process
killed while it holds the baton (a job stopped, a CI run cut off) leaves the file behind, and every later load waits
for it to go, forever: seen as every training job of a CI run hanging after DeepSpeed's "Setting accelerator to CPU",
behind a ``deepspeed_shm_comm/lock`` left by a run killed a minute earlier.

So a training job loads the ops its DeepSpeed config needs first, one job at a time, under an ``flock`` of the
extensions directory. The kernel drops an ``flock`` when its holder dies, and whoever holds it knows that no other job
is loading these ops, so a baton it finds is stale and is removed (with a warning naming it). DeepSpeed keeps the
loaded ops per process and does not take the baton for them again.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The flock's file, in the extensions directory beside the ops' build directories.
LOCK_NAME = ".arena-ops.lock"


def needed_ops(ds_config: dict[str, Any], accelerator: str) -> list[str]:
    """The op builders DeepSpeed JIT-loads for this config: shared-memory collectives on the CPU accelerator, the CPU
    Adam with an offloaded optimiser (the ops it builds when it starts; others it may load are left to it)."""
    ops = ["ShareMemCommBuilder"] if accelerator == "cpu" else []
    offload = (ds_config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    if offload.get("device") == "cpu":
        ops.append("CPUAdamBuilder")
    return ops


def build_directory(op_name: str) -> Path:
    """Where torch builds the op named ``op_name`` (``$TORCH_EXTENSIONS_DIR/<name>`` or torch's default root)."""
    from torch.utils.cpp_extension import _get_build_directory  # private, but the one rule torch itself follows

    return Path(_get_build_directory(op_name, verbose=False))


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold the extensions directory's flock: one job loads ops at a time; a dead holder releases it."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear_stale_baton(build_dir: Path) -> None:
    """Remove torch's baton from ``build_dir``; only under :func:`exclusive`, where any baton left is a dead job's."""
    baton = build_dir / "lock"
    try:
        baton.unlink()
    except FileNotFoundError:
        return
    log.warning("removed %s: a stale build lock left by a job that died while loading this op", baton)


def load_ops(job: dict[str, Any]) -> list[str]:
    """Load the DeepSpeed ops a training job needs (building them the first time); returns their names."""
    if not job.get("deepspeed_config"):
        return []
    import json

    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    ds_config = json.loads(Path(job["deepspeed_config"]).read_text())
    builders = [accelerator.create_op_builder(name) for name in needed_ops(ds_config, accelerator.device_name())]
    # As DeepSpeed decides (deepspeed.comm.torch.build_shm_op): an op this machine cannot build is not loaded.
    builders = [b for b in builders if b is not None and deepspeed.ops.__compatible_ops__.get(b.NAME, False)]
    loaded = []
    for builder in builders:
        build_dir = build_directory(builder.name)
        with exclusive(build_dir.parent):
            clear_stale_baton(build_dir)
            builder.load(verbose=False)
        loaded.append(builder.name)
    return loaded
