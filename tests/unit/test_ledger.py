"""The cost ledger of a round (the DAG's functions, no Airflow): an answering model and the judge on a loopback
OpenAI-compatible server that reports a different usage for every request. The ledger's tokens per model equal what
the server reported; a rerun counts nothing twice; money follows cost.prices; a budget below the estimate stops the
round before a single request reaches the server; a training job is checked against the last job of its stage."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from arena_ops import layout, ledger
from arena_ops.config import load_config
from arena_ops.flywheel import battle_step, load, prepare_data, render_report, report, resolve_round, round_status
from arena_ops.ledger import BudgetExceededError
from tests.unit.battle.test_battle_run import ScriptedJudge, honest

N = 5


def reply(user: str) -> str:
    if "<<<BEGIN RESPONSE" in user:
        return honest(user)
    return f"My answer to: {user}" + " and more" * (len(user) % 7)


def usage(messages: list[dict], text: str) -> tuple[int, int]:
    """Not a fixed figure: the ledger must add up what each request reported."""
    return sum(len(m["content"]) for m in messages) // 3 + 1, len(text) // 3 + 2


def write(root: Path, url: str, cost: str = "") -> Path:
    (root / "prompts.jsonl").write_text(
        "".join(
            json.dumps({"id": f"q{i}", "turns": [f"Question {i}: tell me about the number {i}" + "; and why" * i]})
            + "\n"
            for i in range(N)
        )
    )
    (root / "beta.jsonl").write_text(
        "".join(json.dumps({"prompt_id": f"q{i}", "response": "y" * (30 + i)}) + "\n" for i in range(N))
    )
    (root / "arena.yaml").write_text(
        textwrap.dedent(f"""\
        flywheel: costs
        storage: {{root: file://store}}
        models:
          target:
            name: alpha
            source: {{kind: external, base_url: "{url}", model: alpha}}
            sampling: {{max_tokens: 64}}
          competitors: [{{name: beta, source: {{kind: recorded, path: beta.jsonl}}}}]
          judge:
            name: judge
            source: {{kind: external, base_url: "{url}", model: judge}}
            sampling: {{max_tokens: 128}}
        data:
          sources: [prompts.jsonl]
          num_shards: 1
          prefix_dedup_chars: 0
          minhash_threshold: null
          languages: null
        training: {{schedule: compact, stages: []}}
        battle: {{max_retries: 0, chunk_size: 2}}
        judge: {{max_parse_retries: 0}}
        rating: {{bootstrap_rounds: 10}}
        """)
        + cost
    )
    return root / "arena.yaml"


PRICES = """\
cost:
  currency: EUR
  cpu_hour: 0.5
  prices:
    alpha: {input_per_1m: 2.0, output_per_1m: 6.0}
    judge: {input_per_1m: 3.0, output_per_1m: 15.0}
"""


@pytest.fixture
def server():
    s = ScriptedJudge(reply, models=("alpha", "judge"), usage=usage)
    yield s
    s.close()


def test_the_ledger_counts_what_the_server_reported_once_and_prices_it(tmp_path: Path, server) -> None:
    ref = resolve_round(str(write(tmp_path, server.url, PRICES)), iteration=0)
    prepare_data(ref)
    out = battle_step(ref, 0)
    assert out["battles"] == N
    _, cfg, store = load(ref)
    (entry,) = ledger.entries(store, "costs", 0)
    assert entry["entry"] == "battle-all-shard-000" and entry["kind"] == "battle"
    tokens = {r["model"]: [r["requests"], r["prompt_tokens"], r["completion_tokens"]] for r in entry["rows"][:-1]}
    assert tokens == server.reported  # every request, as reported: N answers of alpha, 2 games per battle judged
    assert server.reported["alpha"][0] == N and server.reported["judge"][0] == 2 * N
    task = entry["rows"][-1]
    assert task["role"] == "task" and task["wall_s"] > 0 and task["cpu_s"] > 0 and task["gpu_s"] is None
    assert entry["judgments"] == 2 * N and entry["battles"] == N

    # A rerun finds the battles done: nothing sent, nothing counted twice.
    requests = server.requests
    assert battle_step(ref, 0).get("reused") and server.requests == requests
    assert len(ledger.entries(store, "costs", 0)) == 1

    led = ledger.summary(cfg, store, 0)
    a, j = server.reported["alpha"], server.reported["judge"]
    money = (a[1] * 2.0 + a[2] * 6.0 + j[1] * 3.0 + j[2] * 15.0) / 1e6 + task["cpu_s"] / 3600 * 0.5
    assert led["cost"] == pytest.approx(money, rel=1e-4) and led["currency"] == "EUR"
    assert led["cost_per_1k_judgments"] == pytest.approx(1000 * money / (2 * N), rel=1e-4)
    assert led["battles_per_hour"] == pytest.approx(3600 * N / task["wall_s"], rel=1e-2)
    # The report and `arena round show` carry it.
    report(ref, {})
    body = store.read_json(f"{layout.round_report('costs', 0)}/report.json")
    assert body["ledger"]["cost"] == led["cost"] and round_status(load(ref)[0], store)["ledger"]["cost"] == led["cost"]
    md = render_report(body)
    assert "Cost ledger:" in md and "EUR per 1k judgments" in md and "| battle-all-shard-000 | judge (judge) |" in md


def test_a_budget_below_the_estimate_stops_the_round_before_any_request(tmp_path: Path, server) -> None:
    ref = resolve_round(str(write(tmp_path, server.url, PRICES + "  budget: 0.0001\n")), iteration=0)
    prepare_data(ref)
    with pytest.raises(BudgetExceededError) as err:
        battle_step(ref, 0)
    assert server.requests == 0  # not even the readiness probe
    msg = str(err.value)
    assert "over cost.budget 0.0001 EUR" in msg and "battle run all-shard-000" in msg and "an estimated" in msg
    _, cfg, store = load(ref)
    assert not store.list(layout.iteration_base("costs", 0) + "/responses")
    # The estimate is an upper bound: with room for it, the run goes through and spends no more than estimated.
    from arena_ops.flywheel import step, step_battle_run

    rnd = load(ref)[0]
    estimate = ledger.estimate_battle(step_battle_run(rnd, cfg, store, step(rnd, 0), None))
    roomy = load_config(tmp_path / "arena.yaml", {"cost.budget": estimate["cost"] * 1.01 + 0.01})
    assert roomy.cost.budget > estimate["cost"]
    # The round had not started: resolved anew with the larger budget.
    ref = resolve_round(str(write(tmp_path, server.url, PRICES + f"  budget: {roomy.cost.budget}\n")), iteration=0)
    battle_step(ref, 0)
    spent = ledger.spent(load(ref)[1], store, 0)
    assert 0 < spent <= estimate["cost"]
    est = {(r["role"], r["model"]): r for r in estimate["rows"]}
    for r in ledger.entries(store, "costs", 0)[0]["rows"][:-1]:
        assert r["completion_tokens"] <= est[r["role"], r["model"]]["completion_tokens"], r


def test_a_training_job_is_estimated_from_the_last_job_of_its_stage(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "http://127.0.0.1:9/v1", PRICES + "  gpu_hour: 2.0\n  budget: 1.0\n"))
    from arena_ops.store import ArtifactStore

    store = ArtifactStore.from_config(cfg.storage)
    assert ledger.estimate_training(cfg, store, 1, "sft", 100) is None  # no earlier job: unestimated
    row = {"role": "task", "model": None, "wall_s": 1800.0, "cpu_s": 100.0, "gpu_s": 3600.0}
    ledger.write(store, "costs", 0, "train-sft", "train", [row], fingerprint="f", examples=50, stage="sft")
    assert ledger.price(row, cfg.cost) == pytest.approx(2.0)  # the GPU hour, not the CPU seconds
    assert ledger.estimate_training(cfg, store, 1, "sft", 100) == pytest.approx(4.0)  # twice the rows
    with pytest.raises(BudgetExceededError, match=r"the sft job .* over cost.budget 1.0000 EUR"):
        ledger.check_budget(cfg, store, 1, "the sft job", 4.0, skip="train-sft")
    ledger.check_budget(cfg, store, 1, "the sft job", 0.5, skip="train-sft")  # within


def test_prices_name_known_models(tmp_path: Path) -> None:
    from arena_ops.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cost.prices: \['gpt-5'\] not in models"):
        load_config(write(tmp_path, "http://x/v1", "cost: {prices: {gpt-5: {input_per_1m: 1}}}\n"))
