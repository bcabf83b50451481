"""A battle run: generate → judge (two games per pair, positions swapped) → battle table, resumable throughout.

Store layout for run ``R`` (a round's step, or a test set such as ``eval-mix``) under ``base`` (``{flywheel}/iter={i}``
by default, ``{flywheel}/eval/{testset}`` for evaluations; see :mod:`arena_ops.layout`)::

    {base}/responses/R-<digest>   committed chunks of responses (one row per turn)
    {base}/judgments/R-<digest>   committed chunks of judgments (one row per game)
    {base}/battles/T              data.parquet (valid battles, read by the rating engine), invalid.parquet (with the
                                  raw judge text), summary.json, transcripts.parquet; T is the run, or ``table``
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from arena_ops import layout
from arena_ops.config import ArenaConfig
from arena_ops.errors import BattleError
from arena_ops.revisions import revision_of
from arena_ops.store import ArtifactStore

from .generate import RESPONSE_SCHEMA, Participant
from .judge import Verdict, combine_games
from .judging import JUDGMENT_SCHEMA, Game, Judge
from .pairing import pairs_for
from .parts import Parts, content_key, execute

log = logging.getLogger(__name__)

Progress = Callable[[str, int], Callable[[int], None]]  # (phase, total) -> advance(n)

BATTLE_RECORD_SCHEMA = pa.schema(
    [
        ("battle_id", pa.string()),
        ("prompt_id", pa.string()),
        ("iteration", pa.int64()),
        ("run", pa.string()),
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        ("revision_a", pa.string()),  # which content answered (arena_ops.revisions: sha256:…, recorded:sha256:…)
        ("revision_b", pa.string()),
        ("winner", pa.string()),
        ("score_a", pa.float64()),  # model_a's total over both games
        ("score_b", pa.float64()),
        ("g1_score_a", pa.float64()),  # game 1: model_a shown as A
        ("g1_score_b", pa.float64()),
        ("g2_score_a", pa.float64()),  # game 2: model_b shown as A (raw, position-indexed)
        ("g2_score_b", pa.float64()),
        ("explanation_g1", pa.string()),
        ("explanation_g2", pa.string()),
        ("judge", pa.string()),
        ("judge_hash", pa.string()),
        ("template", pa.string()),
        ("len_a", pa.float64()),  # characters of model_a's answers, all turns (style control)
        ("len_b", pa.float64()),
        ("response_key_a", pa.string()),
        ("response_key_b", pa.string()),
        ("judgment_keys", pa.list_(pa.string())),
        ("invalid_reason", pa.string()),
        ("raw_g1", pa.string()),
        ("raw_g2", pa.string()),
    ]
)


TRANSCRIPT_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("model", pa.string()),
        ("response_key", pa.string()),
        ("system", pa.string()),
        ("turns", pa.list_(pa.string())),  # the user's turns
        ("answers", pa.list_(pa.string())),  # the model's answer to each turn; null when the server rejected it
    ]
)


@dataclass
class BattlePlan:
    prompts: list[dict[str, Any]]
    pairs: dict[str, list[tuple[str, str]]]  # prompt_id → pairs
    models: list[str] = field(default_factory=list)

    @property
    def num_battles(self) -> int:
        return sum(len(p) for p in self.pairs.values())


def plan(cfg: ArenaConfig, prompts: pa.Table, pairing: str | None = None) -> BattlePlan:
    rows = prompts.to_pylist()
    if cfg.battle.sample_limit is not None:
        rows = rows[: cfg.battle.sample_limit]
    battlers = [m.name for m in cfg.models.battlers()]
    method = pairing or cfg.battle.pairing
    pairs = {
        r["prompt_id"]: pairs_for(
            method, cfg.models.target.name, battlers, r["prompt_id"], cfg.battle.pairs_per_prompt, cfg.battle.seed
        )
        for r in rows
    }
    used = sorted({m for ps in pairs.values() for pair in ps for m in pair}, key=battlers.index)
    return BattlePlan(rows, pairs, used)


class BattleRun:
    """Generation, judging and the battle table of one run, over the store."""

    def __init__(
        self,
        cfg: ArenaConfig,
        store: ArtifactStore,
        iteration: int,
        run: str,
        battle_plan: BattlePlan,
        base: str | None = None,
        table: str | None = None,
        meta: dict[str, Any] | None = None,
    ):
        """``base``: where parts and the table go (default ``{flywheel}/iter={iteration}``); ``table``: the battle
        table's name (default ``run``); ``meta``: extra fields for the table's manifest (e.g. the battled model)."""
        self.cfg, self.store, self.iteration, self.run, self.plan = cfg, store, iteration, run, battle_plan
        self.base = base or layout.iteration_base(cfg.flywheel, iteration)
        self.table_key = f"{self.base}/{layout.BATTLES}/{table or run}"
        self.meta = dict(meta or {})
        self.responses = Parts(store, self.base, layout.RESPONSES, run, RESPONSE_SCHEMA, owner=self.table_key)
        self.judgments = Parts(store, self.base, layout.JUDGMENTS, run, JUDGMENT_SCHEMA, owner=self.table_key)
        specs = {m.name: m for m in cfg.models.battlers()}
        self.specs = [specs[m] for m in battle_plan.models]
        self.revisions = {s.name: revision_of(s, cfg.storage) for s in self.specs}

    # Generation ------------------------------------------------------------------------------------------------

    async def generate(self, progress: Progress | None = None, only: str | None = None) -> dict[str, int]:
        """Answers of every model (or of model ``only``: Airflow maps generation over models)."""
        specs = [s for s in self.specs if only is None or s.name == only]
        if only is not None and not specs:
            raise BattleError(f"model {only!r} does not battle in run {self.run} (models: {self.plan.models})")
        participants = [Participant.open(s, self.cfg, self.revisions[s.name]) for s in specs]
        try:
            for p in participants:
                p.check_recorded(self.plan.prompts)
            done = self.responses.done_keys()
            units = [
                (p, prompt)
                for prompt in self.plan.prompts
                for p in participants
                if p.response_key(prompt["prompt_id"]) not in done
            ]
            await _ready((p for p, _ in units), self.cfg.serving.deploy_timeout_s)
            log.info("generate %s: %d answers to do, %d already stored", self.run, len(units), len(done))
            advance = progress("generate", len(units)) if progress else None
            outcome = await execute(
                units, lambda u: u[0].answer(u[1]), self.responses, self.cfg.battle.chunk_size, advance
            )
        finally:
            await asyncio.gather(*(p.aclose() for p in participants))
        _raise_on_failures("generation", [(f"{p.name}/{pr['prompt_id']}", e) for (p, pr), e in outcome.failures])
        return {"generated": outcome.done, "reused": len(done)}

    # Judging ---------------------------------------------------------------------------------------------------

    def open_judge(self) -> Judge:
        if self.cfg.judge.kind == "verifier":
            return Judge(self.cfg, None)
        return Judge(self.cfg, Participant.open(self.cfg.models.judge, self.cfg))

    def games(self, judge: Judge) -> list[Game]:
        """Both games of every planned battle; needs every response stored."""
        answers, keys, rejected = self._answers()
        games = []
        for prompt in self.plan.prompts:
            pid = prompt["prompt_id"]
            for a, b in self.plan.pairs[pid]:
                if (pid, a) in rejected or (pid, b) in rejected:
                    continue  # reported as an invalid battle by build()
                if (pid, a) not in answers or (pid, b) not in answers:
                    missing = a if (pid, a) not in answers else b
                    raise BattleError(f"run {self.run}: no stored response of {missing} to {pid}; generate first")
                bid = self.battle_id(pid, a, b, keys, judge)
                games.append(Game(bid, prompt, 1, a, b, answers[pid, a], answers[pid, b]))
                games.append(Game(bid, prompt, 2, b, a, answers[pid, b], answers[pid, a]))
        return games

    def battle_id(self, pid: str, a: str, b: str, keys: dict[tuple[str, str], str], judge: Judge) -> str:
        return content_key("battle", pid, a, keys[pid, a], b, keys[pid, b], judge.hash)

    async def judge(self, progress: Progress | None = None, chunk: tuple[int, int] | None = None) -> dict[str, int]:
        """Judge every game (or chunk ``(i, n)``: the i-th of n disjoint slices of the battles; Airflow maps judging
        over chunks). Both games of a battle are one unit: sent to the judge together, in the same wave of
        requests, and committed together."""
        judge = self.open_judge()
        try:
            games = self.games(judge)
            if chunk is not None:
                i, n = chunk
                games = [g for g in games if int(g.battle_id, 16) % n == i]
            done = self.judgments.done_keys()
            todo: dict[str, list[Game]] = {}
            for g in games:
                if g.key not in done:
                    todo.setdefault(g.battle_id, []).append(g)
            n_todo = sum(map(len, todo.values()))
            if todo and judge.participant is not None and judge.participant.client is not None:
                await judge.participant.client.ready(self.cfg.serving.deploy_timeout_s)
            log.info("judge %s: %d games to do, %d already stored", self.run, n_todo, len(games) - n_todo)
            advance = progress("judge", len(todo)) if progress else None  # battles

            async def play_both(pair: list[Game]) -> list[dict[str, Any]]:
                return [row for rows in await asyncio.gather(*map(judge.play, pair)) for row in rows]

            outcome = await execute(list(todo.values()), play_both, self.judgments, self.cfg.battle.chunk_size, advance)
        finally:
            if judge.participant is not None:
                await judge.participant.aclose()
        _raise_on_failures("judging", [(f"{pair[0].battle_id}", e) for pair, e in outcome.failures])
        return {"judged": n_todo - sum(len(pair) for pair, _ in outcome.failures), "reused": len(games) - n_todo}

    # Battle table ----------------------------------------------------------------------------------------------

    def build(self, wall_s: dict[str, float] | None = None) -> dict[str, Any]:
        """Assemble the battle records from both games of every planned battle; write them with a summary."""
        judge = Judge(self.cfg, None) if self.cfg.judge.kind == "verifier" else self._judge_identity()
        answers, keys, rejected = self._answers()
        by_key = {r["key"]: r for r in self.judgments.read().to_pylist()}
        records = []
        for prompt in self.plan.prompts:
            pid = prompt["prompt_id"]
            for a, b in self.plan.pairs[pid]:
                bid = self.battle_id(pid, a, b, keys, judge)
                base = self._identity(pid, a, b, bid, keys, judge)
                errors = [f"no answer from {m}: {rejected[pid, m]}" for m in (a, b) if (pid, m) in rejected]
                if errors:
                    records.append(
                        {**base, "winner": "invalid", "judgment_keys": [], "invalid_reason": "; ".join(errors)}
                    )
                    continue
                g1 = by_key.get(content_key("judgment", bid, 1))
                g2 = by_key.get(content_key("judgment", bid, 2))
                if g1 is None or g2 is None:
                    raise BattleError(f"run {self.run}: battle {bid} ({a} vs {b} on {pid}) is not judged; judge first")
                records.append(self._record(base, answers, g1, g2))
        table = pa.Table.from_pylist(records, schema=BATTLE_RECORD_SCHEMA)
        valid = table.filter(pa.compute.not_equal(table["winner"], "invalid"))
        invalid = table.filter(pa.compute.equal(table["winner"], "invalid"))
        self._check_valid(valid, invalid)
        summary = {**self.summary(valid, invalid, wall_s or {}), **self.meta}
        with self.store.artifact_at(self.table_key, meta=summary) as w:
            w.write_table("data.parquet", valid.drop_columns(["invalid_reason"]))
            w.write_table("invalid.parquet", invalid)
            w.write_json("summary.json", summary)
            w.write_table("transcripts.parquet", self._transcripts(answers, keys))
        return {"uri": w.uri, **summary}

    def _check_valid(self, valid: pa.Table, invalid: pa.Table) -> None:
        """Nothing wrong is reported as right: a run with no battles, or with fewer valid ones than
        ``battle.min_valid_fraction``, fails with the counts and the commonest reasons — before its table is written
        (a rerun would otherwise take the table as done)."""
        total = valid.num_rows + invalid.num_rows
        if total == 0:
            raise BattleError(
                f"run {self.run}: no battles to build ({len(self.plan.prompts)} prompts, "
                f"{sum(map(len, self.plan.pairs.values()))} planned pairs): is the slice empty? (`arena data shards`)"
            )
        floor = self.cfg.battle.min_valid_fraction
        if valid.num_rows < floor * total:
            reasons = Counter(_reason(r) for r in invalid["invalid_reason"].to_pylist())
            common = "; ".join(f"{n}× {why}" for why, n in reasons.most_common(3))
            raise BattleError(
                f"run {self.run}: only {valid.num_rows} of {total} battles are valid, below battle.min_valid_fraction "
                f"{floor:g}; the commonest reasons: {common}. Nothing was committed; the answers and verdicts stay "
                "stored (fix the judge or its template, or lower battle.min_valid_fraction, and rerun)."
            )

    def _transcripts(self, answers: dict, keys: dict) -> pa.Table:
        """Each battle's conversation (the prompt and every model's answers), so that a reader of the battle table
        (the UI's battle browser) needs no other artifact. Small beside the response parts it is drawn from."""
        rows = [
            {
                "prompt_id": pr["prompt_id"],
                "model": m,
                "response_key": keys[pr["prompt_id"], m],
                "system": pr.get("system"),
                "turns": list(pr["turns"]),
                "answers": answers.get((pr["prompt_id"], m)),
            }
            for pr in self.plan.prompts
            for m in self.plan.models
            if (pr["prompt_id"], m) in keys
        ]
        return pa.Table.from_pylist(rows, schema=TRANSCRIPT_SCHEMA)

    def _judge_identity(self) -> Judge:
        # Only the hash and name are needed to rebuild battle ids; no client is opened.
        return Judge(self.cfg, Participant.identity(self.cfg.models.judge, self.cfg.storage))

    def _identity(self, pid: str, a: str, b: str, bid: str, keys: dict, judge: Judge) -> dict[str, Any]:
        return {
            "battle_id": bid,
            "prompt_id": pid,
            "iteration": self.iteration,
            "run": self.run,
            "model_a": a,
            "model_b": b,
            "revision_a": self.revisions[a],
            "revision_b": self.revisions[b],
            "judge": judge.name,
            "judge_hash": judge.hash,
            "template": judge.template.version,
            "response_key_a": keys[pid, a],
            "response_key_b": keys[pid, b],
        }

    def _record(self, base: dict[str, Any], answers: dict, g1: dict, g2: dict) -> dict[str, Any]:
        pid, a, b = base["prompt_id"], base["model_a"], base["model_b"]
        rec: dict[str, Any] = {
            **base,
            "len_a": float(sum(map(len, answers[pid, a]))),
            "len_b": float(sum(map(len, answers[pid, b]))),
            "judgment_keys": [g1["key"], g2["key"]],
            "g1_score_a": g1["score_a"],
            "g1_score_b": g1["score_b"],
            "g2_score_a": g2["score_a"],
            "g2_score_b": g2["score_b"],
            "explanation_g1": g1["explanation"],
            "explanation_g2": g2["explanation"],
            "raw_g1": g1["raw"],
            "raw_g2": g2["raw"],
        }
        bad = [f"game {g['game']}: {g['error']}" for g in (g1, g2) if g["status"] != "valid"]
        if bad:
            return {**rec, "winner": "invalid", "invalid_reason": "; ".join(bad)}
        winner, ta, tb = combine_games(
            Verdict(g1["score_a"], g1["score_b"], ""),
            Verdict(g2["score_a"], g2["score_b"], ""),
            self.cfg.judge.combine,
            self.cfg.judge.tie_margin,
        )
        return {**rec, "winner": winner, "score_a": ta, "score_b": tb}

    def response_keys(self) -> dict[tuple[str, str], str]:
        """(prompt_id, model) → the key of that model's response at its current revision and sampling."""
        who = {s.name: Participant.identity(s, self.cfg.storage, self.revisions[s.name]) for s in self.specs}
        return {
            (pr["prompt_id"], m): p.response_key(pr["prompt_id"]) for pr in self.plan.prompts for m, p in who.items()
        }

    def _answers(
        self,
    ) -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], str], dict[tuple[str, str], str]]:
        """(prompt_id, model) → answers by turn, → response key, and → error for answers the server rejected.

        Only responses of the current revisions count (a new target checkpoint has new keys)."""
        wanted = self.response_keys()
        want_keys = set(wanted.values())
        turns: dict[str, list[tuple[int, str]]] = {}
        errors: dict[str, str] = {}
        for r in self.responses.read().select(["key", "turn", "text", "error"]).to_pylist():
            if r["key"] not in want_keys:
                continue
            if r["error"] is not None:
                errors[r["key"]] = f"turn {r['turn']}: {r['error']}"
            else:
                turns.setdefault(r["key"], []).append((r["turn"], r["text"]))
        rejected = {pk: errors[k] for pk, k in wanted.items() if k in errors}
        answers = {
            pk: [t for _, t in sorted(turns[k])] for pk, k in wanted.items() if k in turns and pk not in rejected
        }
        return answers, dict(wanted), rejected

    def summary(self, valid: pa.Table, invalid: pa.Table, wall_s: dict[str, float]) -> dict[str, Any]:
        per_model: dict[str, Counter[str]] = {m: Counter() for m in self.plan.models}
        for a, b, w in zip(*(valid[c].to_pylist() for c in ("model_a", "model_b", "winner")), strict=True):
            if w == "tie":
                per_model[a]["ties"] += 1
                per_model[b]["ties"] += 1
            else:
                win, lose = (a, b) if w == "model_a" else (b, a)
                per_model[win]["wins"] += 1
                per_model[lose]["losses"] += 1
        resp = self.responses.read()
        judg = self.judgments.read()
        return {
            "run": self.run,
            "iteration": self.iteration,
            "prompts": len(self.plan.prompts),
            "battles": valid.num_rows,
            "invalid": invalid.num_rows,
            "games": 2 * (valid.num_rows + invalid.num_rows),
            "per_model": {m: {k: c[k] for k in ("wins", "losses", "ties")} for m, c in per_model.items()},
            "tokens_generated": int(pa.compute.sum(resp["completion_tokens"]).as_py() or 0),
            "judge_tokens": int(pa.compute.sum(judg["completion_tokens"]).as_py() or 0)
            + int(pa.compute.sum(judg["prompt_tokens"]).as_py() or 0),
            "wall_s": {k: round(v, 2) for k, v in wall_s.items()},
        }

    def usage(self) -> list[dict[str, Any]]:
        """Requests and tokens per model and role of this run's own parts (:func:`arena_ops.ledger.usage_rows`)."""
        from arena_ops.ledger import usage_rows

        return usage_rows(self.responses.read_owned(self.table_key), self.judgments.read_owned(self.table_key))

    # Everything ------------------------------------------------------------------------------------------------

    async def run_all(self, progress: Progress | None = None) -> dict[str, Any]:
        wall: dict[str, float] = {}
        t0 = time.perf_counter()
        gen = await self.generate(progress)
        wall["generate"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        jud = await self.judge(progress)
        wall["judge"] = time.perf_counter() - t1
        summary = self.build(wall)
        return {**summary, "generation": gen, "judging": jud}


def _reason(text: str | None) -> str:
    """An invalid battle's reason without its game numbers and specifics (so alike reasons count together)."""
    first = (text or "unknown").split("; ")[0]
    first = first.split(": ", 1)[1] if first.startswith("game ") else first
    return first[:160]


async def _ready(participants: Any, timeout_s: float) -> None:
    """Every model with a client — served or external — answers ``/models`` and lists itself before any work: a
    wrong base URL, model id or key fails here, not as thousands of failed items."""
    seen: dict[str, Participant] = {}
    for p in participants:
        if p.client is not None:
            seen.setdefault(p.name, p)
    for p in seen.values():
        assert p.client is not None
        await p.client.ready(timeout_s)


def _raise_on_failures(what: str, failures: Sequence[tuple[str, str]]) -> None:
    if failures:
        shown = "; ".join(f"{u}: {e}" for u, e in failures[:3])
        raise BattleError(
            f"{what}: {len(failures)} unit(s) failed after retries (finished units are stored; a rerun does only "
            f"the missing ones). First: {shown}"
        )
