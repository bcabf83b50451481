"""Promotion by confidence: which model the next iteration starts from, decided from the test set's bootstrap.

At the end of round *i* its start model (the **incumbent**) and the policies the round produced (the
**challengers**) have all been rated on the test set (``training.promotion.testset``, Mix by default). The battles of
every evaluation on it are fitted with the flywheel's Bradley–Terry bootstrap (``rating.bootstrap_rounds`` seeded
redraws, ``rating.prior_games``) — recomputed from the battle tables rather than read from the Elo DAG's stored
``bootstrap.parquet``, which that DAG may not have rewritten yet. A challenger replaces the incumbent only when
P(challenger > incumbent) — the share of bootstrap rounds in which it is rated higher — reaches
``training.promotion.confidence`` (0.95); of several that do, the one with the highest median rating. Otherwise the
incumbent is kept, and the record says why, with every probability.

The decision is a record, ``{flywheel}/iter={i}/report/promotion`` (``promotion.json``): incumbent, challengers with
their ratings, intervals and probabilities, the decision, the chosen model and the reason. Round *i + 1* starts from
its ``chosen`` model; the round report, ``arena round show`` and the Arena view show it.

With ``training.promotion.approval`` an ambiguous decision (``true``: the best challenger's P(better) strictly between
1 − confidence and confidence; ``always``: any decision with a challenger) is *pending*: the record carries
``approval: {status: pending, proposed, candidate}`` and round *i + 1* refuses to start until a person answers — in the
round DAG's ``promotion_review`` task (Airflow's human-in-the-loop operator) or with ``arena round approve``
(:func:`approve`), which records who chose what, and when.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from arena_ops import catalogue, layout
from arena_ops.config import ArenaConfig
from arena_ops.errors import ArenaError
from arena_ops.store import ArtifactStore

PROMOTE, KEEP = "Promote the challenger", "Keep the incumbent"  # the options of the approval form, in this order
OPTIONS = [PROMOTE, KEEP]


class PromotionPendingError(ArenaError):
    """The next iteration cannot start: the previous round's promotion waits for a person's approval."""


def record_key(flywheel: str, iteration: int) -> str:
    return ArtifactStore.artifact_key(flywheel, iteration, layout.REPORT, "promotion")


def decide(
    cfg: ArenaConfig, store: ArtifactStore, iteration: int, incumbent: Any, challengers: list[Any]
) -> dict[str, Any]:
    """The promotion record of round ``iteration`` (models are :class:`arena_ops.round.ModelRef`), pending a
    person's approval where ``training.promotion.approval`` asks for one."""
    return _with_approval(cfg, _decide(cfg, store, iteration, incumbent, challengers))


def _with_approval(cfg: ArenaConfig, rec: dict[str, Any]) -> dict[str, Any]:
    p = cfg.training.promotion
    if not p.approval or not rec["challengers"]:
        return rec
    rated = [c for c in rec["challengers"] if c.get("p_better") is not None]
    best = max(rated, key=lambda c: (c["p_better"], c["rating"] or 0.0)) if rated else None
    if p.approval != "always" and not (best is not None and 1 - p.confidence < best["p_better"] < p.confidence):
        return rec
    candidate = rec["chosen"] if rec["decision"] == "promote" else best or rec["challengers"][-1]
    approval = {
        "status": "pending",
        "proposed": rec["decision"],
        "candidate": {"label": candidate["label"], "uri": candidate["uri"]},
        "p_better": candidate.get("p_better"),
        "mode": "always" if p.approval == "always" else "ambiguous",
    }
    return {**rec, "approval": approval}


def pending(rec: dict[str, Any] | None) -> bool:
    return bool(rec and (rec.get("approval") or {}).get("status") == "pending")


def answered(rec: dict[str, Any] | None) -> bool:
    return bool(rec and (rec.get("approval") or {}).get("status") == "answered")


