"""The training wait's trigger: the job's own failure ends the wait at once; a transient polling error does not; no
event comes sooner than settle_s after deferral."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from arena_ops import flywheel
from arena_ops.airflow.training import TrainingJobTrigger
from arena_ops.errors import TrainingError


def events(trigger: TrainingJobTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout=10))


def polls(monkeypatch: pytest.MonkeyPatch, *outcomes: Any) -> list[int]:
    calls: list[int] = []

    def poll(ref: Any, stage: str) -> bool:
        outcome = outcomes[min(len(calls), len(outcomes) - 1)]
        calls.append(1)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(flywheel, "poll", poll)
    return calls


def test_done_after_running(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = polls(monkeypatch, False, False, True)
    assert events(TrainingJobTrigger({}, "sft", poll_s=0, settle_s=0)) == [{"status": "done"}]
    assert len(calls) == 3


def test_job_failure_ends_the_wait_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = polls(monkeypatch, False, TrainingError("Ray job x ended FAILED; last lines:\nKilled"))
    [event] = events(TrainingJobTrigger({}, "sft", poll_s=0, settle_s=0))
    assert event["status"] == "failed" and "Killed" in event["error"]
    assert len(calls) == 2


def test_transient_errors_are_polled_through(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = polls(monkeypatch, ConnectionError("dashboard busy"), TimeoutError("slow"), False, True)
    assert events(TrainingJobTrigger({}, "sft", poll_s=0, settle_s=0)) == [{"status": "done"}]
    assert len(calls) == 4


def test_errors_that_outlast_the_grace_fail_with_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    polls(monkeypatch, ConnectionError("dashboard down"))
    [event] = events(TrainingJobTrigger({}, "sft", poll_s=0.01, grace_s=0.05, settle_s=0))
    assert event["status"] == "failed" and "dashboard down" in event["error"]


def test_serialized_trigger_round_trips() -> None:
    path, kwargs = TrainingJobTrigger({"iteration": 1}, "dpo", poll_s=5, grace_s=60, settle_s=3).serialize()
    assert path == "arena_ops.airflow.training.TrainingJobTrigger"
    assert TrainingJobTrigger(**kwargs).serialize() == (path, kwargs)


@pytest.mark.parametrize("outcome", [True, TrainingError("Ray job x ended FAILED")])
def test_an_event_is_held_until_the_deferral_has_settled(monkeypatch: pytest.MonkeyPatch, outcome: Any) -> None:
    """A job that ends at once is reported settle_s after deferral, not sooner (apache/airflow#72716: a resumed try
    failed by the executor's stale report of the deferring one); a job that takes longer is reported when it ends."""
    polls(monkeypatch, outcome)
    began = time.monotonic()
    [event] = events(TrainingJobTrigger({}, "sft", poll_s=0, settle_s=0.5))
    assert event["status"] == ("done" if outcome is True else "failed")
    assert time.monotonic() - began >= 0.5
    calls = polls(monkeypatch, *[False] * 4, True)
    began = time.monotonic()
    assert events(TrainingJobTrigger({}, "sft", poll_s=0.2, settle_s=0.1)) == [{"status": "done"}]
    assert len(calls) == 5 and 0.8 <= time.monotonic() - began < 2.0
