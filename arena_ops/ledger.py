"""The cost ledger: what each task of a round spent — tokens per model, seconds, money — and the budget check.

A round's ledger is a set of *entries* at ``{flywheel}/iter={i}/ledger/{entry}``, one per task that did work (a
battle run, an evaluation, the judge's canary, a training job), each a list of rows:

- one row per model and role (``answers`` or ``judge``): requests, prompt and completion tokens — the
  OpenAI-compatible ``usage`` the servers reported, stored with every response and judgment;
- one ``task`` row: wall and CPU seconds of the task, GPU seconds where NVML answers (training jobs).

A rerun of a task rewrites its entry (nothing is counted twice), and a task that found its work done writes none.
A response or judgment is counted once, in the entry of the battle table that committed it (its part's ``owner``):
evaluations of several policies share the competitors' answers, which were paid for by the first.

Money is not stored: it is the stored quantities times ``cost.prices`` (per model per 1M tokens), ``cost.gpu_hour``
and ``cost.cpu_hour`` of the round's config, so a corrected price table re-prices a round without re-running it.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from arena_ops import layout
from arena_ops.errors import ArenaError

if TYPE_CHECKING:
    from arena_ops.config import ArenaConfig, CostConfig
    from arena_ops.store import ArtifactStore

TOKEN_FIELDS = ("requests", "prompt_tokens", "completion_tokens")
TIME_FIELDS = ("wall_s", "cpu_s", "gpu_s")
# The judge's template around the question and both answers, in tokens (the shipped templates are ~250–400).
JUDGE_TEMPLATE_TOKENS = 400
CHARS_PER_TOKEN = 4  # for estimates only; what is spent is counted from the servers' usage


class BudgetExceededError(ArenaError):
    """A battle run or training job would take the round past ``cost.budget``; nothing was sent or launched."""


# Measuring ------------------------------------------------------------------------------------------------------------


@dataclass
class Meter:
    """Wall and CPU seconds (this process and its waited-for children) of a block; GPU seconds where NVML counts
    GPUs on this machine and the block used them (``gpus``)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    gpu_s: float | None = None

    def row(self) -> dict[str, Any]:
        return {"role": "task", "model": None, **{k: _round(getattr(self, k)) for k in TIME_FIELDS}}


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextmanager
def metered(gpus: int | None = None) -> Iterator[Meter]:
    m = Meter()
    t0, c0 = time.perf_counter(), cpu_seconds()
    try:
        yield m
    finally:
        m.wall_s, m.cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
        if gpus:
            m.gpu_s = m.wall_s * gpus


def nvml_gpus() -> int | None:
    """GPUs NVML sees on this machine; None where there is no NVML (no driver, no pynvml: CPU machines)."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVMLError: no driver or no device
        return None


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 3)


# Usage of a battle run ------------------------------------------------------------------------------------------------


def usage_rows(responses: pa.Table, judgments: pa.Table) -> list[dict[str, Any]]:
    """Rows per answering model and per judge: requests with a reported usage, and its tokens. Recorded answers and
    a verifier's verdicts report none and cost nothing."""
    rows = []
    for role, table, by, requests in (
        ("answers", responses, "model", ("prompt_tokens", "count")),  # one request per turn
        ("judge", judgments, "judge", ("calls", "sum")),  # parse retries are calls of their own
    ):
        table = table.filter(pc.is_valid(table["prompt_tokens"]))
        aggs = [("prompt_tokens", "sum"), ("completion_tokens", "sum"), ("prompt_tokens", "count"), requests]
        for r in table.group_by(by).aggregate(aggs).to_pylist():
            n = int(r["_".join(requests)] or 0)  # a duplicate aggregation (answers' count) has one name
            if n:
                rows.append(
                    {
                        "role": role,
                        "model": r[by],
                        "requests": n,
                        "prompt_tokens": int(r["prompt_tokens_sum"] or 0),
                        "completion_tokens": int(r["completion_tokens_sum"] or 0),
                        **({"games": int(r["prompt_tokens_count"])} if role == "judge" else {}),
                    }
                )
    return sorted(rows, key=lambda r: (r["role"], r["model"]))


# Entries --------------------------------------------------------------------------------------------------------------


