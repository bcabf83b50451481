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


def test_engine_apps_change_only_with_their_model() -> None:
    """What Serve compares to decide a restart: a new target changes only the target's weights (its user_config);
    another store root (another flywheel, or a test on the same cluster) changes no engine app at all."""
    from arena_ops.serving.app import serve_config

    cfg = load_config(REPO / "configs" / "tiny.yaml")
    other_root = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"root": "file:///elsewhere"})})
    base = serve_config(cfg)["applications"]
    assert serve_config(other_root)["applications"] == base
    swapped = serve_config(cfg, target_path="/new/weights")["applications"]
    changed = [(a["name"], a["deployments"][0]["user_config"]) for a, b in zip(swapped, base, strict=True) if a != b]
    assert changed == [("arena-model-tiny-target", {"path": "/new/weights"})]
    assert {k: v for k, v in swapped[0].items() if k != "deployments"} == {
        k: v for k, v in base[0].items() if k != "deployments"
    }
    engine = base[0]["args"]["engine"]
    assert engine["engine_core"] == "in-process" and "root" not in str(base[0]["args"])


def test_a_round_snapshot_of_the_config_gives_the_same_apps() -> None:
    """A Round record keeps a snapshot of the config; serving from it must not differ from serving from the file, or
    each round's first battle would restart every engine (measured: 66 s of three redeploys per round)."""
    from arena_ops.config import ArenaConfig
    from arena_ops.round import snapshot
    from arena_ops.serving.app import serve_config

    for name in ("demo.yaml", "tiny.yaml", "cluster.yaml"):
        cfg = load_config(REPO / "configs" / name)
        again = ArenaConfig.model_validate(snapshot(cfg))
        assert again == cfg and serve_config(again) == serve_config(cfg), name
