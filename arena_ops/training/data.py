"""Training data from judged battles, as the paper selects it ("pair-judge"), with lineage to the battles.

Margins are in judge-score points per game: a battle's summed scores over its two games, divided by two, so
K = 3.0 means "the winner scored three points higher on the 1–10 scale" as in the paper.

- SFT: prompts where the target lost by ≥ K_sft; the target text is the best-scoring winner's conversation.
- DPO: per prompt, the decisive battle with the widest margin ≥ K_dpo: its winner's answer chosen, its loser's
  rejected (both answers judged in the same battle; the target may be either side).
- RM: every decisive battle with a margin ≥ K_dpo, winner's response chosen, loser's rejected.
- RL: the prompts (a reward model or the judge scores the policy's own samples).

Rows use TRL's conversational formats (``prompt``/``completion`` for SFT, so the loss falls on the answer only;
``prompt``/``chosen``/``rejected`` for DPO and RM), so the Parquet files load with ``datasets.load_dataset("parquet",
…)`` straight into the trainers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

_MSG = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SFT_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", _MSG),
        ("completion", _MSG),
        ("source_model", pa.string()),
        ("margin", pa.float64()),
        ("battle_ids", pa.list_(pa.string())),
        ("iteration", pa.int64()),
        ("run", pa.string()),
    ]
)
PAIR_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", _MSG),
        ("chosen", _MSG),
        ("rejected", _MSG),
        ("chosen_model", pa.string()),
        ("rejected_model", pa.string()),
        ("margin", pa.float64()),
        ("battle_ids", pa.list_(pa.string())),
        ("iteration", pa.int64()),
        ("run", pa.string()),
    ]
)
RL_SCHEMA = pa.schema([("prompt_id", pa.string()), ("prompt", _MSG), ("iteration", pa.int64()), ("run", pa.string())])


@dataclass
class BattleContext:
    """Valid battles plus what the builders need: each prompt's turns and each (prompt, model)'s answers."""

    battles: list[dict[str, Any]]
    prompts: dict[str, dict[str, Any]]  # prompt_id → {turns, system}
    answers: dict[tuple[str, str], list[str]]  # (prompt_id, model) → answers by turn
    iteration: int
    run: str = ""  # the battle run the rows come from (lineage: which slice)


def _conversation(prompt: dict[str, Any], answers: list[str] | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": prompt["system"]}] if prompt.get("system") else []
    for t, user in enumerate(prompt["turns"]):
        msgs.append({"role": "user", "content": user})
        if answers is not None and t < len(prompt["turns"]) - 1:
            msgs.append({"role": "assistant", "content": answers[t]})
    return msgs


def _per_game(b: dict[str, Any]) -> tuple[float, float]:
    """(model_a's mean score per game, model_b's)."""
    return b["score_a"] / 2.0, b["score_b"] / 2.0


def build_sft(ctx: BattleContext, target: str, k: float) -> pa.Table:
    best: dict[str, tuple[float, str, list[str]]] = {}
    for b in ctx.battles:
        if target not in (b["model_a"], b["model_b"]):
            continue
        sa, sb = _per_game(b)
        other, margin = (b["model_b"], sb - sa) if b["model_a"] == target else (b["model_a"], sa - sb)
        lost = b["winner"] == ("model_b" if b["model_a"] == target else "model_a")
        if lost and margin >= k:
            pid = b["prompt_id"]
            if pid not in best or margin > best[pid][0]:
                best[pid] = (margin, other, [b["battle_id"]])
            elif other == best[pid][1]:
                best[pid][2].append(b["battle_id"])
    rows = []
    for pid, (margin, model, bids) in sorted(best.items()):
        prompt, answers = ctx.prompts[pid], ctx.answers[pid, model]
        rows.append(
            {
                "prompt_id": pid,
                "prompt": _conversation(prompt, answers),
                "completion": [{"role": "assistant", "content": answers[-1]}],
                "source_model": model,
                "margin": margin,
                "battle_ids": bids,
                "iteration": ctx.iteration,
                "run": ctx.run,
            }
        )
    return pa.Table.from_pylist(rows, schema=SFT_SCHEMA)


def build_pairs(ctx: BattleContext, k: float, one_per_prompt: bool) -> pa.Table:
    """Chosen/rejected pairs from judged head-to-head battles: the winner's and the loser's answers of one battle
    whose margin is ≥ K. Never from scores given in different judge calls to models that may not have met. The
    target may be either side. ``one_per_prompt`` keeps each prompt's widest-margin battle (DPO); else every
    decisive battle is a pair (reward model)."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in sorted(ctx.battles, key=lambda b: b["battle_id"]):
        if b["winner"] not in ("model_a", "model_b"):
            continue
        sa, sb = _per_game(b)
        win, lose = (b["model_a"], b["model_b"]) if b["winner"] == "model_a" else (b["model_b"], b["model_a"])
        margin = abs(sa - sb)
        if margin >= k:
            rows[b["prompt_id"]].append(_pair(ctx, b["prompt_id"], win, lose, margin, [b["battle_id"]]))
    out = []
    for pid in sorted(rows):
        pairs = sorted(rows[pid], key=lambda r: -r["margin"])  # stable: ties keep battle-id order
        out.extend(pairs[:1] if one_per_prompt else pairs)
    return pa.Table.from_pylist(out, schema=PAIR_SCHEMA)


