"""Shared fixtures: a tiny local chat model, an S3-protocol server on loopback, artifact stores on both backends."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    from arena_ops.training.launch import free_port as below_the_ephemeral_range

    return below_the_ephemeral_range()


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


SEAWEED_KEYS = {"AWS_ACCESS_KEY_ID": "arena-test-key", "AWS_SECRET_ACCESS_KEY": "arena-test-secret-0123456789"}


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SeaweedFS (`weed mini`, the S3 server of `arena stack`) on loopback with access keys: unsigned requests are
    refused. Yields its endpoint URL; stopped at the end."""
    import subprocess
    import time

    import httpx

    from arena_ops.local.stack import weed_mini_command

    data = tmp_path_factory.mktemp("seaweedfs")
    port = free_block(5, also=(10000,))  # S3 and SeaweedFS's other servers, their gRPC ports at +10000
    log = open(data / "weed.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        weed_mini_command(data, port),
        env={**os.environ, **SEAWEED_KEYS},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(endpoint, timeout=2).status_code == 403:  # up, and refusing anonymous callers
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (data / "weed.log").read_text()[-3000:]
            time.sleep(0.3)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def seaweedfs_client(endpoint: str) -> Any:
    """A boto3 S3 client with the test SeaweedFS's keys, passed explicitly: boto3's default session keeps the first
    credentials it resolved (moto's, in a mixed run)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=SEAWEED_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SEAWEED_KEYS["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(scope="session")
def seaweedfs_bucket(seaweedfs: str) -> str:
    """One bucket for the session; tests write under their own prefix. Each bucket is a SeaweedFS collection that
    claims volumes of its own: with a bucket per test, `weed mini` (then capped at free disk / 1 GiB volumes) ran out
    after a few dozen tests ("No writable volumes"). The cap is lifted now (`-volume.max`); one bucket stays cheaper."""
    seaweedfs_client(seaweedfs).create_bucket(Bucket="arena-tests")
    return "arena-tests"


_HANDED_OUT: set[int] = set()


def free_block(n: int, also: tuple[int, ...] = ()) -> int:
    """A port p with p..p+n-1 (and p+k..p+k+n-1 for k in ``also``) free on loopback, from a range Linux does not hand
    out as ephemeral ports, and overlapping no block handed out before in this process: a config picks all its ports
    before anything binds them, and the stack test's Ray and PostgreSQL ports once were both 21489 (CI: "port … is
    taken" when the stack reached ray-head). Above free_port's range (launch.PORT_CEILING), so that a training job
    of the other lane cannot take a port of a component that the fault tests restart."""
    import random

    from arena_ops.training.launch import PORT_CEILING

    for _ in range(200):
        p = random.randrange(PORT_CEILING, 29000)
        ports = [p + i + k for k in (0, *also) for i in range(n)]
        if not _HANDED_OUT.intersection(ports) and all(_bindable(q) for q in ports):
            _HANDED_OUT.update(ports)
            return p
    raise RuntimeError("no free block of ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture(
    params=[
        "local",
        pytest.param("moto", marks=pytest.mark.integration),
        pytest.param("seaweedfs", marks=pytest.mark.integration),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An ArtifactStore on each backend: a local directory, a bucket on moto's S3 emulator, and a bucket on
    SeaweedFS (a real S3 server)."""
    from arena_ops.config import S3Config
    from arena_ops.store import ArtifactStore

    if request.param == "local":
        return ArtifactStore.from_uri(f"file://{tmp_path}/artifacts")
    if request.param == "moto":
        endpoint = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        return ArtifactStore.from_uri(f"s3://{bucket}/root", S3Config(endpoint_url=endpoint))
    endpoint = request.getfixturevalue("seaweedfs")
    bucket = request.getfixturevalue("seaweedfs_bucket")
    for k, v in SEAWEED_KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return ArtifactStore.from_uri(f"s3://{bucket}/{uuid.uuid4().hex[:12]}", S3Config(endpoint_url=endpoint))


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


_SUBJECTS = (
    "the water cycle",
    "photosynthesis",
    "a sourdough starter",
    "the French Revolution",
    "compound interest",
    "plate tectonics",
    "the immune system",
    "binary search",
    "jazz improvisation",
    "a vegetable garden",
    "the stock market",
    "black holes",
    "the Roman aqueducts",
    "container shipping",
    "bird migration",
    "public key cryptography",
    "coral reefs",
    "the printing press",
    "marathon training",
    "a city budget",
    "volcanic eruptions",
    "the human heart",
    "electric cars",
    "ancient Egyptian writing",
    "climate models",
    "honey bees",
    "the Silk Road",
    "wind turbines",
    "sleep cycles",
    "the Moon landing",
)
_AUDIENCES = (
    "a curious child",
    "a new employee",
    "a retired engineer",
    "a high school class",
    "a busy manager",
    "a first year student",
    "a tourist",
    "a skeptical reader",
)
_FOCUS = (
    "its history",
    "the main risks",
    "common mistakes",
    "how to measure it",
    "everyday examples",
    "the open questions",
    "its costs",
    "what experts disagree on",
)
_TEMPLATES = (
    "Explain {s} to {a} in {n} sentences, focusing on {f}.",
    "Write a short guide about {s} for {a} that covers {f} and ends with {n} tips.",
    "Give {a} {n} surprising facts about {s}, with one sentence on {f} for each.",
    "Compose a friendly letter to {a} describing {s}, and mention {f} at least {n} times.",
)


def daily_instructions(day: int, n: int) -> list[dict]:
    """``n`` ≤ 1,000 distinct English instructions for day ``day`` < 7 (Alpaca rows with an ``id``), disjoint from
    every other day's: each is a different combination of template, subject, audience, focus and count, so no two
    are near duplicates (no two share more than about half their word 3-grams)."""
    import itertools
    import random

    combos = list(itertools.product(range(len(_TEMPLATES)), _SUBJECTS, _AUDIENCES, _FOCUS))
    random.Random(0).shuffle(combos)
    rows = []
    assert n <= 1000 and day < len(combos) // 1000, (day, n)
    for i, (t, s, a, f) in enumerate(combos[day * 1000 : day * 1000 + n]):
        text = _TEMPLATES[t].format(s=s, a=a, f=f, n=3 + (i % 4))
        rows.append({"id": f"d{day}-{i}", "instruction": text, "output": f"answer {day}-{i}"})
    return rows
