"""The judge at work: one game = one call (plus re-asks when the reply cannot be parsed), or a verifier check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from arena_ops.config import ArenaConfig
from arena_ops.serving.client import RequestRejected, StructuredOutput

from .generate import Participant
from .judge import (
    LOGPROB_REGEX,
    Template,
    Verdict,
    VerdictParseError,
    VerifierError,
    build_messages,
    expected_scores,
    judge_hash,
    load_template,
    make_verifier,
    parse_verdict,
    verdict_regex,
    verifier_verdict,
)
from .parts import content_key

JUDGMENT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("battle_id", pa.string()),
        ("prompt_id", pa.string()),
        ("game", pa.int32()),
        ("model_in_a", pa.string()),
        ("model_in_b", pa.string()),
        ("status", pa.string()),  # valid | invalid
        ("score_a", pa.float64()),  # score of the response shown in position A
        ("score_b", pa.float64()),
        ("explanation", pa.string()),
        ("raw", pa.string()),
        ("error", pa.string()),
        ("judge", pa.string()),
        ("judge_hash", pa.string()),
        ("template", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("calls", pa.int32()),
    ]
)


@dataclass
class Game:
    """One judged ordering of a pair: ``first`` is shown as A."""

    battle_id: str
    prompt: dict[str, Any]
    game: int
    first: str
    second: str
    answers_first: list[str]
    answers_second: list[str]

    @property
    def key(self) -> str:
        return content_key("judgment", self.battle_id, self.game)


class Judge:
    """The configured judge: an LLM (score or logprob mode) or a verifier."""

    def __init__(self, cfg: ArenaConfig, participant: Participant | None) -> None:
        self.cfg = cfg.judge
        self.participant = participant
        self.template: Template = load_template(cfg.judge.template)
        if cfg.judge.kind == "verifier":
            self.verify = make_verifier(cfg.judge.verifier, cfg.judge.verifier_fn)
            self.name, identity = f"verifier:{cfg.judge.verifier}", cfg.judge.verifier_fn or cfg.judge.verifier
            settings: dict[str, Any] = {"kind": "verifier"}
        else:
            assert participant is not None
            self.name, identity = participant.name, participant.revision
            settings = {
                "kind": "llm",
                "mode": cfg.judge.mode,
                "sampling": participant.sampling.model_dump(),
                "structured": "verdict-regex" if participant.served else None,
                "explanation_max_chars": cfg.judge.explanation_max_chars,
                "max_parse_retries": cfg.judge.max_parse_retries,
            }
        self.hash = judge_hash(self.template, identity, settings)

    async def play(self, g: Game) -> list[dict[str, Any]]:
        row: dict[str, Any] = {
            "key": g.key,
            "battle_id": g.battle_id,
            "prompt_id": g.prompt["prompt_id"],
            "game": g.game,
            "model_in_a": g.first,
            "model_in_b": g.second,
            "judge": self.name,
            "judge_hash": self.hash,
            "template": self.template.version,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "calls": 0,
        }
        if self.cfg.kind == "verifier":
            reference = (g.prompt.get("reference") or [None])[-1]
            try:
                verdict = verifier_verdict(
                    self.verify(g.answers_first[-1], reference, g.prompt),
                    self.verify(g.answers_second[-1], reference, g.prompt),
                )
            except VerifierError as exc:
                return [{**row, "status": "invalid", "raw": None, "error": str(exc)}]
            raw = json.dumps(
                {"explanation": verdict.explanation, "score_a": verdict.score_a, "score_b": verdict.score_b}
            )
            return [_with_verdict(row, verdict, raw)]
        messages = build_messages(
            self.template, g.prompt["turns"], g.answers_first, g.answers_second, g.prompt.get("system")
        )
        quoted = [*g.answers_first, *g.answers_second, *g.prompt["turns"]]
        return [
            await (self._logprob(row, messages) if self.cfg.mode == "logprob" else self._score(row, messages, quoted))
        ]

    async def _score(self, row: dict[str, Any], messages: list[dict[str, str]], quoted: list[str]) -> dict[str, Any]:
        p = self.participant
        assert p is not None and p.client is not None
        structured = StructuredOutput(regex=verdict_regex(self.cfg.explanation_max_chars)) if p.served else None
        errors: list[str] = []
        for _ in range(self.cfg.max_parse_retries + 1):
            try:
                res = await p.client.chat(messages, p.sampling, structured=structured)
            except RequestRejected as exc:  # e.g. the judge prompt exceeds the judge's context: asking again won't help
                return {**row, "status": "invalid", "raw": None, "error": f"judge rejected the request: {exc}"}
            _count(row, res)
            try:
                return _with_verdict(row, parse_verdict(res.text, quoted), res.text)
            except VerdictParseError as exc:
                errors.append(str(exc))
                messages = [
                    *messages,
                    {"role": "assistant", "content": res.text},
                    {"role": "user", "content": self.template.retry.format(error=exc)},
                ]
        return {**row, "status": "invalid", "raw": res.text, "error": "; ".join(errors)}

    async def _logprob(self, row: dict[str, Any], messages: list[dict[str, str]]) -> dict[str, Any]:
        p = self.participant
        assert p is not None and p.client is not None
        try:
            res = await p.client.chat(
                messages,
                p.sampling,
                structured=StructuredOutput(regex=LOGPROB_REGEX),
                top_logprobs=self.cfg.top_logprobs,
            )
        except RequestRejected as exc:
            return {**row, "status": "invalid", "raw": None, "error": f"judge rejected the request: {exc}"}
        _count(row, res)
        try:
            return _with_verdict(row, expected_scores(res.logprobs or []), res.text)
        except VerdictParseError as exc:
            return {**row, "status": "invalid", "raw": res.text, "error": str(exc)}


def _count(row: dict[str, Any], res: Any) -> None:
    row["prompt_tokens"] += res.prompt_tokens
    row["completion_tokens"] += res.completion_tokens
    row["calls"] += 1


def _with_verdict(row: dict[str, Any], v: Verdict, raw: str) -> dict[str, Any]:
    """``raw``: what the judge said (a verifier, which says nothing, records its verdict as JSON)."""
    return {
        **row,
        "status": "valid",
        "score_a": v.score_a,
        "score_b": v.score_b,
        "explanation": v.explanation,
        "raw": raw,
    }
