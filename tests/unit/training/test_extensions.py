"""DeepSpeed's JIT ops load past a build lock that a killed job left behind (every CI training job once hung on one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from arena_ops.training.extensions import LOCK_NAME, exclusive, needed_ops


def test_the_ops_a_config_needs() -> None:
    assert needed_ops({"zero_optimization": {"stage": 2}}, "cpu") == ["ShareMemCommBuilder"]
    offload = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}
    assert needed_ops(offload, "cpu") == ["ShareMemCommBuilder", "CPUAdamBuilder"]
    assert needed_ops(offload, "cuda") == ["CPUAdamBuilder"]
    assert needed_ops({}, "cuda") == []


def test_the_lock_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    # A holder killed with SIGKILL (no cleanup runs) releases it: the kernel drops an flock with its last descriptor.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from arena_ops.training.extensions import exclusive\n"
            "with exclusive(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        got = threading.Event()

        def take() -> None:
            with exclusive(tmp_path):
                got.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not got.wait(2.0), "a second holder got the lock while the first held it"
        os.kill(holder.pid, signal.SIGKILL)
        assert got.wait(60.0), "the lock outlived its killed holder"
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the file stays; only the flock on it matters


def test_a_stale_build_lock_does_not_hang_a_training_job(tmp_path: Path) -> None:
    """torch waits for its build lock to disappear; left by a dead job, it never does. load_ops removes it and loads
    (here it builds the shared-memory op from scratch: ~20 s on 2 idle cores)."""
    ext = tmp_path / "torch_extensions"
    (ext / "deepspeed_shm_comm").mkdir(parents=True)
    (ext / "deepspeed_shm_comm" / "lock").touch()
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    code = (
        "import json, logging, sys; logging.basicConfig()\n"
        "from arena_ops.training.extensions import load_ops\n"
        "print(json.dumps(load_ops({'deepspeed_config': sys.argv[1]})))"
    )
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "ds.json")],
            env={**os.environ, "TORCH_EXTENSIONS_DIR": str(ext)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"loading the op waited {time.monotonic() - started:.0f}s on the stale lock") from None
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["deepspeed_shm_comm"]
    assert f"removed {ext / 'deepspeed_shm_comm' / 'lock'}: a stale build lock" in done.stderr
    assert not (ext / "deepspeed_shm_comm" / "lock").exists()
    assert list((ext / "deepspeed_shm_comm").glob("*.so"))
