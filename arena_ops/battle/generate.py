"""Generation: every participating model answers every prompt of a run, turn by turn with its own history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from arena_ops.config import ArenaConfig, ModelSpec, RecordedSource, SamplingConfig, ServedSource, StorageConfig
from arena_ops.errors import BattleError
from arena_ops.revisions import revision_of
from arena_ops.serving.client import ChatClient, RequestRejected
from arena_ops.serving.recorded import RecordedResponses

from .parts import content_key

RESPONSE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("prompt_id", pa.string()),
        ("model", pa.string()),
        ("revision", pa.string()),
        ("turn", pa.int32()),
        ("text", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("finish_reason", pa.string()),
        ("latency_s", pa.float64()),
        ("attempts", pa.int32()),
        ("sampling", pa.string()),
        ("error", pa.string()),  # set when the server rejected the request (e.g. prompt longer than the context)
    ]
)


@dataclass
class Participant:
    """A model as a source of text: a chat client (served or external) or recorded responses."""

    name: str
    revision: str
    sampling: SamplingConfig
    client: ChatClient | None = None
    recorded: RecordedResponses | None = None
    served: bool = False

    @classmethod
    def identity(cls, spec: ModelSpec, storage: StorageConfig, revision: str | None = None) -> Participant:
        """Name, revision (of the content: :mod:`arena_ops.revisions`) and sampling only — enough for content keys;
        no connection is opened."""
        rev = revision or revision_of(spec, storage)
        return cls(spec.name, rev, spec.sampling, served=isinstance(spec.source, ServedSource))

    @classmethod
    def open(cls, spec: ModelSpec, cfg: ArenaConfig, revision: str | None = None) -> Participant:
        p = cls.identity(spec, cfg.storage, revision)
        if isinstance(spec.source, RecordedSource):
            p.recorded = RecordedResponses(spec.source.path, spec.name)
        else:
            p.client = ChatClient.for_model(
                spec,
                cfg.serving,
                concurrency=cfg.battle.concurrency,
                timeout_s=cfg.battle.request_timeout_s,
                max_retries=cfg.battle.max_retries,
            )
        return p

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def response_key(self, prompt_id: str) -> str:
        return content_key("response", prompt_id, self.name, self.revision, self.sampling.model_dump())

    def check_recorded(self, prompts: list[dict[str, Any]]) -> None:
        """Fail before any work when recorded responses lack a prompt (listing the first few)."""
        if self.recorded is None:
            return
        missing = [
            p["prompt_id"]
            for p in prompts
            if any(self._recorded_text(p, t) is None for t in range(1, len(p["turns"]) + 1))
        ]
        if missing:
            raise BattleError(
                f"model {self.name!r}: {self.recorded.path} lacks responses for {len(missing)} prompt(s), "
                f"e.g. {missing[:5]} (looked up by prompt_id, then source_id)"
            )

    def _recorded_text(self, prompt: dict[str, Any], turn: int) -> str | None:
        assert self.recorded is not None
        for pid in (prompt["prompt_id"], prompt.get("source_id")):
            if pid is not None and self.recorded.has(str(pid), turn):
                return self.recorded.response(str(pid), turn)
        return None

    async def answer(self, prompt: dict[str, Any]) -> list[dict[str, Any]]:
        """One row per turn; turn t is asked with the model's own answers to turns 1…t-1 in the history."""
        key = self.response_key(prompt["prompt_id"])
        messages: list[dict[str, str]] = (
            [{"role": "system", "content": prompt["system"]}] if prompt.get("system") else []
        )
        rows = []
        for turn, user in enumerate(prompt["turns"], start=1):
            messages.append({"role": "user", "content": user})
            row: dict[str, Any] = {
                "key": key,
                "prompt_id": prompt["prompt_id"],
                "model": self.name,
                "turn": turn,
                "revision": self.revision,
                "sampling": json.dumps(self.sampling.model_dump()),
            }
            if self.recorded is not None:
                text = self._recorded_text(prompt, turn)
                if text is None:
                    raise BattleError(
                        f"model {self.name!r}: no recorded response for {prompt['prompt_id']} turn {turn}"
                    )
                row.update(text=text, finish_reason="recorded", attempts=0)
            else:
                assert self.client is not None
                try:
                    res = await self.client.chat(messages, self.sampling)
                except RequestRejected as exc:
                    # Deterministic: a rerun would be rejected again. Recorded (and the battles that need this answer
                    # reported as invalid) instead of failing the whole run forever.
                    rows.append({**row, "text": None, "finish_reason": "rejected", "error": str(exc)})
                    return rows
                row.update(
                    text=res.text,
                    prompt_tokens=res.prompt_tokens,
                    completion_tokens=res.completion_tokens,
                    finish_reason=res.finish_reason,
                    latency_s=res.latency_s,
                    attempts=res.attempts,
                )
            messages.append({"role": "assistant", "content": row["text"]})
            rows.append(row)
        return rows
