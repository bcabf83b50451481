"""The Round record and its resolution rules (iteration, schedule, start model), the layout, the stage registry,
the settings that used to do nothing, and the Elo step over stored battles — without Airflow or serving."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from arena_ops import layout
from arena_ops.config import TrainingConfig, load_config
from arena_ops.errors import ConfigError, SlicesExhaustedError, StoreURIError
from arena_ops.flywheel import elo_update, render_report, round_status
from arena_ops.round import ModelRef, Round, iteration_for, plan_steps, resolve, start_model
from arena_ops.store import ArtifactStore
from arena_ops.training.stage_registry import ORDER, STAGES, with_needs


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt_id": "q", "response": "x"}) + "\n")
    path = tmp_path / "arena.yaml"
    path.write_text(
        textwrap.dedent("""\
        flywheel: fw
        storage: {root: file://store}
        models:
          target: {name: tgt, source: {kind: served, path: ./base}}
          competitors:
            - {name: c1, source: {kind: recorded, path: a.jsonl}}
            - {name: c2, source: {kind: recorded, path: a.jsonl}}
          judge: {name: c1, source: {kind: recorded, path: a.jsonl}}
        data: {num_shards: 9}
        airflow: {start_date: "2026-01-01"}
        """)
    )
    return path


def register(store: ArtifactStore, iteration: int, stage: str) -> str:
    with store.artifact_at(layout.model("fw", iteration, stage), meta={"iteration": iteration, "stage": stage}) as w:
        w.write_json("registry.json", {})
    return store.key_uri(layout.model("fw", iteration, stage))


def eval_battles(store: ArtifactStore, label: str, wins: int, n: int = 20) -> None:
    """``label`` (the target, as battled) against c1 on the Mix test set: ``wins`` of ``n`` won."""
    rows = [
        {"model_a": "tgt", "model_b": "c1", "winner": "model_a" if i < wins else "model_b", "iteration": 0}
        for i in range(n)
    ]
    key = layout.eval_battles("fw", "mix", label.split("@")[1])
    with store.artifact_at(key, meta={"target_label": label}) as w:
        w.write_table("data.parquet", pa.Table.from_pylist(rows))


# The record ------------------------------------------------------------------------------------------------------


def test_round_round_trips_through_the_store_and_resolve_is_idempotent(config: Path) -> None:
    rnd = resolve(str(config), iteration=1, competitors=["c2"], sample_limit=5)
    store = rnd.store()
    again = Round.load(store, "fw", 1)
    assert again == rnd and again.cfg().battle.sample_limit == 5
    assert [c.name for c in again.cfg().models.competitors] == ["c2"]
    assert store.is_committed("fw/iter=1/round") and store.exists("fw/iter=1/round/round.json")
    assert Round.from_ref(rnd.ref()) == rnd
    # The snapshot, not the file, is what later tasks read: changing the file changes nothing for this round.
    config.write_text(config.read_text().replace("num_shards: 9", "num_shards: 12"))
    assert Round.from_ref(rnd.ref()).cfg().data.num_shards == 9
    first = store.manifest("fw/iter=1/round").committed_at
    resolve(str(config), iteration=1, competitors=["c2"], sample_limit=5)
    assert Round.load(store, "fw", 1).cfg().data.num_shards == 12  # a changed config is a re-resolved round
    assert store.manifest("fw/iter=1/round").committed_at >= first


def test_paper_schedule_uses_three_fresh_slices_per_iteration(config: Path) -> None:
    cfg = load_config(config)
    steps = plan_steps(cfg, 2)
    assert [(s.name, s.slice, s.stages) for s in steps] == [
        ("sft", 6, ["sft"]),
        ("dpo", 7, ["dpo"]),
        ("rl", 8, ["rm", "rl"]),
    ]
    assert [s.run for s in steps] == ["sft-shard-006", "dpo-shard-007", "rl-shard-008"]
    assert [s.name for s in plan_steps(cfg, 0, ["sft", "rl"])] == ["sft", "rl"]
    with pytest.raises(SlicesExhaustedError, match=r"iteration 3 needs slices 9…11 .* data.num_shards is 9"):
        plan_steps(cfg, 3)  # a ConfigError; a scheduled night past the corpus skips on it (the round DAG)
    compact = load_config(config, {"training.schedule": "compact"})
    assert [(s.name, s.slice, s.stages) for s in plan_steps(compact, 10)] == [("all", 1, ["sft", "dpo", "rm", "rl"])]


def test_iteration_from_param_then_logical_date_then_unfinished_or_next_round(config: Path) -> None:
    cfg = load_config(config)
    store = ArtifactStore.from_config(cfg.storage)
    assert iteration_for(cfg, store, 7, datetime(2026, 3, 1, tzinfo=UTC)) == 7
    assert iteration_for(cfg, store, None, datetime(2026, 1, 3, 2, tzinfo=UTC)) == 2
    assert iteration_for(cfg, store, None, None) == 0
    resolve(str(config), iteration=0)
    assert iteration_for(cfg, store, None, None) == 0  # resolved but not reported: resume it
    with store.artifact_at(layout.round_report("fw", 0)) as w:
        w.write_json("report.json", {})
    # Evaluation battles live outside iter=*: they never count as an iteration.
    eval_battles(store, "tgt@base", 5)
    assert store.list_iterations("fw") == [0] and iteration_for(cfg, store, None, None) == 1
    with pytest.raises(ConfigError, match="before airflow.start_date"):
        iteration_for(cfg, store, None, datetime(2025, 12, 1, tzinfo=UTC))


def test_current_policy_follows_the_steps_of_the_round(config: Path) -> None:
    rnd = resolve(str(config), iteration=0)
    store = rnd.store()
    assert rnd.start == ModelRef(uri=str(config.parent / "base"), label="tgt@base")
    sft, dpo, rl = rnd.steps
    assert rnd.battled_model(store, sft) == rnd.start
    assert rnd.battled_model(store, dpo) == rnd.start  # SFT not trained (yet, or no rows)
    sft_uri = register(store, 0, "sft")
    assert rnd.battled_model(store, dpo) == ModelRef(uri=sft_uri, label="tgt@i0-sft")
    register(store, 0, "rm")  # not a policy
    assert rnd.battled_model(store, rl).label == "tgt@i0-sft"
    register(store, 0, "dpo")
    assert rnd.battled_model(store, rl).label == "tgt@i0-dpo" and rnd.current_policy(store, "rm").label == "tgt@i0-dpo"
    status = round_status(rnd, store)
    assert [s["stage"] for s in status["steps"]] == ["sft", "dpo", "rl"]
    assert status["steps"][0]["produced_model"] == sft_uri and status["steps"][2]["produced_model"] is None


def test_next_iteration_starts_from_the_best_policy_on_the_mix_board_or_the_last(config: Path) -> None:
    rnd = resolve(str(config), iteration=0)
    store = rnd.store()
    for stage in ("sft", "dpo", "rm", "rl"):
        register(store, 0, stage)
    cfg = load_config(config)
    assert start_model(cfg, store, 1).label == "tgt@i0-rl"  # no Mix evaluation yet: the last policy
    for label, wins in (("tgt@base", 4), ("tgt@i0-sft", 8), ("tgt@i0-dpo", 15), ("tgt@i0-rl", 11)):
        eval_battles(store, label, wins)
    assert start_model(cfg, store, 1).label == "tgt@i0-dpo"
    last = load_config(config, {"training.next_from": "last"})
    assert start_model(last, store, 1).label == "tgt@i0-rl"
    # Without a previous round record (iterations run out of order): the newest policy of an earlier iteration.
    assert start_model(cfg, store, 5).label == "tgt@i0-rl"


# Layout, registry, settings ------------------------------------------------------------------------------------------


def test_layout_owns_every_key() -> None:
    assert layout.round_record("fw", 2) == "fw/iter=2/round"
    assert layout.battles("fw", 2, "sft-shard-006") == "fw/iter=2/battles/sft-shard-006"
    assert layout.train_data("fw", 2, "dpo") == "fw/iter=2/train-data/dpo"
    assert layout.job("fw", 2, "rl") == "fw/iter=2/jobs/rl" and layout.model("fw", 2, "rl") == "fw/iter=2/model/rl"
    assert layout.eval_battles("fw", "mix", "i0-sft") == "fw/eval/mix/battles/i0-sft"
    assert (
        layout.leaderboard("fw", "eval-mix") == "fw/leaderboard/eval-mix"
        and layout.leaderboard("fw") == "fw/leaderboard"
    )
    with pytest.raises(StoreURIError):
        layout.eval_battles("fw", "mix", "../x")
    with pytest.raises(StoreURIError):
        layout.round_record("fw", -1)


def test_stage_registry_is_the_one_place() -> None:
    assert ORDER == ("init", "sft", "dpo", "rm", "rl")  # init: the start model, before iteration 0
    assert [n for n, s in STAGES.items() if s.policy] == ["init", "sft", "dpo", "rl"]
    assert STAGES["rl"].needs == ("rm",) and with_needs(["rl", "sft"]) == ["sft", "rm", "rl"]
    assert [n for n in STAGES if TrainingConfig().accumulate.of(n)] == ["dpo", "rm", "rl"]  # the defaults
    for s in STAGES.values():
        module, _, fn = s.trainer.partition(":")
        assert module == "arena_ops.training.stages" and fn.endswith("_trainer")


def test_settings_that_used_to_do_nothing(config: Path, tmp_path: Path) -> None:
    cfg = load_config(config)
    assert cfg.models.judge.sampling.temperature == 0.0  # the judge is greedy unless told otherwise
    warm = load_config(config, {"models.judge.sampling": {"temperature": 0.5}})
    assert warm.models.judge.sampling.temperature == 0.5
    for dead in ("judge.sampling", "training.lora"):
        with pytest.raises(ConfigError, match="unknown key"):
            load_config(config, {dead: {} if dead == "judge.sampling" else True})
    with pytest.raises(ConfigError, match="rating.anchor 'c9' is not a model that will be rated"):
        load_config(config, {"rating.anchor": "c9=1100"})
    assert load_config(config, {"rating.anchor": "c2=1100"}).rating.anchor == "c2=1100"
    with pytest.raises(ConfigError, match="needs 3 slices per iteration"):
        load_config(config, {"data.num_shards": 2})
    assert load_config(config, {"data.num_shards": 2, "training.schedule": "compact"}).data.num_shards == 2


def test_training_settings_reach_the_trainer_arguments() -> None:
    from arena_ops.training.stages import _beta, rl_args

    common = {"per_device_train_batch_size": 1, "seed": 7}
    job = {"hyperparams": {"beta": 0.0, "num_generations": 4, "max_completion_length": 48}}
    args = rl_args(job, common)
    assert args["beta"] == 0.0 and args["num_generations"] == 4 and args["max_completion_length"] == 48
    assert args["per_device_train_batch_size"] == 4 and args["seed"] == 7
    assert _beta({"beta": 0.0}, 0.1) == 0.0 and _beta({"beta": None}, 0.1) == 0.1


# Elo and report ----------------------------------------------------------------------------------------------------


def test_elo_rates_each_battled_model_under_its_label_and_keeps_evaluations_apart(config: Path) -> None:
    cfg = load_config(config)
    store = ArtifactStore.from_config(cfg.storage)
    for it, label, wins in ((0, "tgt@base", 2), (1, "tgt@i0-sft", 8)):
        rows = [
            {"model_a": "tgt", "model_b": "c1", "winner": "model_a" if i < wins else "model_b", "iteration": it}
            for i in range(10)
        ]
        with store.artifact_at(layout.battles("fw", it, "sft-shard-000"), meta={"target_label": label}) as w:
            w.write_table("data.parquet", pa.Table.from_pylist(rows))
    eval_battles(store, "tgt@i0-sft", 15)
    out = elo_update(str(config))
    assert out["battles"] == 40 and out["scopes"] == ["all", "eval-mix"]
    board = {r["model"]: r["rating"] for r in store.read_json("fw/leaderboard/leaderboard.json")}
    assert board["tgt@i0-sft"] > board["c1"] > board["tgt@base"]
    mix = {r["model"] for r in store.read_json("fw/leaderboard/eval-mix/leaderboard.json")}
    assert mix == {"tgt@i0-sft", "c1"}
    history = store.read_json("fw/leaderboard/history.json")
    assert [h["iteration"] for h in history] == [1] and "tgt@i0-sft" in history[0]["ratings"]


def test_report_markdown_lists_steps_models_and_elo() -> None:
    md = render_report(
        {
            "flywheel": "fw",
            "iteration": 3,
            "schedule": "paper",
            "start": {"label": "t@i2-dpo", "uri": "file:///m"},
            "steps": [
                {
                    "stage": "sft",
                    "slice": 9,
                    "battled_label": "t@i2-dpo",
                    "battles": {"count": 4},
                    "training_rows": {"sft": 3},
                    "produced": {"sft": {"label": "t@i3-sft", "reason": None}},
                }
            ],
            "battles": {"sft": {"battles": 4, "invalid": 1, "per_model": {"t": {"wins": 1, "losses": 2, "ties": 1}}}},
            "training": [{"stage": "sft", "metrics": {"steps": 2}}, {"stage": "dpo", "skipped": "no training rows"}],
            "elo": {
                "scope": "eval-mix",
                "board": [{"model": "t@i3-sft", "rating": 1010.2, "ci_low": 990, "ci_high": 1030, "rank": 1}],
            },
        }
    )
    assert "| sft | 9 | `t@i2-dpo` | 4 | sft 3 | sft: t@i3-sft |" in md
    assert "| t | 1 | 2 | 1 |" in md and "- sft: 2 steps" in md and "- dpo: no training rows" in md
    assert "| t@i3-sft | 1010 | 990 – 1030 | 1 |" in md


def test_a_started_round_is_never_rewritten(config: Path) -> None:
    """Once a step has written anything, resolving the same iteration with a changed config is refused, naming what
    changed and the way out; the record stays as it was. The same config resolves to the same record."""
    from arena_ops.errors import RoundStartedError

    rnd = resolve(str(config), iteration=0)
    store = rnd.store()
    with store.artifact_at(layout.battles("fw", 0, rnd.steps[0].run), meta={}) as w:  # the first step has started
        w.write_table("data.parquet", pa.table({"model_a": ["tgt"], "model_b": ["c1"], "winner": ["tie"]}))
    written = store.get_bytes("fw/iter=0/round/round.json")
    config.write_text(config.read_text().replace("num_shards: 9", "num_shards: 12"))
    with pytest.raises(RoundStartedError, match=r"fw iteration 0 has started .*data\.num_shards.*new iteration"):
        resolve(str(config), iteration=0)
    config.write_text(config.read_text().replace("num_shards: 12", "num_shards: 9"))
    with pytest.raises(RoundStartedError, match="in steps"):  # another plan is another round too
        resolve(str(config), iteration=0, policies=["sft"])
    assert store.get_bytes("fw/iter=0/round/round.json") == written
    assert resolve(str(config), iteration=0) == rnd  # a retried resolve: the same round


def test_the_elo_task_rates_its_own_flywheel_from_the_asset_events(config: Path) -> None:
    from arena_ops.flywheel import elo_update_from_events

    rnd = resolve(str(config), iteration=0)
    store = rnd.store()
    eval_battles(store, "tgt@base", 5)
    out = elo_update_from_events(str(config), [{**rnd.ref(), "flywheel": "fw"}])
    assert out["flywheel"] == "fw" and out["rounds"] == [0] and out["models"] == 2
    assert store.exists("fw/leaderboard/leaderboard.json")
    with pytest.raises(ConfigError, match=r"Elo DAG of flywheel 'fw' .* battles of \['other'\]"):
        elo_update_from_events(str(config), [{"flywheel": "other", "iteration": 0, "storage": rnd.ref()["storage"]}])


def test_promotion_needs_confidence_and_says_why(config: Path) -> None:
    """A challenger replaces the incumbent only when P(better) over the bootstrap reaches training.promotion.confidence;
    the record keeps every probability and the reason, and the next round starts from its choice."""
    from arena_ops import promotion
    from arena_ops.flywheel import report

    rnd = resolve(str(config), iteration=0)
    store = rnd.store()
    for stage in ("sft", "dpo"):
        register(store, 0, stage)
    cfg = load_config(config)
    eval_battles(store, "tgt@base", 10, n=40)  # the incumbent: 10 of 40 against c1
    eval_battles(store, "tgt@i0-sft", 11, n=40)  # within the intervals: not promoted
    eval_battles(store, "tgt@i0-dpo", 30, n=40)  # clearly better: promoted
    rec = promotion.decide(cfg, store, 0, rnd.start, rnd.policies(store))
    sft, dpo = rec["challengers"]
    assert 0.5 < sft["p_better"] < 0.95 and dpo["p_better"] >= 0.95
    assert (
        rec["decision"] == "promote" and rec["chosen"]["label"] == "tgt@i0-dpo" and "P = 1.00 ≥ 0.95" in rec["reason"]
    )
    assert dpo["ci_low"] > rec["incumbent"]["ci_high"]  # intervals apart

    # Only the close challenger: kept, with the reason and the probability.
    store.delete_prefix(layout.model("fw", 0, "dpo"))
    kept = promotion.decide(cfg, store, 0, rnd.start, rnd.policies(store))
    assert kept["decision"] == "keep" and kept["chosen"]["label"] == "tgt@base"
    assert f"is better with P = {kept['challengers'][0]['p_better']:.2f}" in kept["reason"]
    # The report writes the record; the next round starts from its choice (the incumbent here), not the point leader.
    report(rnd.ref(), {})
    assert promotion.read(store, "fw", 0)["decision"] == "keep"
    body = store.read_json(f"{layout.round_report('fw', 0)}/report.json")
    assert body["promotion"]["reason"] == kept["reason"]
    assert (
        "Next iteration starts from `tgt@base` (keep)"
        in store.get_bytes(f"{layout.round_report('fw', 0)}/report.md").decode()
    )
    assert start_model(cfg, store, 1).label == "tgt@base"
    lenient = load_config(config, {"training.promotion.confidence": 0.5})
    assert start_model(lenient, store, 1).label == "tgt@base"  # the stored decision of round 0 stands
    assert promotion.decide(lenient, store, 0, rnd.start, rnd.policies(store))["chosen"]["label"] == "tgt@i0-sft"


def test_an_ambiguous_promotion_waits_for_approval_and_the_answer_stands(config: Path) -> None:
    """training.promotion.approval: a challenger within the intervals leaves the decision pending; the next round
    refuses to start until a person answers; the answer (who, when) is the decision, and a rerun report keeps it."""
    from arena_ops import promotion
    from arena_ops.flywheel import approval_request, approve, report

    rnd = resolve(str(config), iteration=0, overrides={"training.promotion.approval": True})
    store = rnd.store()
    register(store, 0, "sft")
    eval_battles(store, "tgt@base", 10, n=40)
    eval_battles(store, "tgt@i0-sft", 12, n=40)  # within the intervals: ambiguous
    report(rnd.ref(), {})
    rec = promotion.read(store, "fw", 0)
    assert rec["decision"] == "keep" and rec["approval"]["status"] == "pending"
    assert rec["approval"]["candidate"]["label"] == "tgt@i0-sft" and rec["approval"]["mode"] == "ambiguous"
    evidence = approval_request(rnd.ref())
    assert "tgt@i0-sft" in evidence and "P(better than `tgt@base`)" in evidence and "Proposed: **keep**" in evidence
    with pytest.raises(promotion.PromotionPendingError, match="waits for approval .*`arena round approve 0 --promote`"):
        resolve(str(config), iteration=1)
    assert "waits for approval" in store.get_bytes(f"{layout.round_report('fw', 0)}/report.md").decode()

    with pytest.raises(promotion.PromotionPendingError, match="expected one of"):
        approve(rnd.ref(), "maybe", by="ana")
    out = approve(rnd.ref(), promotion.PROMOTE, by="ana", at="2026-12-07T10:00:00+00:00")
    assert out == {"decision": "promote", "chosen": "tgt@i0-sft", "by": "ana", "option": promotion.PROMOTE}
    rec = promotion.read(store, "fw", 0)
    assert rec["approval"] | {"candidate": None} == rec["approval"] | {
        "status": "answered", "by": "ana", "at": "2026-12-07T10:00:00+00:00", "candidate": None
    }  # fmt: skip
    assert rec["reason"].startswith("ana chose to promote the challenger (overriding the proposal)")
    assert approval_request(rnd.ref()) is None
    report(rnd.ref(), {})  # a rerun of the report does not take the answer back
    assert promotion.read(store, "fw", 0)["decision"] == "promote"
    body = store.read_json(f"{layout.round_report('fw', 0)}/report.json")
    assert body["promotion"]["approval"]["by"] == "ana"
    assert resolve(str(config), iteration=1).start.label == "tgt@i0-sft"

    # A clear decision needs nobody; `always` asks for every decision with a challenger.
    eval_battles(store, "tgt@i0-sft", 35, n=40)
    cfg = load_config(config, {"training.promotion.approval": True})
    assert "approval" not in promotion.decide(cfg, store, 0, rnd.start, rnd.policies(store))
    always = load_config(config, {"training.promotion.approval": "always"})
    assert promotion.decide(always, store, 0, rnd.start, rnd.policies(store))["approval"]["proposed"] == "promote"
