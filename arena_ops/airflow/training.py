"""Waiting for a training job in Airflow without holding a worker slot: a deferrable operator and its trigger.

The job's handle and status live in the store (``submit_<stage>`` may have run on another machine), so the wait is
``arena_ops.flywheel.poll`` called every ``poll_s`` seconds by the triggerer, not by a worker. Deferral rather than a
reschedule-mode sensor: Airflow 3.3's scheduler fails a reschedule-mode sensor when the executor's success for one
poke arrives after the next poke was queued (apache/airflow#71172, open; seen here with 5 s pokes on a busy 2-core
machine: the round failed twice in one training). A deferred task is resumed by the triggerer's event instead, and
survives scheduler restarts (triggers live in the database).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)

#: How long a poll may keep failing for reasons other than the job's own failure (the Ray dashboard or the store
#: unreachable, a timeout on a busy machine) before the wait gives up. A transient error must not fail the task: its
#: retry would just poll the same job again.
TRANSIENT_GRACE_S = 600.0

#: The least time between deferral and the trigger's event. A deferred task's worker exits and its executor reports
#: "success" for that try; when the event resumes the task before the scheduler has drained that report, Airflow 3.3
#: takes the stale report for a task killed externally and fails the resumed try (apache/airflow#72716, fix open in
#: #72767; seen here: a job killed 4 s after submission, the report 5 s late on a busy 2-core machine, the wait retried
#: a job already known failed). Holding the event this long costs only jobs that end this quickly.
SETTLE_S = 15.0


class TrainingJobTrigger(BaseTrigger):
    """Fires once the stage's job has finished: ``{"status": "done"}``, or ``{"status": "failed", "error": …}``."""

    def __init__(
        self,
        ref: dict[str, Any],
        stage: str,
        poll_s: float,
        grace_s: float = TRANSIENT_GRACE_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        super().__init__()
        self.ref, self.stage, self.poll_s, self.grace_s, self.settle_s = ref, stage, poll_s, grace_s, settle_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "ref": self.ref,
            "stage": self.stage,
            "poll_s": self.poll_s,
            "grace_s": self.grace_s,
            "settle_s": self.settle_s,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        event = await self._wait()
        await asyncio.sleep(max(0.0, self.settle_s - (time.monotonic() - started)))  # see SETTLE_S
        yield TriggerEvent(event)

    async def _wait(self) -> dict[str, Any]:
        from arena_ops.errors import ArenaError
        from arena_ops.flywheel import poll

        failing_since: float | None = None
        while True:
            try:
                done = await asyncio.to_thread(poll, self.ref, self.stage)
            except ArenaError as exc:  # the job failed (TrainingError) or its handle cannot be read
                return {"status": "failed", "error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - transient until proven otherwise; see TRANSIENT_GRACE_S
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.grace_s:
                    return {
                        "status": "failed",
                        "error": f"polling the {self.stage} job failed for {now - failing_since:.0f} s: {exc!r}",
                    }
                log.warning("polling the %s job failed (retrying in %.0f s): %r", self.stage, self.poll_s, exc)
                await asyncio.sleep(self.poll_s)
                continue
            failing_since = None
            if done:
                return {"status": "done"}
            await asyncio.sleep(self.poll_s)


class WaitForTraining(BaseOperator):
    """Waits (deferred) for the job ``submit_<stage>`` started; returns ``arena_ops.flywheel.finish`` (the registered
    model). A failed job fails the task at once, without retries: polling again cannot succeed."""

    template_fields = ("ref",)

    def __init__(self, *, ref: Any, stage: str, poll_s: float, timeout_s: float = 12 * 3600, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ref, self.stage, self.poll_s, self.timeout_s = ref, stage, poll_s, timeout_s

    def execute(self, context: Any) -> Any:
        from arena_ops.errors import TrainingError
        from arena_ops.flywheel import finish, poll

        try:
            if poll(self.ref, self.stage):  # already done (a rerun, or a quick job): no need to defer
                return finish(self.ref, self.stage)
        except TrainingError as exc:
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - a transient error: the trigger polls again
            self.log.warning("polling the %s job failed; the trigger will retry: %r", self.stage, exc)
        self.defer(
            trigger=TrainingJobTrigger(self.ref, self.stage, self.poll_s),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout_s),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from arena_ops.flywheel import finish

        if event.get("status") != "done":
            self._fail(event.get("error", f"unexpected trigger event {event!r}"))
        return finish(self.ref, self.stage)

    def _fail(self, error: str) -> None:
        raise AirflowFailException(f"{error}\nTo train again, clear submit_{self.stage} with downstream.")
