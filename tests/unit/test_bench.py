"""`arena bench` over the store: recorded models judged by a scripted judge on loopback (an OpenAI-compatible HTTP
server), so that every count is exact. The real-engine proof (vLLM models on Ray Serve, a recorded and an external
model, a vLLM judge) is tests/integration/test_bench.py."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from arena_ops.bench import BenchError, BenchRequest, bench_pairs, run_bench, show
from arena_ops.config import ArenaConfig, load_config
from arena_ops.errors import ConfigError
from arena_ops.store import ArtifactStore
from tests.unit.battle.test_battle_run import ScriptedJudge, honest
from tests.unit.rating.test_bad_input import ARENA

N = 8
LENGTHS = {"m1": 5, "m2": 20, "m3": 40, "m4": 80}  # the judge prefers the longer answer: m4 > m3 > m2 > m1


@pytest.fixture
def judge() -> Iterator[ScriptedJudge]:
    j = ScriptedJudge(honest)
    yield j
    j.close()


def write(root: Path, judge_url: str) -> Path:
    cats = ["writing", "math"]
    (root / "prompts.jsonl").write_text(
        "".join(
            json.dumps({"question_id": i, "category": cats[i % 2], "turns": [f"Question {i}: say something."]}) + "\n"
            for i in range(N)
        )
    )
    for name, n in LENGTHS.items():
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps({"prompt_id": str(i), "response": f"{i} " + "x" * (n + i)}) + "\n" for i in range(N))
        )
    models = "\n".join(f"    - {{name: {m}, source: {{kind: recorded, path: {m}.jsonl}}}}" for m in list(LENGTHS)[1:])
    (root / "arena.yaml").write_text(
        textwrap.dedent("""\
        flywheel: bench-unit
        storage: {root: file://store}
        models:
          target: {name: m1, source: {kind: recorded, path: m1.jsonl}}
          competitors:
        """)
        + models
        + textwrap.dedent(f"""
          judge: {{name: judge, source: {{kind: external, base_url: "{judge_url}", model: judge}}}}
        data: {{sources: [prompts.jsonl], num_shards: 1}}
        training: {{schedule: compact}}
        battle: {{chunk_size: 5, max_retries: 0}}
        rating: {{bootstrap_rounds: 20}}
        """)
    )
    return root / "arena.yaml"


def req(models: list[str], **kw: object) -> BenchRequest:
    return BenchRequest(name="b", models=models, prompts="prompts.jsonl", **kw)  # type: ignore[arg-type]


def test_all_pairs_then_a_fourth_model_battles_only_its_pairs_and_a_rerun_nothing(
    tmp_path: Path, judge: ScriptedJudge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, judge.url))
    first = run_bench(cfg, req(["m3", "m1", "m2"]), plots=False)
    assert first["battles"] == 3 * N and first["models"] == ["m1", "m2", "m3"]
    assert judge.calls == 3 * N * 2 and first["last_run"]["judged_games"] == 3 * N * 2
    assert first["last_run"]["generated"] == 3 * N
    assert [r["model"] for r in first["board"]] == ["m3", "m2", "m1"]
    assert all(r["ci_low"] <= r["rating"] <= r["ci_high"] for r in first["board"])
    assert first["win_rates"]["m3"]["m1"] == 1.0 and first["win_rates"]["m1"]["m3"] == 0.0

    judge.calls = 0
    second = run_bench(cfg, req(["m1", "m2", "m3", "m4"]), plots=False)
    assert judge.calls == 3 * N * 2  # m4 against each of three: the three old pairs are reused
    assert second["last_run"]["generated"] == N and second["battles"] == 6 * N
    assert [r["model"] for r in second["board"]] == ["m4", "m3", "m2", "m1"]

    judge.calls = 0
    third = run_bench(cfg, req(["m4", "m3", "m2", "m1"]), plots=False)  # another order: the same pairs
    assert judge.calls == 0 and third["last_run"]["reused"] and third["battles"] == 6 * N

    # Per-category boards (the prompts carry one) and the Arena view's scopes.
    assert set(third["categories"]) == {"math", "writing"}
    assert third["categories"]["math"][0]["battles"] + third["categories"]["writing"][0]["battles"] == 2 * 3 * N // 2
    store = ArtifactStore.from_config(cfg.storage)
    from arena_ops.ui.data import ArenaReader

    scopes = {s["scope"] for s in ArenaReader(store).scopes("bench-unit")}
    assert {"bench-b", "bench-b--cat-math", "bench-b--cat-writing"} <= scopes
    assert ArenaReader(store).leaderboard("bench-unit", "bench-b")["rows"][0]["model"] == "m4"
    assert show(cfg, store, "b")["battles"] == 6 * N


def test_show_json_prints_the_scripted_interface(tmp_path: Path, judge: ScriptedJudge) -> None:
    path = write(tmp_path, judge.url)
    run = [ARENA, "--config", str(path), "bench"]
    res = subprocess.run(
        [*run, "run", "b", "--models", "m1,m2", "--prompts", str(tmp_path / "prompts.jsonl"), "--no-plots"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "| model | Prompts |" in res.stdout  # the paper's Table 1, one column per test set
    res = subprocess.run([*run, "show", "b", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["models"] == ["m1", "m2"] and out["battles"] == N
    assert all({"model", "rating", "ci_low", "ci_high"} <= set(r) for r in out["board"])
    assert out["board"][0]["model"] == "m2"
    res = subprocess.run([*run, "show", "nope", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no benchmark 'nope'" in res.stderr and "Traceback" not in res.stderr


def test_budget_pairing_deals_every_pair_evenly_and_anchor_pairs_each_with_one() -> None:
    models = [f"m{k}" for k in range(8)]
    pids = [f"p{k:03d}" for k in range(500)]
    pairs = bench_pairs(models, pids, "budget", pairs_per_prompt=2, seed=3)
    count = Counter(p for ps in pairs.values() for p in ps)
    assert len(count) == 28 and max(count.values()) - min(count.values()) <= 1
    assert all(len(set(ps)) == 2 and all(a < b for a, b in ps) for ps in pairs.values())
    assert bench_pairs(models, pids, "budget", 2, seed=3) == pairs  # deterministic
    anchored = bench_pairs(models, pids[:3], "anchor", anchor="m5")
    assert anchored["p000"] == [("m0", "m5"), ("m1", "m5"), ("m2", "m5"), ("m3", "m5"), ("m4", "m5"), ("m5", "m6"),
                                ("m5", "m7")]  # fmt: skip
    every = bench_pairs(list(reversed(models)), pids[:1], "all")["p000"]
    assert len(every) == 28 and every[0] == ("m0", "m1")  # oriented by name, whatever the order given
    with pytest.raises(BenchError, match="pairing must be one of"):
        bench_pairs(models, pids, "sampled")


def test_bad_requests_say_what_to_do(tmp_path: Path, judge: ScriptedJudge, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg: ArenaConfig = load_config(write(tmp_path, judge.url))
    with pytest.raises(ConfigError, match=r"\['gpt-5'\] not in the config's models"):
        run_bench(cfg, req(["m1", "gpt-5"]))
    with pytest.raises(BenchError, match="at least two models"):
        run_bench(cfg, req(["m1"]))
    with pytest.raises(BenchError, match="benchmark name"):
        run_bench(cfg, BenchRequest(name="Bad Name", models=["m1", "m2"], prompts="prompts.jsonl"))
    with pytest.raises(BenchError, match="no committed test set 'mix'"):
        run_bench(cfg, BenchRequest(name="b", models=["m1", "m2"], testset="mix"))
    run_bench(cfg, req(["m1", "m2"]), plots=False)
    (tmp_path / "other.jsonl").write_text((tmp_path / "prompts.jsonl").read_text())
    with pytest.raises(BenchError, match="a benchmark keeps its prompts"):
        run_bench(cfg, BenchRequest(name="b", models=["m1", "m2"], prompts="other.jsonl"))
    # The same file read from another working directory (another path) is the same benchmark.
    same = BenchRequest(name="b", models=["m1", "m2"], prompts=str(tmp_path / "prompts.jsonl"))
    assert run_bench(cfg, same, plots=False)["last_run"]["reused"]


def test_a_declared_benchmark_runs_by_name_and_bad_declarations_name_their_key(
    tmp_path: Path, judge: ScriptedJudge
) -> None:
    path = write(tmp_path, judge.url)
    declared = "benchmarks:\n  - {name: top, models: [m2, m4], prompts: prompts.jsonl, pairing: anchor}\n"
    path.write_text(path.read_text() + declared)
    res = subprocess.run(
        [ARENA, "--config", str(path), "bench", "run", "top", "--no-plots", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["models"] == ["m2", "m4"] and out["battles"] == N and out["anchor_model"] == "m2"
    res = subprocess.run(
        [ARENA, "--config", str(path), "bench", "run", "other"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and "not declared in the config's benchmarks (declared: top)" in res.stderr
    path.write_text(path.read_text().replace("models: [m2, m4]", "models: [m2, gpt-9]"))
    with pytest.raises(ConfigError, match=r"benchmarks.0.models: \['gpt-9'\] not in models"):
        load_config(path)
    path.write_text(path.read_text().replace("prompts: prompts.jsonl", "prompts: prompts.jsonl, testset: mix"))
    with pytest.raises(ConfigError, match="give exactly one of testset and prompts"):
        load_config(path)


def test_reference_board_gives_the_table_2_row_on_both_scales(tmp_path: Path, judge: ScriptedJudge) -> None:
    """``--reference``: the benchmark's board against a published one (LMSYS's CSV columns), renamed by a map."""
    path = write(tmp_path, judge.url)
    run = [ARENA, "--config", str(path), "bench"]
    prompts = str(tmp_path / "prompts.jsonl")
    res = subprocess.run(
        [*run, "run", "b", "--models", "m1,m2,m3,m4", "--prompts", prompts, "--no-plots"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    # The human arena agrees on the order of m4 > m3 > m2 and puts m1 above m2 (its intervals separate all four).
    rows = [("Model-4", 1200), ("Model-3", 1100), ("Model-1", 1000), ("Model-2", 900)]
    (tmp_path / "lmsys.csv").write_text(
        "model,rating,rating_q025,rating_q975,num_battles\n"
        + "".join(f"{m},{r},{r - 10},{r + 10},5000\n" for m, r in rows)
        + "other-model,950,940,960,100\n"
    )
    (tmp_path / "names.json").write_text(json.dumps({f"Model-{k}": f"m{k}" for k in range(1, 5)}))
    res = subprocess.run(
        [*run, "show", "b", "--reference", str(tmp_path / "lmsys.csv"), "--rename-reference",
         str(tmp_path / "names.json"), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    c = json.loads(res.stdout)["consistency"]
    assert c["models"] == 4 and c["spearman"] == pytest.approx(0.8)  # one adjacent swap among four
    # Ours separates every pair (the judge's preference is deterministic): 5 of 6 reference-separated pairs agree.
    assert c["agreement_with_ci"] == pytest.approx(5 / 6) and c["agreement_with_ci_paper"] == pytest.approx(4 / 6)
    assert c["table2"]["paper"].startswith("| WizardArena (b) | 80.00% | 66.67% |")
    res = subprocess.run(
        [*run, "show", "b", "--reference", str(tmp_path / "lmsys.csv")], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and "share 0 model(s)" in res.stderr  # without the name map nothing matches
