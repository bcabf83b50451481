"""The judge's canary in whole rounds (`run_round`, the DAG's functions): recorded battlers, a scripted judge on
loopback. A judge that prefers the first answer is stopped by the gate before any training data, naming the metric;
the honest judge passes, and its metrics (with its identity) are in the round report; a second round measures drift."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from arena_ops import layout
from arena_ops.battle.canary import JudgeGateError, build_from_votes, read_canary
from arena_ops.errors import ConfigError
from arena_ops.flywheel import run_round
from arena_ops.store import ArtifactStore
from tests.unit.battle.test_battle_run import ScriptedJudge, honest

N = 6


def first_wins(_user: str) -> str:
    return '{"explanation": "the first one", "score_a": 8, "score_b": 3}'


def write(root: Path, judge_url: str) -> Path:
    (root / "prompts.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i}", "turns": [f"Question {i}: tell me about {i}."]}) + "\n" for i in range(N))
    )
    for name, n in (("alpha", 4), ("beta", 40)):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps({"prompt_id": f"q{i}", "response": "y" * (n + i)}) + "\n" for i in range(N))
        )
    pairs = [  # labelled pairs: the longer answer is the right one, in either position
        {"turns": [f"Canary {k}?"], "model_a": "short", "model_b": "long", "answer_a": "no",
         "answer_b": "a full answer", "label": "model_b" if k % 2 else "model_a"} for k in range(8)
    ]  # fmt: skip
    for p in pairs:
        if p["label"] == "model_a":
            p["answer_a"], p["answer_b"] = p["answer_b"], p["answer_a"]
    (root / "canary.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (root / "arena.yaml").write_text(
        textwrap.dedent(f"""\
        flywheel: canary
        storage: {{root: file://store}}
        models:
          target: {{name: alpha, source: {{kind: recorded, path: alpha.jsonl}}}}
          competitors: [{{name: beta, source: {{kind: recorded, path: beta.jsonl}}}}]
          judge: {{name: judge, source: {{kind: external, base_url: "{judge_url}", model: judge}}}}
        data: {{sources: [prompts.jsonl], num_shards: 2, prefix_dedup_chars: 0, minhash_threshold: null}}
        training: {{schedule: compact, stages: []}}
        battle: {{max_retries: 0}}
        judge:
          max_parse_retries: 0
          canary: {{path: canary.jsonl}}
          gate: {{min_agreement: 0.6, max_position_flips: 0.2, max_drift: 0.5}}
        rating: {{bootstrap_rounds: 20}}
        """)
    )
    return root / "arena.yaml"


def test_a_position_biased_judge_stops_the_round_before_training_data(tmp_path: Path) -> None:
    judge = ScriptedJudge(first_wins)
    try:
        config = write(tmp_path, judge.url)
        with pytest.raises(JudgeGateError) as err:
            run_round(str(config), iteration=0)
    finally:
        judge.close()
    msg = str(err.value)
    assert "agreement 0.000 < judge.gate.min_agreement 0.6" in msg
    assert "position_flips 1.000 > judge.gate.max_position_flips 0.2" in msg and "judge 'judge'" in msg
    store = ArtifactStore.from_uri(f"file://{tmp_path}/store")
    assert store.is_committed("canary/iter=0/battles/all-shard-000")  # the battles stay
    assert not store.list("canary/iter=0/train-data")  # no training data was built
    metrics = store.read_json(f"{layout.canary('canary', 0)}/metrics.json")
    assert metrics["first_position_win_rate"] == 1.0 and metrics["judge_hash"] and metrics["canary_hash"]


def test_the_honest_judge_passes_and_the_report_shows_its_canary(tmp_path: Path) -> None:
    judge = ScriptedJudge(honest)
    try:
        config = write(tmp_path, judge.url)
        run_round(str(config), iteration=0)
        calls = judge.calls
        run_round(str(config), iteration=1)  # a second round: the same judge, no drift
    finally:
        judge.close()
    store = ArtifactStore.from_uri(f"file://{tmp_path}/store")
    body = store.read_json(f"{layout.round_report('canary', 0)}/report.json")
    c = body["canary"]
    assert c["agreement"] == 1.0 and c["position_flips"] == 0.0 and c["breaches"] == [] and c["drift"] is None
    assert c["judge"] == "judge" and c["template"] and c["sampling"]["temperature"] == 0.0
    assert "Judge canary" in store.get_bytes(f"{layout.round_report('canary', 0)}/report.md").decode()
    second = store.read_json(f"{layout.round_report('canary', 1)}/report.json")["canary"]
    assert second["drift"] == 0.0 and second["drift_pairs"] == 8
    assert calls >= 16  # both games of eight pairs were judged in round 0


def test_canary_files_are_checked_and_built_from_crowd_votes(tmp_path: Path, shared_dir: Path) -> None:
    (tmp_path / "bad.jsonl").write_text(json.dumps({"turns": ["q"], "model_a": "a", "model_b": "b"}) + "\n")
    with pytest.raises(ConfigError, match="line 1: a canary pair needs"):
        read_canary(str(tmp_path / "bad.jsonl"))
    d = shared_dir / "validation"
    pairs = build_from_votes(
        str(d / "battles" / "vicuna80_human_votes.csv"),
        sorted(str(p) for p in (d / "judge_meta").glob("answers_*.jsonl")),
        str(d / "judge_meta" / "vicuna80_questions.jsonl"),
        n=40,
    )
    assert len(pairs) == 40 and all(p["agreeing"] / p["votes"] >= 0.75 and p["label"] != "tie" for p in pairs)
    assert all(p["model_a"] < p["model_b"] for p in pairs)
    (tmp_path / "canary.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    assert len(read_canary(str(tmp_path / "canary.jsonl"), limit=10)) == 10


def test_the_last_accepted_rounds_verdicts_as_the_canary(tmp_path: Path) -> None:
    """judge.canary.previous_verdicts: round 0 has no accepted round (no canary yet); round 1 re-judges round 0's
    battles, labelled with round 0's verdicts — the same judge agrees; a judge that turned position-biased in round 2
    is stopped by the gate on those pairs, before its training data."""
    answer = {"reply": honest}
    judge = ScriptedJudge(lambda user: answer["reply"](user))
    try:
        config = write(tmp_path, judge.url)
        text = config.read_text().replace("canary: {path: canary.jsonl}", "canary: {previous_verdicts: 4}")
        config.write_text(text.replace("max_drift: 0.5", "max_drift: null"))
        first = run_round(str(config), iteration=0)
        run_round(str(config), iteration=1)
        answer["reply"] = first_wins
        with pytest.raises(JudgeGateError, match="position_flips 1.000 > judge.gate.max_position_flips 0.2"):
            run_round(str(config), iteration=2)
    finally:
        judge.close()
    store = ArtifactStore.from_uri(f"file://{tmp_path}/store")
    assert "canary" in first["uri"] and not store.is_committed(layout.canary("canary", 0))  # nothing accepted yet
    one = store.read_json(f"{layout.canary('canary', 1)}/metrics.json")
    battles = store.manifest("canary/iter=0/battles/all-shard-000").meta["battles"]
    assert one["pairs"] == min(4, battles) > 0 and one["previous_verdicts"]["iteration"] == 0
    assert one["agreement"] == 1.0 and one["position_flips"] == 0.0
    assert one["canary"] is None and one["canary_hash"] is None
    two = store.read_json(f"{layout.canary('canary', 2)}/metrics.json")
    assert two["previous_verdicts"]["iteration"] == 1 and two["first_position_win_rate"] == 1.0
    assert not store.list("canary/iter=2/train-data")
