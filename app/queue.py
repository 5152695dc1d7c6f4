"""The typed task API: every state change is one Lua script, one round trip.

:class:`TaskQueue` takes a clock (``clock() -> epoch seconds``) and a random source, so
tests step time and pin the jitter instead of sleeping.  Reads (get, list, stats) live
in :mod:`app.queries`; batches in :mod:`app.executions`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from app.errors import RedisUnavailable, TaskNotFound
from app.failures import bound_message, is_retryable
from app.keys import Keys, fixed_keys
from app.logs import get_logger
from app.models import Leased, Task, TaskSpec, TaskStatus, WorkItem
from app.redaction import redactor_for
from app.redis_client import redis_errors
from app.scripts import Scripts
from app.settings import Settings

Clock = Callable[[], float]


def new_id() -> str:
    return str(uuid.uuid4())


class _Tokens:
    """Lease tokens: a random prefix per process (drawn again in a forked child) and a
    counter, so every claim gets a token no other attempt has, without a system call
    for randomness per claim."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = uuid.uuid4().hex[:20]
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter)}"


_tokens = _Tokens()


def new_token() -> str:
    """A lease token for one claim (unique per attempt; opaque to everything else)."""
    return _tokens.next()


@dataclass(frozen=True, slots=True)
class FailOutcome:
    status: TaskStatus
    attempt: int
    next_run_at_ms: int | None
    next_task: WorkItem | None = None  # claimed in the same call (claim_for)


def capability_string(plugins: Iterable[str], queues: Iterable[str]) -> str:
    """What a claim may take, as the claim script reads it: ``,plugin,...,@queue,...,``
    (lib.lua: can_run).  No plugin at all gives ``,`` and then nothing is taken."""
    items = [*sorted(set(plugins)), *(f"@{q}" for q in sorted(set(queues)))]
    return "," + "".join(f"{item}," for item in items)


def enqueue_call(keys: Keys, spec: TaskSpec, task_id: str) -> tuple[list[str], list[Any]]:
    """The extra KEYS and the ARGV (after prefix/now) of ``enqueue.lua`` for ``spec``."""
    fields = spec.to_fields(task_id)
    args: list[Any] = [task_id, spec.plugin_name, fields["priority"]]
    for name, value in fields.items():
        if value:
            args += (name, value)
    return [keys.dedup(fields["dedup_key"])], args


_iso_second: tuple[int, str] = (-1, "")  # the last second formatted (one tuple: threads)


def clock_args(keys: Keys, now: float) -> list[Any]:
    """ARGV[1..3] of every script: prefix, now in ms, now as ISO 8601 (UTC)."""
    global _iso_second
    ms = int(now * 1000)
    second, millis = divmod(ms, 1000)
    cached = _iso_second
    if cached[0] != second:
        cached = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        _iso_second = cached
    # isoformat(timespec="milliseconds") of the same millisecond as ARGV[2]
    return [keys.prefix, ms, f"{cached[1]}.{millis:03d}+00:00"]


