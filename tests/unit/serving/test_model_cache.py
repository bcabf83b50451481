"""Weights in S3 are cached locally by URI *and content*: the same URI rewritten (a stack started afresh, a round
rerun) is fetched again, never served stale. Against SeaweedFS, the stack's S3 server."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from arena_ops.config import EngineConfig, S3Config, StorageConfig
from arena_ops.errors import ServingError
from arena_ops.serving import app
from arena_ops.serving.app import ServedModel, local_model_dir
from arena_ops.store import ArtifactStore
from tests.conftest import SEAWEED_KEYS, seaweedfs_client

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(
    seaweedfs: str, seaweedfs_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[StorageConfig, ArtifactStore]:
    for k, v in SEAWEED_KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setattr(app, "MODEL_CACHE", tmp_path / "cache")
    root = f"s3://{seaweedfs_bucket}/{uuid.uuid4().hex[:12]}"
    storage = StorageConfig(root=root, s3=S3Config(endpoint_url=seaweedfs))
    return storage, ArtifactStore.from_config(storage)


def commit_weights(store: ArtifactStore, tmp_path: Path, key: str, content: str) -> str:
    src = tmp_path / f"weights-{uuid.uuid4().hex[:6]}"
    src.mkdir()
    (src / "model.safetensors").write_text(content)
    (src / "config.json").write_text("{}")
    if store.is_committed(key):
        store.delete_prefix(key)
    with store.artifact_at(key) as w:
        w.put_dir(src)
    return w.uri


def fetch(storage: StorageConfig, uri: str) -> Path:
    return Path(local_model_dir(ServedModel("target", uri, EngineConfig()), storage))


def test_a_rewritten_uri_is_fetched_again_and_the_old_copy_removed(s3, tmp_path: Path) -> None:
    storage, store = s3
    uri = commit_weights(store, tmp_path, "fw/iter=1/model/sft", "weights of the first run")
    first = fetch(storage, uri)
    assert (first / "model.safetensors").read_text() == "weights of the first run"
    assert fetch(storage, uri) == first  # fetched once

    uri = commit_weights(store, tmp_path, "fw/iter=1/model/sft", "weights of a fresh stack: same URI, same size")
    second = fetch(storage, uri)
    assert second != first and (second / "model.safetensors").read_text().startswith("weights of a fresh stack")
    assert not first.exists()  # the stale copy is gone (gigabytes each)


def test_weights_uploaded_by_hand_without_a_manifest(s3, tmp_path: Path) -> None:
    storage, store = s3
    bucket, prefix = storage.root.removeprefix("s3://").split("/", 1)
    client = seaweedfs_client(storage.s3.endpoint_url)
    client.put_object(Bucket=bucket, Key=f"{prefix}/models/m/model.safetensors", Body=b"v1")
    first = fetch(storage, f"s3://{bucket}/{prefix}/models/m")
    assert (first / "model.safetensors").read_bytes() == b"v1"
    client.put_object(Bucket=bucket, Key=f"{prefix}/models/m/model.safetensors", Body=b"v2 longer")
    assert (fetch(storage, f"s3://{bucket}/{prefix}/models/m") / "model.safetensors").read_bytes() == b"v2 longer"


def test_nothing_at_the_uri_is_a_clear_error(s3) -> None:
    storage, _ = s3
    with pytest.raises(ServingError, match=r"s3://.*/nowhere: cannot read the model.s listing: .*does not exist"):
        fetch(storage, storage.root + "/nowhere")
