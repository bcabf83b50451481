"""The start model: SFT on a random sample of a source corpus before iteration 0 (the paper's SFT-I0: 10k ShareGPT
conversations), as a normal training stage (``init``) — its data, job handle and model in the store::

    {flywheel}/iter=0/train-data/init   the sample: prompt (system, earlier turns with the corpus's answers) and the
                                        corpus's last answer as the completion; rows without answers quarantined
    {flywheel}/iter=0/jobs/init         the job spec and handle (local or Ray job, DeepSpeed, TRL SFTTrainer)
    {flywheel}/iter=0/model/init        the start model; iteration 0 starts from it (label ``<target>@i0-init``)

Settings: ``data.init_sources`` (any ingestible format with assistant answers: ShareGPT ``conversations``, OpenAI
``messages``, Alpaca, OpenOrca …), ``data.init_sample`` (paper: 10,000), ``training.init`` (SFT hyperparameters) and
``training.seed`` (the sample). The sample's rows are content-keyed: the same files and settings rebuild nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa

from arena_ops import layout
from arena_ops.config import ArenaConfig
from arena_ops.errors import ConfigError, TrainingError
from arena_ops.store import ArtifactStore

from .data import SFT_SCHEMA, _conversation

log = logging.getLogger(__name__)

STAGE = "init"
QUARANTINE_SCHEMA = pa.schema([("source", pa.string()), ("row", pa.int64()), ("reason", pa.string())])


def build_init_data(cfg: ArenaConfig, store: ArtifactStore) -> dict[str, Any]:
    """Sample ``data.init_sample`` conversations with answers from ``data.init_sources``; write the init dataset."""
    from arena_ops.data.ingest import ingest
    from arena_ops.data.sources import expand

    d = cfg.data
    if not d.init_sources:
        raise ConfigError(
            f"flywheel {cfg.flywheel!r}: data.init_sources is empty; name the corpus the start model is trained on "
            "(e.g. a ShareGPT JSONL), or start from models.target's weights as they are"
        )
    files = expand(d.init_sources, cfg.storage, what="data.init_sources")
    inputs = hashlib.sha256(
        json.dumps(
            [[(f.uri, f.size, f.mtime_ns) for f in files], d.init_sample, cfg.training.seed], default=str
        ).encode()
    ).hexdigest()[:32]
    key = layout.train_data(cfg.flywheel, 0, STAGE)
    if store.is_committed(key) and store.manifest(key).meta.get("inputs") == inputs:
        return {"uri": store.key_uri(key), **store.manifest(key).meta, "reused": True}
    got = ingest(d.init_sources, cfg.storage, what="data.init_sources")
    rows, bad = [], got.quarantine.to_pylist()
    for r in got.table.to_pylist():
        answers = r["reference"] or []
        if len(answers) != len(r["turns"]):
            what = f"conversation {r['source_id'] or r['prompt_id']}"
            reason = f"{what}: {len(answers)} assistant answer(s) to {len(r['turns'])} user turn(s); SFT needs one each"
            bad.append({"source": r["source"], "row": None, "reason": reason})
            continue
        rows.append(
            {
                "prompt_id": r["prompt_id"],
                "prompt": _conversation(r, answers),
                "completion": [{"role": "assistant", "content": answers[-1]}],
                "source_model": "init-corpus",
                "margin": None,
                "battle_ids": [],
                "iteration": 0,
                "run": STAGE,
            }
        )
    seen: set[str] = set()
    rows = [r for r in rows if not (r["prompt_id"] in seen or seen.add(r["prompt_id"]))]  # a conversation once
    if not rows:
        raise TrainingError(
            f"data.init_sources {d.init_sources}: no conversation with answers ({len(bad)} quarantined)"
        )
    rng = np.random.default_rng(cfg.training.seed)
    picks = np.sort(rng.choice(len(rows), size=min(d.init_sample, len(rows)), replace=False))
    table = pa.Table.from_pylist([rows[i] for i in picks], schema=SFT_SCHEMA)
    meta = {"rows": table.num_rows, "candidates": len(rows), "quarantined": len(bad), "inputs": inputs, "iteration": 0}
    with store.artifact_at(key, meta=meta) as w:
        w.write_table("data.parquet", table)
        w.write_table("quarantine.parquet", pa.Table.from_pylist(bad, schema=QUARANTINE_SCHEMA))
    log.info("init data: %d of %d conversations sampled, %d quarantined", table.num_rows, len(rows), len(bad))
    return {"uri": store.key_uri(key), **meta}


def train_init(cfg: ArenaConfig, store: ArtifactStore, timeout_s: float = 6 * 3600, poll_s: float = 1.0) -> dict:
    """Build the sample and train the start model from ``models.target``'s weights (a rerun reuses both)."""
    from .run import base_weights, finish_stage, poll_stage, prepare_stage, submit_stage

    base = base_weights(cfg)
    if not base:
        raise TrainingError("init: models.target is not a served model, so there are no weights to train")
    data = build_init_data(cfg, store)
    name = cfg.models.target.name
    labels = {"base_label": f"{name}@base", "label": f"{name}@i0-{STAGE}"}
    job = submit_stage(cfg, store, prepare_stage(cfg, store, 0, STAGE, base, labels))
    deadline = time.monotonic() + timeout_s
    while not poll_stage(cfg, store, job):
        if time.monotonic() > deadline:
            raise TrainingError(f"init job exceeded {timeout_s:.0f}s")
        time.sleep(poll_s)
    return {**finish_stage(store, job), "data": data}


def start_model_uri(cfg: ArenaConfig, store: ArtifactStore) -> str | None:
    """The trained start model's URI, if ``init`` was trained."""
    key = layout.model(cfg.flywheel, 0, STAGE)
    return store.key_uri(key) if store.is_committed(key) else None
