"""Building the Serve applications from config (no Ray started): which models, which engine settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena_ops.config import load_config
from arena_ops.errors import ServingError
from arena_ops.serving.app import engine_kwargs, local_model_dir, model_route, served_models

REPO = Path(__file__).resolve().parents[3]


def test_tiny_config_serves_three_models_and_dedupes_the_judge() -> None:
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    models = served_models(cfg)
    assert [m.name for m in models] == ["tiny-target", "tiny-qwen2", "tiny-llama-b"]
    assert served_models(cfg, target_path="/new/weights")[0].path == "/new/weights"


def test_cluster_config_skips_external_models_and_maps_engine_settings() -> None:
    cfg = load_config(REPO / "configs" / "cluster.yaml")
    names = [m.name for m in served_models(cfg)]
    assert "gpt-4o" not in names and "llama-3-70b-instruct" in names
    judge = next(m for m in served_models(cfg) if m.name == "llama-3-70b-instruct")
    kw = engine_kwargs(judge.engine)
    assert kw["tensor_parallel_size"] == 8 and kw["kv_cache_memory_bytes"] == 60 * 2**30
    assert "distributed_executor_backend" not in kw  # GPU: vLLM's default executor


def test_missing_weights_without_tiny_is_a_clear_error(tmp_path: Path) -> None:
    cfg = load_config(
        REPO / "configs" / "tiny.yaml",
        {"models.target.source.tiny": None, "models.target.source.path": str(tmp_path / "absent")},
    )
    with pytest.raises(ServingError, match="weights directory .*absent does not exist"):
        local_model_dir(served_models(cfg)[0], cfg.storage)


def test_tiny_model_is_built_when_missing(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "tiny.yaml", {"models.target.source.path": str(tmp_path / "t")})
    path = local_model_dir(served_models(cfg)[0], cfg.storage)
    assert (Path(path) / "model.safetensors").exists() and (Path(path) / "tokenizer.json").exists()


def test_routes_are_url_safe() -> None:
    assert model_route("Qwen/Qwen2.5-72B-Instruct") == "/m/Qwen-Qwen2.5-72B-Instruct"
    assert model_route("gpt-4o@2024:08") == "/m/gpt-4o-2024-08"
