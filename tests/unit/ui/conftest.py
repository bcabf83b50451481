"""A store seeded the way rounds seed it: real battle runs (recorded models, the exact-match verifier as judge —
no servers), a round report with its DAG run, then the Elo step. One answer is hostile HTML."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from arena_ops import layout, ledger
from arena_ops.battle.run import BattleRun, plan
from arena_ops.config import load_config
from arena_ops.data.ingest import ingest
from arena_ops.flywheel import elo_update
from arena_ops.store import ArtifactStore
from tests.conftest import HOSTILE, write_recorded_task


def seed(root: Path) -> Path:
    prompts = [
        {"id": f"q{i}", "instruction": f"What is {i} plus {i}? Reply with the number.", "output": str(2 * i)}
        for i in range(8)
    ]
    write_recorded_task(
        root,
        prompts,
        {
            "alpha": lambda i: str(2 * i),  # always right
            "beta": lambda i: str(2 * i) if i % 2 else "0",  # right on odd prompts
            "gamma": lambda i: HOSTILE if i == 0 else "7",  # wrong, once with markup
        },
    )
    config = root / "arena.yaml"
    config.write_text(
        textwrap.dedent("""\
        flywheel: ui
        storage: {root: file://store}
        models:
          target: {name: alpha, source: {kind: recorded, path: alpha.jsonl}}
          competitors:
            - {name: beta, source: {kind: recorded, path: beta.jsonl}}
            - {name: gamma, source: {kind: recorded, path: gamma.jsonl}}
          judge: {name: beta, source: {kind: recorded, path: beta.jsonl}}
        judge: {kind: verifier, verifier: exact}
        battle: {pairing: all_pairs}
        rating: {bootstrap_rounds: 20}
        cost: {cpu_hour: 1.0}
        """)
    )
    cfg = load_config(config)
    store = ArtifactStore.from_config(cfg.storage)
    table = ingest([str(root / "prompts.jsonl")]).table
    for it, run in ((0, "sft-shard-000"), (1, "sft-shard-001"), (1, "eval-mix")):
        # Each version of the target answers at its own setting: its battles are battles of their own (a battle_id
        # seen twice is one battle, rated once), as a new checkpoint's are.
        cfg = load_config(config)
        cfg.models.target.sampling.temperature = {"sft-shard-000": 0.7, "sft-shard-001": 0.6, "eval-mix": 0.5}[run]
        if run == "eval-mix":  # an evaluation: kept apart from the iterations, as flywheel.evaluate files it
            meta = {"target_label": "alpha@i0-sft", "target_name": "alpha", "testset": "mix", "iteration": it}
            battle = BattleRun(
                cfg, store, it, run, plan(cfg, table), base=layout.eval_base("ui", "mix"), table="i0-sft", meta=meta
            )
        else:
            battle = BattleRun(
                cfg,
                store,
                it,
                run,
                plan(cfg, table),
                meta={"target_label": f"alpha@i{it}-sft" if it else "alpha@base", "target_name": "alpha"},
            )
        asyncio.run(battle.run_all())
        if run.startswith("sft"):
            # A training job's entry of the round's cost ledger, as flywheel.finish files it.
            task = {"role": "task", "model": None, "wall_s": 60.0 * (it + 1), "cpu_s": 36.0 * (it + 1), "gpu_s": None}
            ledger.write(store, "ui", it, "train-sft", "train", [task], fingerprint=f"f{it}", examples=10)
            with store.artifact("ui", it, "report", "round") as w:
                w.write_json(
                    "report.json",
                    {
                        "iteration": it,
                        "target": f"alpha.jsonl#{it}",
                        "dag_run": {
                            "dag_id": "arena_flywheel_round",
                            "run_id": f"manual__2026-01-0{it + 1}T00:00:00+00:00",
                        },
                        # The judge's canary as flywheel.report files it (round 1 drifted past its gate).
                        "canary": {
                            "agreement": 1.0 - 0.25 * it,
                            "position_flips": 0.1 * it,
                            "drift": 0.3 if it else None,
                            "breaches": ["drift 0.300 > judge.gate.max_drift 0.2"] if it else [],
                        },
                        "promotion": {
                            "decision": "keep",
                            "chosen": {"label": "alpha@base", "uri": "x"},
                            "reason": "no challenger beats the incumbent with P ≥ 0.95",
                            "challengers": [{"label": f"alpha@i{it}-sft", "p_better": 0.6}],
                            **({"approval": {"status": "pending", "proposed": "keep"}} if it else {}),
                        },
                        "ledger": ledger.summary(cfg, store, it),
                    },
                )
        elo_update(str(config))
    # A benchmark of the three models on the same prompts (arena bench): its board is a scope of the view.
    from arena_ops.bench import BenchRequest, run_bench

    run_bench(cfg, BenchRequest("wizard", ["gamma", "beta", "alpha"], prompts=str(root / "prompts.jsonl")), plots=False)
    return config


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    config = seed(tmp_path_factory.mktemp("ui-store"))
    return ArtifactStore.from_config(load_config(config).storage)