def iso_time(epoch: float) -> str:
    """An epoch time as stockq stores times: ISO 8601, UTC, with the offset."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def enqueued_fields(spec: TaskSpec, task_id: str) -> dict[str, Any]:
    """The fields of the ``task.enqueued`` / ``task.deduplicated`` events."""
    return {"task_id": task_id, "plugin": spec.plugin_name,
            "task_type": spec.task_type.value, "priority": int(spec.priority),
            "trigger": spec.trigger}


def log_enqueued(log: Any, spec: TaskSpec, task_id: str, created: bool) -> None:
    log.info("task.enqueued" if created else "task.deduplicated",
             **enqueued_fields(spec, task_id))


def _task_or_none(raw: Any) -> Task | None:
    if not raw:
        return None
    return Task.from_hash(dict(zip(raw[::2], raw[1::2], strict=True)))


def _work_or_none(raw: Any, token: str) -> WorkItem | None:
    return WorkItem.from_values(raw, token) if raw else None


@dataclass(frozen=True, slots=True)
class RenewOutcome:
    lost: list[str]
    cancel_requested: list[str]


class TaskQueue:
    """Transitions of the task state machine (DESIGN §3) over one Redis client."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        *,
        clock: Clock = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.clock = clock
        self._rng = rng
        self._fixed = fixed_keys(self.keys)
        self._scripts = Scripts(client, settings)
        self.log = get_logger("stockq.queue")
        # every text a caller hands in (a plugin's error, progress message, checkpoint,
        # result; a cancel reason) passes through it before it is stored
        self.redact = redactor_for(settings)
        # (worker id, lease token) of claiming calls that got no answer: Redis may have
        # run them (see recover_claim.lua); the next claim_work looks for their task
        self._unanswered: list[tuple[str, str]] = []
        # what claims made through this queue may take (lib.lua: can_run); '' = anything
        self.capabilities = ""

    def advertise(self, plugins: Iterable[str], queues: Iterable[str]) -> None:
        """Claim from now on only tasks of ``plugins`` in ``queues`` (capability
        routing: the claim script parks the others for a worker that can run them)."""
        self.capabilities = capability_string(plugins, queues)

    async def aclose(self) -> None:
        """Close the script connection (the redis-py client is the caller's)."""
        await self._scripts.aclose()

    async def __aenter__(self) -> TaskQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ plumbing
    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Call transition ``name`` with the fixed keys, the prefix and the clock."""
        return await self._scripts.call(
            name, self._fixed + keys, [*clock_args(self.keys, self.clock()), *args]
        )

    @property
    def _retention(self) -> int:
        return max(1, int(self.settings.retention_seconds))

    # ------------------------------------------------------------ producers
    async def enqueue(self, spec: TaskSpec, *, task_id: str | None = None) -> tuple[str, bool]:
        """Queue ``spec``.  Returns ``(task_id, created)``; ``created`` is False when
        identical work was already pending/running/retrying and its id is returned."""
        created, found = await self.run("enqueue", *enqueue_call(self.keys, spec,
                                                                  task_id or new_id()))
        log_enqueued(self.log, spec, str(found), bool(created))
        return str(found), bool(created)

    async def cancel(self, task_id: str, reason: str = "cancelled by user") -> str:
        """Cancel: ``'cancelled'`` at once for pending/retrying tasks,
        ``'cancel_requested'`` for a running one (its supervisor ends it)."""
        outcome = str(
            await self.run(
                "cancel", [self.keys.task(task_id)], [task_id, bound_message(self.redact(reason)),
                                                     self._retention]
            )
        )
        self.log.info("task.cancelled" if outcome == "cancelled" else "task.cancel_requested",
                      task_id=task_id, reason=reason)
        return outcome

    async def retry(self, task_id: str, *, trigger: str = "retry",
                    from_start: bool = False) -> str:
        """Manual retry: a new task (new id, ``retry_of`` link) for a failed/cancelled one.
        It resumes after the old task's checkpoint (a date-by-date task goes on from the
        day after the last one it finished) unless ``from_start``."""
        return (await self.retry_many([task_id], trigger=trigger, from_start=from_start))[0]

    async def retry_many(self, task_ids: list[str], *, trigger: str = "retry",
                         from_start: bool = False) -> list[str]:
        """Retry several ended tasks in one step, keeping dependencies among them (each
        resumes after its checkpoint unless ``from_start``)."""
        args: list[Any] = [trigger, "restart" if from_start else "resume"]
        for old in task_ids:
            args += [old, new_id()]
        new_ids = [str(x) for x in await self.run("retry", [], args)]
        for old, new in zip(task_ids, new_ids, strict=True):
            self.log.info("task.retry_requested", task_id=new, retry_of=old, trigger=trigger)
        return new_ids

    async def delete(self, task_id: str) -> None:
        await self.run("delete", [self.keys.task(task_id)], [task_id])
        self.log.info("task.deleted", task_id=task_id)

    # ------------------------------------------------------------ supervisors
    async def claim(
        self, worker_id: str, token: str | None = None, *, promote_limit: int = 100
    ) -> Task | None:
        """Pop the next ready task (priority 0 first) and lease it to ``worker_id``."""
        return _task_or_none(await self.run("claim", [], self._claim_args(worker_id, token,
                                                                           promote_limit)))

    def _claim_args(self, worker_id: str | None, token: str | None = None,
                    promote_limit: int = 100, *, work: bool = False) -> list[Any]:
        if not worker_id:
            return [""]
        return [worker_id, token or new_token(), int(self.settings.lease_seconds * 1000),
                promote_limit, "work" if work else "", self.capabilities]

    async def claim_work(self, worker_id: str, token: str | None = None) -> WorkItem | None:
        """:meth:`claim` for a worker: the task comes back as a :class:`WorkItem` (only
        what running it needs, a smaller reply than the whole hash).  A task claimed by
        an earlier call whose reply never came comes first (:meth:`_recover`)."""
        if self._unanswered:
            recovered = await self._recover()
            if recovered is not None:
                return recovered
        token = token or new_token()
        return _work_or_none(await self._claiming(
            "claim", [], self._claim_args(worker_id, token, work=True), worker_id, token),
            token)

    async def _claiming(self, name: str, keys: list[str], args: list[Any],
                        worker: str | None, token: str) -> Any:
        """Run a transition that may claim for ``worker`` under ``token``; when it gets
        no answer, remember the two: Redis may have run it."""
        try:
            return await self.run(name, keys, args)
        except RedisUnavailable:
            if worker:
                self._unanswered.append((worker, token))
            raise

    async def _recover(self) -> WorkItem | None:
        """The task an unanswered claiming call left running under its worker and
        token, with its lease renewed; None when there is none (the call never ran or
        claimed nothing, or the lease ran out and the reaper took the task back)."""
        while self._unanswered:
            worker, token = self._unanswered[0]
            raw = await self.run("recover_claim", [], [
                worker, token, int(self.settings.lease_seconds * 1000)])
            self._unanswered.pop(0)
            if raw:
                item = _work_or_none(raw, token)
                if item is not None:
                    self.log.warning("task.claim_recovered", task_id=item.task_id,
                                     plugin=item.plugin_name, attempt=item.attempt,
                                     worker=worker)
                    return item
        return None

    async def wait_for_doorbell(self, timeout: float) -> bool:
        """Block until a task was made ready (or ``timeout`` s); True when rung."""
        with redis_errors(self.settings):
            rung = await self.client.blpop([self.keys.doorbell], timeout=timeout)  # type: ignore[misc]
            return bool(rung)

    async def progress(
        self, task: Leased, percent: float, records: int = 0, message: str = "",
        *, checkpoint: str = "",
    ) -> bool:
        """Record progress; returns True when a cancel was requested."""
        pct = min(100.0, max(0.0, float(percent)))
        flag = await self.run(
            "progress",
            [self.keys.task(task.task_id)],
            [task.task_id, task.lease_token, f"{pct:.2f}", int(records),
             self.redact(message)[:500], self.redact(checkpoint)],
        )
        return bool(flag)

    async def complete(
        self, task: Leased, records: int = 0, result: Mapping[str, Any] | None = None,
        *, checkpoint: str = "", claim_for: str | None = None, output: str = "",
        output_bytes: int = 0,
    ) -> WorkItem | None:
        """End the attempt ``completed``.  With ``claim_for`` (a worker id) the same
        round trip claims that worker's next task, which is returned (as
        :meth:`claim_work` does).  ``output`` is the last of what the attempt printed
        (``output_bytes`` in all), stored with the task when not empty."""
        summary = self.redact(json.dumps(result, ensure_ascii=False, default=str))[:4000] \
            if result else ""
        token = new_token()
        _, nxt = await self._claiming(
            "complete",
            [self.keys.task(task.task_id)],
            [task.task_id, task.lease_token, int(records), summary, self._retention,
             self.redact(checkpoint), *self._output_args(output, output_bytes),
             *self._claim_args(claim_for, token, work=True)],
            claim_for, token,
        )
        return _work_or_none(nxt, token)

    async def fail(
        self,
        task: Leased,
        error_type: str,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after_seconds: float | None = None,
        records: int = 0,
        checkpoint: str = "",
        claim_for: str | None = None,
        output: str = "",
        output_bytes: int = 0,
    ) -> FailOutcome:
        """A failed attempt: retry later (backoff) or fail for good.  ``claim_for`` and
        ``output`` as in :meth:`complete`."""
        retry = is_retryable(error_type) if retryable is None else retryable
        token = new_token()
        status, at, attempt, nxt = await self._claiming(
            "fail",
            [self.keys.task(task.task_id)],
            [
                task.task_id,
                task.lease_token,
                error_type,
                bound_message(self.redact(message)),
                "1" if retry else "0",
                int(self.settings.retry_base_seconds * 1000),
                int(self.settings.retry_max_seconds * 1000),
                repr(self._rng()),
                int((retry_after_seconds or 0) * 1000),
                self._retention,
                int(records),
                self.redact(checkpoint),
                *self._output_args(output, output_bytes),
                *self._claim_args(claim_for, token, work=True),
            ],
            claim_for, token,
        )
        return FailOutcome(TaskStatus(status), int(attempt), int(at) or None,
                           _work_or_none(nxt, token))

    async def acknowledge_cancel(self, task: Leased, *, output: str = "",
                                 output_bytes: int = 0) -> None:
        await self.run(
            "acknowledge_cancel",
            [self.keys.task(task.task_id)],
            [task.task_id, task.lease_token, self._retention,
             *self._output_args(output, output_bytes)],
        )

    async def requeue(self, task: Leased, reason: str = "requeued at shutdown", *,
                      checkpoint: str = "", output: str = "", output_bytes: int = 0) -> None:
        """Give a running task back without consuming an attempt."""
        await self.run(
            "requeue", [self.keys.task(task.task_id)],
            [task.task_id, task.lease_token, self.redact(reason), self.redact(checkpoint),
             *self._output_args(output, output_bytes)],
        )

    def _output_args(self, output: str, output_bytes: int) -> list[Any]:
        """An attempt's output as the finishing scripts take it: masked (again: the
        worker masked the stream already) and no longer than the stored maximum."""
        if not output or self.settings.task_output_bytes <= 0:
            return ["", 0]
        text = self.redact(output)
        data = text.encode("utf-8", "replace")
        if len(data) > self.settings.task_output_bytes:
            text = data[-self.settings.task_output_bytes:].decode("utf-8", "ignore")
        return [text, max(int(output_bytes), len(data))]

    async def renew(self, leases: Mapping[str, str]) -> RenewOutcome:
        """Extend leases (task id -> lease token) in one call."""
        if not leases:
            return RenewOutcome([], [])
        args: list[Any] = [int(self.settings.lease_seconds * 1000)]
        for tid, token in leases.items():
            args += [tid, token]
        lost, cancels = await self.run("renew", [], args)
        return RenewOutcome([str(x) for x in lost], [str(x) for x in cancels])

    # ------------------------------------------------------------ maintenance
    async def reap(self, limit: int = 100) -> list[tuple[str, str]]:
        """Requeue (or fail) tasks whose lease expired: [(task_id, outcome), ...]."""
        flat = await self.run("reap", [], [limit, self._retention])
        reaped = list(zip(flat[::2], flat[1::2], strict=True))
        for task_id, outcome in reaped:
            self.log.warning("task.worker_lost", task_id=task_id, outcome=outcome)
        return reaped

    async def promote(self, limit: int = 1000) -> int:
        """Move retrying tasks whose backoff elapsed back to their queue (claims do
        this too; this is for maintenance loops when nobody claims)."""
        return int(await self.run("promote", [], [limit]))

    async def cleanup(self, limit: int = 1000) -> tuple[int, int]:
        """Retention: delete ended tasks older than the retention window."""
        cutoff = self.now_ms() - int(self.settings.retention_seconds * 1000)
        tasks, execs = await self.run("cleanup", [], [cutoff, limit])
        if tasks or execs:
            self.log.info("retention.cleaned", tasks=int(tasks), executions=int(execs))
        return int(tasks), int(execs)

    async def heartbeat(self, worker_id: str, info: Mapping[str, Any], *, ttl: float,
                        scheduler: bool = False, role: str = "worker") -> int:
        """Publish a supervisor's (or a scheduler's, or a sidecar's: ``role``) heartbeat;
        returns the number of live ones of its role."""
        fields = {k: str(v) for k, v in info.items()}
        return int(await self.run("heartbeat", self._beat_keys(
            worker_id, "scheduler" if scheduler else role),
            [worker_id, max(1, int(ttl)), json.dumps(fields)]))

    async def remove_worker(self, worker_id: str, *, scheduler: bool = False,
                            role: str = "worker") -> None:
        await self.run("heartbeat", self._beat_keys(worker_id, "scheduler" if scheduler
                                                    else role), [worker_id, 0, "{}"])

    def _beat_keys(self, member: str, role: str) -> list[str]:
        if role == "scheduler":
            return [self.keys.scheduler(member), self.keys.schedulers]
        if role == "api":
            return [self.keys.api(member), self.keys.apis]
        return [self.keys.worker(member), self.keys.workers]

    # ------------------------------------------------------------ reads
    async def get(self, task_id: str) -> Task:
        raw = await self._scripts.command("HGETALL", self.keys.task(task_id))
        if not raw:
            raise TaskNotFound(task_id)
        if isinstance(raw, list):  # the script connection answers RESP2 pairs
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        return Task.from_hash(raw)