def write(
    store: ArtifactStore,
    flywheel: str,
    iteration: int,
    entry: str,
    kind: str,
    rows: list[dict[str, Any]],
    **meta: Any,
) -> dict[str, Any]:
    """Write (or rewrite: a rerun replaces it) one entry of the round's ledger. ``meta``'s ``fingerprint`` (what the
    entry counted) is also kept in the entry's manifest (:func:`fingerprint`)."""
    body = {"entry": entry, "kind": kind, "iteration": iteration, **meta, "rows": rows}
    manifest = {"kind": kind, "fingerprint": meta.get("fingerprint")}
    with store.artifact_at(layout.ledger(flywheel, iteration, entry), meta=manifest) as w:
        w.write_json("ledger.json", body)
    return body


def has(store: ArtifactStore, flywheel: str, iteration: int, entry: str) -> bool:
    return store.is_committed(layout.ledger(flywheel, iteration, entry))


def fingerprint(store: ArtifactStore, flywheel: str, iteration: int, entry: str) -> str | None:
    """The fingerprint an entry was written with; None when there is no entry."""
    key = layout.ledger(flywheel, iteration, entry)
    return store.manifest(key).meta.get("fingerprint") if store.is_committed(key) else None


def entries(store: ArtifactStore, flywheel: str, iteration: int) -> list[dict[str, Any]]:
    """The round's entries, in the order their names sort (``battle-…``, ``canary``, ``eval-…``, ``train-…``)."""
    base = layout.ledger_base(flywheel, iteration)
    return [store.read_artifact_json(f"{base}/{name}", "ledger.json") for name in sorted(store.list_artifacts_at(base))]


# Money ----------------------------------------------------------------------------------------------------------------


def price(row: dict[str, Any], cost: CostConfig) -> float:
    """The money of one row: tokens at the model's prices; a task's GPU seconds at ``gpu_hour``, or where it used
    no GPU its CPU seconds at ``cpu_hour``."""
    if row.get("role") == "task":
        if row.get("gpu_s"):
            return row["gpu_s"] / 3600 * cost.gpu_hour
        return (row.get("cpu_s") or 0.0) / 3600 * cost.cpu_hour
    p = cost.prices.get(row.get("model") or "")
    if p is None:
        return 0.0
    return (row.get("prompt_tokens") or 0) / 1e6 * p.input_per_1m + (row.get("completion_tokens") or 0) / 1e6 * (
        p.output_per_1m
    )


def summary(cfg: ArenaConfig, store: ArtifactStore, iteration: int) -> dict[str, Any] | None:
    """The round's ledger as the report shows it: rows with their money, totals per model, the round's total,
    money per 1k judgments and battles per hour of battling. None when the round has no entries."""
    found = entries(store, cfg.flywheel, iteration)
    if not found:
        return None
    cost = cfg.cost
    rows, per_model = [], {}
    judgments = battles = 0
    battle_wall = 0.0
    for e in found:
        for r in e["rows"]:
            rows.append({"entry": e["entry"], "kind": e["kind"], **r, "cost": round(price(r, cost), 6)})
            if r["role"] != "task":
                m = per_model.setdefault(
                    (r["model"], r["role"]), {"model": r["model"], "role": r["role"], **dict.fromkeys(TOKEN_FIELDS, 0)}
                )
                for k in TOKEN_FIELDS:
                    m[k] += r.get(k) or 0
                m["cost"] = round(m.get("cost", 0.0) + price(r, cost), 6)
        judgments += e.get("judgments") or 0
        if e["kind"] in ("battle", "eval"):
            battles += e.get("battles") or 0
            battle_wall += next((r["wall_s"] or 0.0 for r in e["rows"] if r["role"] == "task"), 0.0)
    total = sum(r["cost"] for r in rows)
    totals = {k: sum(r.get(k) or 0 for r in rows) for k in (*TOKEN_FIELDS, *TIME_FIELDS)}
    return {
        "currency": cost.currency,
        "budget": cost.budget,
        "rows": rows,
        "per_model": sorted(per_model.values(), key=lambda m: (m["role"], m["model"])),
        "totals": {**{k: _round(v) for k, v in totals.items()}, "judgments": judgments, "battles": battles},
        "cost": round(total, 6),
        "cost_per_1k_judgments": round(1000 * total / judgments, 6) if judgments else None,
        "battles_per_hour": round(3600 * battles / battle_wall, 1) if battle_wall else None,
    }


