"""The local launcher's supervisor: the outcome and the log go to the store, and nothing stays on the node's disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from arena_ops.store import ArtifactStore
from arena_ops.training.launch import supervise


def test_supervise_publishes_status_and_log_then_removes_the_work_dir(tmp_path: Path) -> None:
    store_root = tmp_path / "store"
    work = tmp_path / "arena-sft-x"
    work.mkdir()
    job = {"storage": {"root": f"file://{store_root}"}, "job_key": "fw/iter=0/jobs/sft", "fingerprint": "abc"}
    (work / "job.json").write_text(json.dumps(job))
    code = supervise(work, [sys.executable, "-c", "print('step 1 loss 2.5'); raise SystemExit(3)"])
    store = ArtifactStore.from_uri(f"file://{store_root}")
    assert code == 3
    assert store.read_json("fw/iter=0/jobs/sft/status-abc.json")["exit_code"] == 3
    assert b"step 1 loss 2.5" in store.get_bytes("fw/iter=0/jobs/sft/train-abc.log")
    assert not work.exists()


def test_free_port_is_bindable_and_below_the_ephemeral_range() -> None:
    """Outgoing connections take ports from the ephemeral range at any moment; a port picked below it stays free
    until the listener binds it (the EADDRINUSE of a training job beside another lane's traffic)."""
    import socket

    from arena_ops.training.launch import PORT_CEILING, PORT_FLOOR, _ephemeral_range, free_port

    low, _high = _ephemeral_range()
    ports = {free_port() for _ in range(20)}
    assert all(PORT_FLOOR <= p < min(low, PORT_CEILING) for p in ports) and len(ports) > 1
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
