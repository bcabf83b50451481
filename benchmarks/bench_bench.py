"""What `arena bench` costs around the models: 8 models × N prompts, all pairs, then a ninth model.

The models are recorded (their answers read from files) and the judge is an OpenAI-compatible server on loopback that
answers at once, so what is timed is the pipeline itself: planning, content keys, the HTTP client, committing parts
to the store, building the battle table and rating it (100 bootstrap rounds, the boards written). Reported side by
side in one run: battles per second of the full run, the time to add a ninth model (its 8 pairs only), and the ratio
of the two to the share of battles the ninth model adds (8 of 36 pairs; 1.0 = the increment costs what its battles
cost, nothing for the 28 reused pairs).

Run: ``.venv/bin/python benchmarks/bench_bench.py [--prompts 500]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: the loopback judge of the unit tests

from arena_ops.bench import BenchRequest, run_bench  # noqa: E402
from arena_ops.config import load_config  # noqa: E402
from tests.unit.battle.test_battle_run import ScriptedJudge, honest  # noqa: E402


def setup(root: Path, prompts: int, judge_url: str) -> Path:
    (root / "prompts.jsonl").write_text(
        "".join(
            json.dumps({"id": f"q{i}", "turns": [f"Question {i}: explain something."]}) + "\n" for i in range(prompts)
        )
    )
    names = [f"m{k}" for k in range(9)]
    for k, name in enumerate(names):
        rows = [{"prompt_id": f"q{i}", "response": f"answer {i} " + "x" * ((k * 7 + i) % 50)} for i in range(prompts)]
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    competitors = "\n".join(f"    - {{name: {n}, source: {{kind: recorded, path: {n}.jsonl}}}}" for n in names[1:])
    (root / "arena.yaml").write_text(
        "flywheel: bench\nstorage: {root: file://store}\nmodels:\n"
        f"  target: {{name: m0, source: {{kind: recorded, path: m0.jsonl}}}}\n  competitors:\n{competitors}\n"
        + textwrap.dedent(f"""\
          judge: {{name: judge, source: {{kind: external, base_url: "{judge_url}", model: judge}}}}
        data: {{sources: [prompts.jsonl], num_shards: 1}}
        training: {{schedule: compact}}
        battle: {{concurrency: 64, chunk_size: 2048}}
        """)
    )
    return root / "arena.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    judge = ScriptedJudge(honest)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(setup(Path(tmp), args.prompts, judge.url))
            eight = [f"m{k}" for k in range(8)]
            t0 = time.perf_counter()
            full = run_bench(cfg, BenchRequest("b", eight, prompts=f"{tmp}/prompts.jsonl"), plots=False)
            t_full = time.perf_counter() - t0
            t1 = time.perf_counter()
            more = run_bench(cfg, BenchRequest("b", [*eight, "m8"], prompts=f"{tmp}/prompts.jsonl"), plots=False)
            t_add = time.perf_counter() - t1
            t2 = time.perf_counter()
            run_bench(cfg, BenchRequest("b", [*eight, "m8"], prompts=f"{tmp}/prompts.jsonl"), plots=False)
            t_again = time.perf_counter() - t2
    finally:
        judge.close()
    added = more["battles"] - full["battles"]
    share = added / more["battles"]
    print(f"8 models × {args.prompts} prompts, all pairs: {full['battles']} battles in {t_full:.1f} s "
          f"→ {full['battles'] / t_full:.0f} battles/s ({2 * full['battles']} judge calls)")  # fmt: skip
    print(f"a ninth model: {added} new battles in {t_add:.1f} s → {added / t_add:.0f} battles/s; "
          f"{t_add / t_full:.2f} of the full run's time for {share:.2f} of the battles "
          f"(ratio {t_add / t_full / share:.2f})")  # fmt: skip
    print(f"the same benchmark again (nothing to battle): {t_again:.1f} s")
    from results import emit

    calls = f"{full['battles']} battles, {2 * full['battles']} judge calls to a loopback judge"
    emit(f"`arena bench`, 8 recorded models × {args.prompts} prompts, all pairs", full["battles"] / t_full,
         "battles/s", note=calls)  # fmt: skip
    cost = t_add / t_full / share
    emit("`arena bench`, a ninth model added", cost, "× the full run's per-battle cost", ratio=cost,
         better="lower", baseline="the full run's per-battle cost, same run")  # fmt: skip


if __name__ == "__main__":
    main()
