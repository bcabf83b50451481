"""What a model *is*, as content: the revision that answers, judgments and evaluations are keyed by.

A path is not a version: a stage retrained into the same ``iter={i}/model/{stage}`` (a cleared task rerun with a
changed learning rate, an ablation reusing a flywheel name) writes new weights under the same URI, and answers keyed
by the URI would be reused as the new model's. So a revision is a digest of the content:

- a checkpoint in the artifact store (``s3://…``, ``file://…``): its manifest's files and their sha256 (one small
  read; the store already hashed every file when it committed them);
- a local weights directory: its files' sha256 (cached per process by name, size and mtime);
- a configured tiny model that is not built yet: its builder settings (the build is deterministic);
- a recorded-responses file: its sha256;
- an external endpoint, or a Hugging Face id: its name (nothing here can read its content).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arena_ops.config import ModelSpec, StorageConfig, TinyModelConfig

log = logging.getLogger(__name__)

_FILE_CACHE: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) → sha256


def revision_of(spec: ModelSpec, storage: StorageConfig) -> str:
    """The revision of a configured model (see the module docstring)."""
    from arena_ops.config import ExternalSource, RecordedSource

    src = spec.source
    if isinstance(src, RecordedSource):
        try:
            return f"recorded:sha256:{file_sha256(src.path)}"
        except OSError as exc:
            from arena_ops.errors import ServingError

            raise ServingError(f"model {spec.name!r}: recorded responses {src.path}: {exc.strerror or exc}") from exc
    if isinstance(src, ExternalSource):
        return f"external:{src.base_url}#{src.model}"
    return weights_revision(src.path, storage, src.tiny)


def weights_revision(path: str, storage: StorageConfig, tiny: TinyModelConfig | None = None) -> str:
    """The revision of served weights at ``path``."""
    if path.startswith(("s3://", "file://")):
        digest = _store_digest(path, storage)
        if digest is not None:
            return f"sha256:{digest}"
        local = path.removeprefix("file://") if path.startswith("file://") else None
    else:
        local = path if path.startswith("/") else None
    if local is not None and Path(local).is_dir():
        return f"sha256:{dir_sha256(local)}"
    if tiny is not None:
        settings = json.dumps(tiny.model_dump(mode="json"), sort_keys=True)
        return f"tiny:{hashlib.sha256(settings.encode()).hexdigest()[:32]}"
    if local is None and not path.startswith("s3://"):
        return f"hf:{path}"  # a hub id: its revision is the hub's, which this machine may not reach
    log.warning("model weights at %s cannot be read from here: keyed by the path, not the content", path)
    return f"path:{path}"


def _store_digest(uri: str, storage: StorageConfig) -> str | None:
    """Digest of a committed artifact's manifest entries (name and sha256 of each file), or None without one."""
    from arena_ops.errors import ArtifactNotFoundError, StoreError
    from arena_ops.store import ArtifactStore

    parent, _, name = uri.rstrip("/").rpartition("/")
    try:
        manifest = ArtifactStore.from_uri(parent, storage.s3).manifest(name)
    except ArtifactNotFoundError:
        return None
    except StoreError as exc:  # no credentials here, the store unreachable: keyed by the path, and said so
        log.warning("cannot read the manifest of %s: %s", uri, exc)
        return None
    files = sorted((f.path, f.sha256) for f in manifest.files)
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:32]


def dir_sha256(directory: str) -> str:
    """Digest of every file under ``directory`` (relative name and content), hidden files left out."""
    entries = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith("."):
                full = os.path.join(root, f)
                entries.append((os.path.relpath(full, directory), file_sha256(full)))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:32]


def file_sha256(path: str) -> str:
    """sha256 of a local file, cached by (path, size, mtime): a file that changes gets a new digest."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_CACHE[key] = h.hexdigest()
    return _FILE_CACHE[key]