def spent(cfg: ArenaConfig, store: ArtifactStore, iteration: int, skip: str | None = None) -> float:
    """The round's money so far (without entry ``skip``: a rerun replaces its own entry)."""
    return sum(
        price(r, cfg.cost) for e in entries(store, cfg.flywheel, iteration) if e["entry"] != skip for r in e["rows"]
    )


# Estimates and the budget ---------------------------------------------------------------------------------------------


def estimate_battle(run: Any) -> dict[str, Any]:
    """An upper bound on what a battle run still has to spend: every answer not yet stored at its model's
    ``max_tokens`` per turn (prompt and history at 4 characters a token), every game not yet judged at the judge's
    ``max_tokens`` (with both answers at their bound and the template). Recorded models and a verifier cost
    nothing."""
    from arena_ops.battle.parts import content_key

    cfg = run.cfg
    done = run.responses.done_keys()
    rows: dict[tuple[str, str], dict[str, int]] = {}

    def add(role: str, model: str, p: int, c: int) -> None:
        r = rows.setdefault((role, model), {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        r["requests"] += 1
        r["prompt_tokens"] += p
        r["completion_tokens"] += c

    keys, bound = run.response_keys(), {}
    for s in run.specs:
        for prompt in run.plan.prompts:
            pid = prompt["prompt_id"]
            bound[pid, s.name] = s.sampling.max_tokens * len(prompt["turns"])
            if s.source.kind == "recorded" or keys[pid, s.name] in done:
                continue
            history = len(prompt.get("system") or "") // CHARS_PER_TOKEN
            for user in prompt["turns"]:
                history += len(user) // CHARS_PER_TOKEN
                add("answers", s.name, history, s.sampling.max_tokens)
                history += s.sampling.max_tokens
    if cfg.judge.kind != "verifier":
        judge = run._judge_identity()
        judged = run.judgments.done_keys()
        out = cfg.models.judge.sampling.max_tokens
        for prompt in run.plan.prompts:
            pid = prompt["prompt_id"]
            text = sum(len(t) for t in prompt["turns"]) // CHARS_PER_TOKEN
            for a, b in run.plan.pairs[pid]:
                bid = run.battle_id(pid, a, b, keys, judge)
                for game in (1, 2):
                    if content_key("judgment", bid, game) not in judged:
                        add(
                            "judge",
                            cfg.models.judge.name,
                            JUDGE_TEMPLATE_TOKENS + text + bound[pid, a] + bound[pid, b],
                            out,
                        )
    out_rows = [{"role": role, "model": m, **r} for (role, m), r in sorted(rows.items())]
    return {"rows": out_rows, "cost": sum(price(r, cfg.cost) for r in out_rows)}


def check_budget(cfg: ArenaConfig, store: ArtifactStore, iteration: int, what: str, estimate: float, skip: str) -> None:
    """Raise :class:`BudgetExceededError` when the round's money so far plus ``estimate`` exceeds ``cost.budget``."""
    budget = cfg.cost.budget
    if budget is None:
        return
    so_far = spent(cfg, store, iteration, skip=skip)
    if so_far + estimate > budget:
        c = cfg.cost.currency
        raise BudgetExceededError(
            f"iteration {iteration} of {cfg.flywheel}: {what} would take the round to {so_far + estimate:.4f} {c} "
            f"(spent {so_far:.4f} {c} so far + an estimated {estimate:.4f} {c}), over cost.budget {budget:.4f} {c}. "
            "Nothing was sent or launched; raise cost.budget (or lower the work: battle.sample_limit, fewer "
            "competitors) and rerun."
        )


def estimate_training(cfg: ArenaConfig, store: ArtifactStore, iteration: int, stage: str, rows: int) -> float | None:
    """The newest earlier job of the same stage's money, scaled by training rows; None when there is none."""
    for it in range(iteration - 1, -1, -1):
        key = layout.ledger(cfg.flywheel, it, f"train-{stage}")
        if not store.is_committed(key):
            continue
        e = store.read_artifact_json(key, "ledger.json")
        if e.get("examples"):
            return sum(price(r, cfg.cost) for r in e["rows"]) * rows / e["examples"]
    return None
