"""Revisions are content: a checkpoint's manifest, a directory's files, a recorded file's bytes — never a path."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena_ops.config import StorageConfig, TinyModelConfig
from arena_ops.revisions import dir_sha256, weights_revision
from arena_ops.serving.app import served_models
from arena_ops.store import ArtifactStore


def checkpoint(store: ArtifactStore, key: str, weights: bytes) -> str:
    with store.artifact_at(key, meta={"stage": "sft"}) as w:
        w.put_bytes("model.safetensors", weights)
        w.write_json("config.json", {"model_type": "llama"})
    return store.key_uri(key)


def test_a_checkpoint_retrained_into_the_same_key_is_a_new_revision(tmp_path: Path) -> None:
    store = ArtifactStore.from_uri(f"file://{tmp_path}/store")
    storage = StorageConfig(root=store.uri)
    uri = checkpoint(store, "fw/iter=0/model/sft", b"weights trained at lr 1e-4")
    first = weights_revision(uri, storage)
    assert first.startswith("sha256:") and weights_revision(uri, storage) == first  # stable
    again = checkpoint(store, "fw/iter=0/model/sft", b"weights trained at lr 1e-4")
    assert weights_revision(again, storage) == first  # the same content under the same key: the same revision
    checkpoint(store, "fw/iter=0/model/sft", b"weights trained at lr 3e-3")
    assert weights_revision(uri, storage) != first
    copy = checkpoint(store, "other/iter=4/model/sft", b"weights trained at lr 3e-3")
    assert weights_revision(copy, storage) == weights_revision(uri, storage)  # content, not the path


def test_local_directories_tiny_models_and_hub_ids(tmp_path: Path) -> None:
    storage = StorageConfig()
    d = tmp_path / "base"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"a")
    rev = weights_revision(str(d), storage)
    assert rev == f"sha256:{dir_sha256(str(d))}"
    (d / "model.safetensors").write_bytes(b"b")
    assert weights_revision(str(d), storage) != rev
    tiny = TinyModelConfig(arch="llama", seed=0)
    missing = str(tmp_path / "not-built")
    assert weights_revision(missing, storage, tiny) == weights_revision(missing + "2", storage, tiny)
    assert weights_revision(missing, storage, tiny) != weights_revision(missing, storage, TinyModelConfig(seed=1))
    assert weights_revision("google/gemma-3-270m", storage) == "hf:google/gemma-3-270m"


def test_new_target_weights_in_the_same_place_change_the_served_config(tmp_path: Path) -> None:
    """What makes a running replica load weights retrained into the same URI: their revision is in user_config."""
    from arena_ops.config import load_config
    from arena_ops.serving.app import engine_app

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs" / "tiny.yaml")
    store = ArtifactStore.from_uri(f"file://{tmp_path}/store")
    cfg.storage.root = store.uri
    uri = checkpoint(store, "tiny/iter=0/model/sft", b"one")
    before = [engine_app(cfg, m) for m in served_models(cfg, target_path=uri) if m.name == cfg.models.target.name]
    checkpoint(store, "tiny/iter=0/model/sft", b"two")
    after = [engine_app(cfg, m) for m in served_models(cfg, target_path=uri) if m.name == cfg.models.target.name]
    w0, w1 = (a[0]["deployments"][0]["user_config"] for a in (before, after))
    assert w0["path"] == w1["path"] == uri and w0["revision"] != w1["revision"]


def test_a_missing_recorded_file_names_the_model(tmp_path: Path) -> None:
    from arena_ops.config import ModelSpec
    from arena_ops.errors import ServingError
    from arena_ops.revisions import revision_of

    spec = ModelSpec.model_validate({"name": "gpt4", "source": {"kind": "recorded", "path": str(tmp_path / "x")}})
    with pytest.raises(ServingError, match=r"model 'gpt4': recorded responses .*/x"):
        revision_of(spec, StorageConfig())
