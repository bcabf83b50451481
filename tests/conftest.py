"""Shared fixtures: a tiny local chat model, an S3-protocol server on loopback, artifact stores on both backends."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports Hugging Face, Ray or vLLM: no hub access, no telemetry, a bounded vLLM CPU engine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max((os.cpu_count() or 1) - 1, 0)}")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU; torch.cuda.is_available() is False on this machine")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the project's shared data lives beside the repository only in CI)")
    return SHARED


# Tiny models --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a trained BPE tokenizer and a chat template, built locally (no downloads)."""
    from arena_ops.tiny_model import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arena_ops.tiny_model import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-qwen2"), arch="qwen2", seed=1)


# S3 ------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3-protocol HTTP server on loopback; yields its endpoint URL and stops it at the end."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the loopback server, with test credentials in the environment."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    bucket = f"arena-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """An ArtifactStore on each backend: a local directory, and a bucket on the loopback S3 server."""
    from arena_ops.config import S3Config
    from arena_ops.store import ArtifactStore

    if request.param == "local":
        return ArtifactStore.from_uri(f"file://{tmp_path}/artifacts")
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return ArtifactStore.from_uri(f"s3://{bucket}/root", S3Config(endpoint_url=endpoint))


# Recorded flywheels (no servers) ------------------------------------------------------------------------------------

# A response that would run script if a page inserted it as markup; the UI tests check that it stays text.
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def write_recorded_task(root: Path, prompts: list[dict], answers: dict) -> None:
    """``prompts.jsonl`` (Alpaca rows with an ``id``) and one ``{model}.jsonl`` of recorded answers per model:
    ``answers[model](i)`` answers prompt i."""
    import json

    (root / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    for name, answer in answers.items():
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps({"prompt_id": p["id"], "response": answer(i)}) + "\n" for i, p in enumerate(prompts))
        )
