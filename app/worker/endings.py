"""How an attempt ends, and writing that down: the supervisor's Redis transitions for a
finished attempt (complete, fail or retry, cancel, requeue) and their log events.

A slot records its task's result itself and claims its next task in the same round
trip.  An attempt whose child is killed (timeout, cancel, lost lease, shutdown) or
died is recorded by a background task once the child's whole tree is dead, so a retry
never runs while a process of the previous attempt still does; the slot meanwhile
goes on with the warm spare child.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from app.errors import RedisUnavailable, StaleLease, StockqError
from app.logs import get_logger
from app.models import TaskStatus, WorkItem
from app.queue import TaskQueue
from app.worker.output import CapturedOutput

log = get_logger("stockq.worker")


@dataclass(slots=True)
class Running:
    task: WorkItem
    started: float
    progress: dict[str, Any] | None = None  # latest progress not yet written
    checkpoint: str = ""
    last_write: float = 0.0
    interrupted: str = ""  # why the supervisor stopped it: cancel | lost | shutdown

    @property
    def records(self) -> int:
        return int((self.progress or {}).get("records", 0))


@dataclass(slots=True)
class Outcome:
    kind: str  # ok | failed | cancel | lost | shutdown | detached (recorded elsewhere)
    records: int = 0
    error_type: str = ""
    error: str = ""
    retry_after: float | None = None
    checkpoint: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    output: CapturedOutput | None = None


DETACHED = Outcome("detached")


def killed_outcome(reason: str, running: Running) -> Outcome:
    """The outcome of an attempt whose child the supervisor killed for ``reason``."""
    if reason == "timeout":
        return Outcome("failed", error_type="timeout",
                       error=f"exceeded its timeout of {running.task.timeout_seconds} s",
                       checkpoint=running.checkpoint, records=running.records)
    return Outcome(reason, checkpoint=running.checkpoint, records=running.records)


def crash_outcome(how: str, running: Running) -> Outcome:
    """The outcome of an attempt whose child died on its own."""
    return Outcome("failed", error_type="worker_lost", error=f"worker child {how}",
                   checkpoint=running.checkpoint)


class Recorder:
    """Writes attempts' outcomes through the queue, riding out Redis outages."""

    def __init__(self, queue: TaskQueue, worker_id: str, stop_now: asyncio.Event) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self._stop_now = stop_now
        self.processed = 0

    async def settle(self, task: WorkItem, out: Outcome, ctx: dict[str, Any], *,
                     claim: bool) -> tuple[WorkItem | None, bool]:
        """Record the outcome.  Returns the worker's next task (claimed in the same
        round trip when ``claim``) and whether that claim was tried."""
        claim_for = self.worker_id if claim else None
        tried = claim_for is not None and out.kind in ("ok", "failed")
        if out.output is not None and out.output.unlogged_bytes:
            log.warning("task.output_truncated", output_bytes=out.output.total_bytes,
                        unlogged_bytes=out.output.unlogged_bytes,
                        kept_bytes=len(out.output.text.encode("utf-8", "replace")), **ctx)
        backoff = 0.2
        unanswered = False  # a try got no reply: Redis may have recorded it (and claimed)
        while True:
            try:
                return await self._record(task, out, claim_for, ctx), tried
            except StaleLease as exc:
                log.warning("task.lease_lost", error=str(exc), **ctx)
                return None, False
            except RedisUnavailable as exc:
                if self._stop_now.is_set():
                    return None, False
                unanswered = True
                log.warning("worker.redis_unavailable", error=str(exc), **ctx)
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
            except StockqError as exc:  # e.g. the task was deleted meanwhile
                if unanswered:  # the try that got no reply did record it; the task it
                    # claimed comes back with the next claim (TaskQueue.claim_work)
                    log.warning("task.settle_already_recorded", error=str(exc), **ctx)
                else:
                    log.error("task.settle_failed", error=str(exc), **ctx)
                return None, False

    async def _record(self, task: WorkItem, out: Outcome, claim: str | None,
                      ctx: dict[str, Any]) -> WorkItem | None:
        text, size = (out.output.text, out.output.total_bytes) if out.output else ("", 0)
        if out.kind == "ok":
            nxt = await self.queue.complete(task, out.records, out.result or None,
                                            checkpoint=out.checkpoint, claim_for=claim,
                                            output=text, output_bytes=size)
            self.processed += 1
            log.info("task.completed", records=out.records, **ctx)
            return nxt
        if out.kind == "failed":
            res = await self.queue.fail(task, out.error_type, out.error,
                                        retry_after_seconds=out.retry_after,
                                        records=out.records, checkpoint=out.checkpoint,
                                        claim_for=claim, output=text, output_bytes=size)
            self.processed += 1
            if res.status == TaskStatus.RETRYING:
                log.warning("task.retry_scheduled", error_type=out.error_type, error=out.error,
                            next_run_at_ms=res.next_run_at_ms, **ctx)
            elif res.status == TaskStatus.CANCELLED:
                log.info("task.cancelled", **ctx)
            else:
                log.error("task.failed", error_type=out.error_type, error=out.error, **ctx)
            return res.next_task
        if out.kind == "cancel":
            await self.queue.acknowledge_cancel(task, output=text, output_bytes=size)
            log.info("task.cancelled", **ctx)
        elif out.kind == "shutdown":
            await self.queue.requeue(task, "requeued: worker shut down",
                                     checkpoint=out.checkpoint, output=text,
                                     output_bytes=size)
            log.info("task.requeued", reason="shutdown", **ctx)
        # "lost": another worker owns the task now; record nothing
        return None