def build_rl(ctx: BattleContext) -> pa.Table:
    rows = [
        {"prompt_id": pid, "prompt": _conversation(p), "iteration": ctx.iteration, "run": ctx.run}
        for pid, p in sorted(ctx.prompts.items())
        if len(p["turns"]) == 1  # the policy samples one answer; multi-turn RL would need simulated users
    ]
    return pa.Table.from_pylist(rows, schema=RL_SCHEMA)


def _pair(ctx: BattleContext, pid: str, hi: str, lo: str, margin: float, bids: list[str]) -> dict[str, Any]:
    prompt = ctx.prompts[pid]
    # The last turn is compared; earlier turns come from the chosen model's own history.
    history = _conversation(prompt, ctx.answers[pid, hi])
    return {
        "prompt_id": pid,
        "prompt": history,
        "chosen": [{"role": "assistant", "content": ctx.answers[pid, hi][-1]}],
        "rejected": [{"role": "assistant", "content": ctx.answers[pid, lo][-1]}],
        "chosen_model": hi,
        "rejected_model": lo,
        "margin": margin,
        "battle_ids": bids,
        "iteration": ctx.iteration,
        "run": ctx.run,
    }


def report(tables: dict[str, pa.Table]) -> dict[str, Any]:
    """Counts and margins per dataset and per source model; for pair datasets, how often each model's answer was
    chosen and rejected (the paper's Table 7)."""
    out: dict[str, Any] = {}
    for name, t in tables.items():
        entry: dict[str, Any] = {"rows": t.num_rows}
        col = "source_model" if "source_model" in t.column_names else "chosen_model"
        if col in t.column_names and t.num_rows:
            per: dict[str, dict[str, float]] = {}
            for m, margin in zip(t[col].to_pylist(), t["margin"].to_pylist(), strict=True):
                d = per.setdefault(m, {"rows": 0, "margin_sum": 0.0})
                d["rows"] += 1
                d["margin_sum"] += margin
            entry["per_model"] = {
                m: {"rows": int(d["rows"]), "mean_margin": round(d["margin_sum"] / d["rows"], 3)}
                for m, d in per.items()
            }
        if "rejected_model" in t.column_names and t.num_rows:
            sides: dict[str, dict[str, int]] = defaultdict(lambda: {"chosen": 0, "rejected": 0})
            for m in t["chosen_model"].to_pylist():
                sides[m]["chosen"] += 1
            for m in t["rejected_model"].to_pylist():
                sides[m]["rejected"] += 1
            entry["chosen_rejected"] = dict(sorted(sides.items()))
        out[name] = entry
    return json.loads(json.dumps(out))