def approve(
    store: ArtifactStore, flywheel: str, iteration: int, option: str, by: str | None, at: str | None = None
) -> dict[str, Any]:
    """Record a person's answer to round ``iteration``'s pending promotion (``option``: :data:`PROMOTE` or
    :data:`KEEP`): the decision and chosen model become theirs, with who and when. Answering again the same way
    changes nothing; another answer replaces the first only while the next round has not started from it."""
    from datetime import UTC, datetime

    rec = read(store, flywheel, iteration)
    if rec is None or "approval" not in rec:
        raise PromotionPendingError(
            f"iteration {iteration} of {flywheel} has no promotion waiting for approval "
            f"({'no promotion record: its round has not reported' if rec is None else 'its decision needed none'})"
        )
    if option not in OPTIONS:
        raise PromotionPendingError(f"approval option {option!r}: expected one of {OPTIONS}")
    a = rec["approval"]
    if a["status"] == "answered" and a["option"] == option:
        return rec
    promote = option == PROMOTE
    model = a["candidate"] if promote else rec["incumbent"]
    automatic = rec.get("automatic_reason", rec["reason"])
    who = by or "someone"
    agrees = "as proposed" if (promote == (a["proposed"] == "promote")) else "overriding the proposal"
    rec = {
        **rec,
        "decision": "promote" if promote else "keep",
        "chosen": {"label": model["label"], "uri": model["uri"]},
        "reason": f"{who} chose to {option[0].lower()}{option[1:]} ({agrees}); the evidence: {automatic}",
        "automatic_reason": automatic,
        "approval": {
            **a,
            "status": "answered",
            "option": option,
            "by": by,
            "at": at or datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    write(store, rec)
    return rec


def evidence(rec: dict[str, Any]) -> str:
    """The approval form's body (Markdown): the proposal, the probabilities and the reason."""
    a, inc = rec["approval"], rec["incumbent"]
    lines = [
        f"Iteration {rec['iteration']} of `{rec['flywheel']}`: which model should iteration {rec['for_iteration']} "
        "start from?",
        "",
        f"Proposed: **{a['proposed']}** — {rec['reason']}",
        "",
        f"| model | rating on {rec['testset']} | interval | P(better than `{inc['label']}`) |",
        "| --- | ---: | --- | ---: |",
        f"| `{inc['label']}` (incumbent) | {_num(inc.get('rating'))} | {_ci(inc)} | |",
    ]
    lines += [
        f"| `{c['label']}` | {_num(c.get('rating'))} | {_ci(c)} | {_num(c.get('p_better'))} |"
        for c in rec["challengers"]
    ]
    lines += [
        "",
        f"*{PROMOTE}* starts the next iteration from `{a['candidate']['label']}`; *{KEEP}* from `{inc['label']}`.",
    ]
    return "\n".join(lines)


def _num(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}"


def _ci(e: dict[str, Any]) -> str:
    return "—" if e.get("ci_low") is None else f"[{e['ci_low']:.1f}, {e['ci_high']:.1f}]"


def _decide(
    cfg: ArenaConfig, store: ArtifactStore, iteration: int, incumbent: Any, challengers: list[Any]
) -> dict[str, Any]:
    p = cfg.training.promotion
    base: dict[str, Any] = {
        "flywheel": cfg.flywheel,
        "iteration": iteration,
        "for_iteration": iteration + 1,
        "testset": p.testset,
        "confidence": p.confidence,
        "incumbent": {"label": incumbent.label, "uri": incumbent.uri},
        "challengers": [{"label": c.label, "uri": c.uri} for c in challengers],
    }
    if not challengers:
        return _keep(base, incumbent, "the round produced no policy: the incumbent stays")
    if cfg.training.next_from == "last":
        last = challengers[-1]
        return _chosen(
            base, "promote", last, "training.next_from is last: the round's last policy, whatever its rating"
        )
    tables = catalogue.evaluations(store, cfg.flywheel, p.testset)
    wanted = [incumbent.label, *(c.label for c in challengers)]
    missing = [w for w in wanted if w not in tables]
    if missing:
        last = challengers[-1]
        why = f"no {p.testset} evaluation of {missing}: the round's last policy (nothing to compare on)"
        return _chosen(base, "promote", last, why)
    from arena_ops.rating import bt
    from arena_ops.rating.battles import validate_battles

    battles = validate_battles(pa.concat_tables(list(tables.values()), promote_options="permissive")).table
    pc = bt.aggregate(battles)
    r = cfg.rating
    samples = bt.bootstrap_bt(pc, rounds=r.bootstrap_rounds, seed=r.seed, prior_games=r.prior_games)
    col = {m: k for k, m in enumerate(pc.models)}
    inc = samples[:, col[incumbent.label]]
    level = r.ci_level
    base["incumbent"].update(_summary(inc, level))
    rows = []
    for c, entry in zip(challengers, base["challengers"], strict=True):
        s = samples[:, col[c.label]]
        both = ~(np.isnan(s) | np.isnan(inc))
        prob = float(np.mean(s[both] > inc[both])) if both.any() else float("nan")
        entry.update({**_summary(s, level), "p_better": round(prob, 4)})
        rows.append((c, entry, prob))
    passing = [(c, e) for c, e, prob in rows if prob >= p.confidence]
    best_c, best_e, best_p = max(rows, key=lambda t: (t[2], t[1]["rating"]))
    if not passing:
        why = (
            f"no challenger beats the incumbent {incumbent.label} with P ≥ {p.confidence:g}: the best, {best_c.label}, "
            f"is better with P = {best_p:.2f} (rating {best_e['rating']:.1f} [{best_e['ci_low']:.1f}, "
            f"{best_e['ci_high']:.1f}] against {base['incumbent']['rating']:.1f} [{base['incumbent']['ci_low']:.1f}, "
            f"{base['incumbent']['ci_high']:.1f}])"
        )
        return _keep(base, incumbent, why)
    chosen, entry = max(passing, key=lambda t: t[1]["rating"])
    why = (
        f"{chosen.label} beats the incumbent {incumbent.label} with P = {entry['p_better']:.2f} ≥ {p.confidence:g} "
        f"(rating {entry['rating']:.1f} against {base['incumbent']['rating']:.1f})"
    )
    return _chosen(base, "promote", chosen, why)


def _summary(samples: np.ndarray, level: float) -> dict[str, float | None]:
    """Median and interval of one model's bootstrap ratings, as the boards give them."""
    s = samples[~np.isnan(samples)]
    if not len(s):
        return {"rating": None, "ci_low": None, "ci_high": None}
    tail = (1 - level) * 50
    lo, med, hi = np.percentile(s, [tail, 50, 100 - tail])
    return {"rating": round(float(med), 2), "ci_low": round(float(lo), 2), "ci_high": round(float(hi), 2)}


def _keep(base: dict[str, Any], incumbent: Any, reason: str) -> dict[str, Any]:
    return _chosen(base, "keep", incumbent, reason)


def _chosen(base: dict[str, Any], decision: str, model: Any, reason: str) -> dict[str, Any]:
    return {**base, "decision": decision, "chosen": {"label": model.label, "uri": model.uri}, "reason": reason}


def write(store: ArtifactStore, record: dict[str, Any]) -> str:
    key = record_key_of(record)
    with store.artifact_at(key, meta={"iteration": record["iteration"], "decision": record["decision"]}) as w:
        w.write_json("promotion.json", record)
    return w.uri


def record_key_of(record: dict[str, Any]) -> str:
    return record_key(record["flywheel"], record["iteration"])


def read(store: ArtifactStore, flywheel: str, iteration: int) -> dict[str, Any] | None:
    key = record_key(flywheel, iteration)
    return store.read_artifact_json(key, "promotion.json") if store.is_committed(key) else None
