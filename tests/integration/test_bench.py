"""`arena bench` on real engines: two tiny vLLM models on Ray Serve, GPT-4's published MT-Bench answers (recorded) and
an external model (an OpenAI-compatible server on loopback: the Serve endpoint itself, under another name), judged by
a tiny vLLM judge. All pairs, then a fourth model battles only its pairs, then a rerun battles nothing.

Shares the session's Ray Serve deployment (tests/integration/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.integration.conftest import ARENA, TINY_ENGINE, Serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATASETS = Path(__file__).resolve().parents[2] / "configs" / "datasets"
PROMPTS = 3


def write_config(serving: Serving, root: Path) -> Path:
    questions = [json.loads(line) for line in (DATASETS / "mt_bench_questions.jsonl").read_text().splitlines()]
    (root / "prompts.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in questions if 101 <= q["question_id"] <= 130)
    )
    models, engine = serving.root / "models", TINY_ENGINE
    sampling = "{temperature: 0.8, max_tokens: 12}"
    (root / "arena.yaml").write_text(
        textwrap.dedent(f"""\
        flywheel: bench-test
        storage: {{root: file://store}}
        models:
          target:
            name: tiny-a
            source: {{kind: served, path: {models}/a, tiny: {{arch: llama, seed: 0}}, engine: {engine}}}
            sampling: {sampling}
          competitors:
            - name: tiny-b
              source: {{kind: served, path: {models}/b, tiny: {{arch: qwen2, seed: 1}}, engine: {engine}}}
              sampling: {sampling}
            - name: gpt-4
              source: {{kind: recorded, path: {DATASETS}/mt_bench_reference_answers_gpt4.jsonl}}
            - name: tiny-a-api
              source: {{kind: external, base_url: "{serving.url}", model: tiny-a}}
              sampling: {sampling}
          judge:
            name: tiny-b
            source: {{kind: served, path: {models}/b, tiny: {{arch: qwen2, seed: 1}}, engine: {engine}}}
            sampling: {{temperature: 0.0, max_tokens: 256}}
        data: {{sources: [prompts.jsonl], num_shards: 1}}
        training: {{schedule: compact}}
        battle: {{concurrency: 8, chunk_size: 4}}
        judge: {{explanation_max_chars: 24}}
        rating: {{bootstrap_rounds: 20}}
        serving: {{port: {serving.port}}}
        """)
    )
    return root / "arena.yaml"


def bench(serving: Serving, config: Path, *args: str) -> dict:
    res = subprocess.run(
        [ARENA, "--config", str(config), "bench", *args], capture_output=True, text=True, env=serving.env, timeout=900
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def test_bench_rates_served_recorded_and_external_models_incrementally(serving: Serving, tmp_path: Path) -> None:
    config = write_config(serving, tmp_path)
    common = ["--prompts", str(tmp_path / "prompts.jsonl"), "--limit", str(PROMPTS), "--no-plots"]
    bench(serving, config, "run", "mt", "--models", "tiny-a,gpt-4,tiny-a-api", *common)
    first = json.loads(bench(serving, config, "show", "mt", "--json").stdout)
    assert first["models"] == ["gpt-4", "tiny-a", "tiny-a-api"] and first["planned"] == 3 * PROMPTS
    assert first["battles"] + first["invalid"] == 3 * PROMPTS
    assert first["last_run"]["judged_games"] == 2 * 3 * PROMPTS
    assert first["last_run"]["generated"] == 3 * PROMPTS  # one unit per model and prompt (GPT-4: read, not asked)
    if first["battles"]:
        assert all(r["ci_low"] <= r["rating"] <= r["ci_high"] for r in first["board"])

    # A fourth model: only its three pairs are battled; the old answers and judgments are reused by content key.
    bench(serving, config, "run", "mt", "--models", "tiny-a,gpt-4,tiny-a-api,tiny-b", *common)
    second = json.loads(bench(serving, config, "show", "mt", "--json").stdout)
    assert second["planned"] == 6 * PROMPTS and second["battles"] + second["invalid"] == 6 * PROMPTS
    assert second["last_run"]["judged_games"] == 2 * 3 * PROMPTS
    assert second["last_run"]["generated"] == PROMPTS

    res = bench(serving, config, "run", "mt", "--models", "tiny-b,tiny-a-api,gpt-4,tiny-a", *common)
    assert "this run: nothing new" in res.stdout
    third = json.loads(bench(serving, config, "show", "mt", "--json").stdout)
    assert third["last_run"]["reused"] and third["battles"] == second["battles"]
