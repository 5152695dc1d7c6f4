"""Reads: tasks by id, paged lists from the indexes (never SCAN), queue stats.

Pages are newest first.  A cursor is ``"<score>:<id>"`` of the last item returned; ids
whose hash has expired are dropped from the index as they are met.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.errors import ExecutionNotFound, InvalidInput
from app.keys import PRIORITIES
from app.liveness import parked as parked_routes
from app.models import Execution, ExecutionStatus, Task, TaskStatus
from app.queue import TaskQueue
from app.redis_client import redis_errors

MAX_PAGE = 500
_SCAN_BUDGET = 20  # batches read for one filtered page before returning a cursor


T = TypeVar("T")


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(slots=True)
class QueueStats:
    ready: dict[int, int]
    delayed: int
    running: int
    leased: int
    by_status: dict[str, int]
    executions: int
    counters: dict[str, int] = field(default_factory=dict)
    # pending tasks parked for a worker that can run them, by route (queue:plugin)
    parked: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready": {str(p): n for p, n in self.ready.items()},
            "ready_total": sum(self.ready.values()),
            "delayed": self.delayed,
            "running": self.running,
            "leased": self.leased,
            "by_status": self.by_status,
            "executions": self.executions,
            "counters": self.counters,
            "parked": self.parked,
            "parked_total": sum(self.parked.values()),
        }


def _parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    score, sep, member = cursor.partition(":")
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # Redis rejects nan; no cursor we hand out is infinite
        raise InvalidInput(f"cursor {cursor!r} is malformed")
    return value, member


async def _hashes(queue: TaskQueue, keys: Iterable[str]) -> list[Any]:
    """The hashes at ``keys`` in one pipelined round trip ({} where none is)."""
    with redis_errors(queue.settings):
        async with queue.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            return list(await pipe.execute())


async def get_many(queue: TaskQueue, task_ids: Sequence[str]) -> list[Task | None]:
    raw = await _hashes(queue, (queue.keys.task(tid) for tid in task_ids))
    return [Task.from_hash(h) if h else None for h in raw]


async def get_executions(queue: TaskQueue, ids: Sequence[str]) -> list[Execution | None]:
    raw = await _hashes(queue, (queue.keys.execution(eid) for eid in ids))
    return [Execution.from_hash(h) if h else None for h in raw]


def check_status(status: str | None) -> None:
    """InvalidInput unless ``status`` is None or a task status."""
    if status is not None:
        try:
            TaskStatus(status)
        except ValueError:
            names = ", ".join(s.value for s in TaskStatus)
            raise InvalidInput(f"status {status!r} must be one of {names}") from None


async def list_tasks(
    queue: TaskQueue,
    *,
    status: str | None = None,
    plugin: str | None = None,
    execution_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> Page[Task]:
    """A page of tasks filtered by status, plugin and/or execution, and by time
    (``since_ms`` inclusive, ``until_ms`` exclusive): the time a task was created, or,
    with ``status``, the time it entered that status (the index's score)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    check_status(status)
    if execution_id:
        if since_ms is not None or until_ms is not None:
            raise InvalidInput("since and until cannot be combined with execution_id (an "
                               "execution's tasks are created together)")
        return await _list_execution(queue, execution_id, status, plugin, limit, cursor)
    keys = queue.keys
    if status:
        index = keys.status_index(status)
    elif plugin:
        index = keys.plugin_index(plugin)
    else:
        index = keys.all_index

    def keep(t: Task) -> bool:
        return (not plugin or t.plugin_name == plugin) and (not status or t.status == status)

    return await _page_index(queue, index, limit, _parse_cursor(cursor), keep, get_many,
                             low="-inf" if since_ms is None else str(since_ms),
                             high="+inf" if until_ms is None else f"({until_ms}")


async def list_executions(
    queue: TaskQueue,
    *,
    status: str | Collection[str] | None = None,
    trigger_types: Collection[str] = (),
    group: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Execution]:
    """A page of executions, newest first (by creation), filtered by status (one, or
    any of several), trigger type (any of ``trigger_types``), group name and creation
    time (``since_ms`` inclusive, ``until_ms`` exclusive), from the execution index."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    statuses = frozenset([status] if isinstance(status, str) else status or ())
    for one in statuses:
        try:
            ExecutionStatus(one)
        except ValueError:
            names = ", ".join(s.value for s in ExecutionStatus)
            raise InvalidInput(f"status {one!r} must be one of {names}") from None
    wanted = frozenset(trigger_types)

    def keep(e: Execution) -> bool:
        return ((not statuses or e.status in statuses)
                and (not wanted or e.trigger_type in wanted)
                and (group is None or e.group_name == group))

    return await _page_index(
        queue, queue.keys.execution_index, limit, _parse_cursor(cursor), keep, get_executions,
        low="-inf" if since_ms is None else str(since_ms),
        high="+inf" if until_ms is None else f"({until_ms}")


async def _skip_to_cursor(queue: TaskQueue, index: str, after: tuple[float, str]) -> int:
    """How many members with the cursor's score come before it or are it (newest first),
    so they are skipped by position instead of read: thousands of tasks created in one
    millisecond share a score.  0 when the cursor's member left the index (then the
    page filters them out as it reads)."""
    async with queue.client.pipeline(transaction=True) as pipe:
        pipe.zscore(index, after[1])
        pipe.zrevrank(index, after[1])
        pipe.zcount(index, f"({after[0]!r}", "+inf")
        score, rank, above = await pipe.execute()
    if score is None or rank is None or float(score) != after[0]:
        return 0
    return int(rank) - int(above) + 1


async def _page_index(queue: TaskQueue, index: str, limit: int,
                      after: tuple[float, str] | None, keep: Callable[[T], bool],
                      fetch: Callable[[TaskQueue, Sequence[str]], Awaitable[list[T | None]]],
                      *, low: str = "-inf", high: str = "+inf") -> Page[T]:
    """Members of ``index`` newest first, read with ``fetch`` (None: the hash expired,
    so the member is dropped from the index), those ``keep`` accepts, ``limit`` of them
    (or what ``_SCAN_BUDGET`` batches found) with the cursor after the last one read."""
    items: list[T] = []
    max_score = high if after is None else repr(after[0])
    offset = 0
    batch = max(limit * 2, 50)
    last = after
    budget = _SCAN_BUDGET
    with redis_errors(queue.settings):
        if after is not None:
            offset = await _skip_to_cursor(queue, index, after)
        while budget > 0:
            rows = await queue.client.zrevrangebyscore(
                index, max_score, low, start=offset, num=batch, withscores=True
            )
            exhausted = len(rows) < batch
            offset += len(rows)
            if after is not None:
                rows = [r for r in rows if not (r[1] == after[0] and r[0] >= after[1])]
            if rows:
                # a batch made only of ties before the cursor is not work done for this
                # page: charging it would let a large tie return no item and no progress
                budget -= 1
            found = await fetch(queue, [r[0] for r in rows])
            dead = [r[0] for r, t in zip(rows, found, strict=True) if t is None]
            if dead:  # expired hashes: drop them from the index as we pass
                await queue.client.zrem(index, *dead)
                offset -= len(dead)
            for (member, score), item in zip(rows, found, strict=True):
                last = (score, member)
                if item is not None and keep(item):
                    items.append(item)
                    if len(items) == limit:
                        return Page(items, f"{score!r}:{member}")
            if exhausted:
                return Page(items, None)
    return Page(items, f"{last[0]!r}:{last[1]}" if last else None)


async def _list_execution(queue: TaskQueue, execution_id: str, status: str | None,
                          plugin: str | None, limit: int, cursor: str | None) -> Page[Task]:
    try:
        start = int(cursor) if cursor else 0
    except ValueError:
        start = -1
    if start < 0:
        raise InvalidInput(f"cursor {cursor!r} is malformed")
    key = queue.keys.execution_tasks(execution_id)
    items: list[Task] = []
    with redis_errors(queue.settings):
        if not await queue.client.exists(queue.keys.execution(execution_id)):
            raise ExecutionNotFound(execution_id)
        pos = start
        for _ in range(_SCAN_BUDGET):
            ids = await queue.client.lrange(key, pos, pos + max(limit * 2, 50) - 1)  # type: ignore[misc]
            if not ids:
                return Page(items, None)
            for task in await get_many(queue, ids):
                pos += 1
                if task is None:
                    continue
                if (status and task.status != status) or (plugin and task.plugin_name != plugin):
                    continue
                items.append(task)
                if len(items) == limit:
                    return Page(items, str(pos))
    return Page(items, str(pos))


async def get_execution(queue: TaskQueue, execution_id: str) -> Execution:
    with redis_errors(queue.settings):
        raw = await queue.client.hgetall(queue.keys.execution(execution_id))  # type: ignore[misc]
    if not raw:
        raise ExecutionNotFound(execution_id)
    return Execution.from_hash(raw)


async def execution_task_ids(queue: TaskQueue, execution: Execution) -> list[str]:
    """All task ids of an execution (the original format kept them as JSON)."""
    if execution.legacy_task_ids and not execution.schema:
        return [str(x) for x in execution.legacy_task_ids]
    with redis_errors(queue.settings):
        ids = await queue.client.lrange(  # type: ignore[misc]
            queue.keys.execution_tasks(execution.execution_id), 0, -1
        )
    return [str(x) for x in ids]


async def queue_stats(queue: TaskQueue) -> QueueStats:
    """Depths and counts in one pipelined round trip: O(1) whatever the backlog."""
    k = queue.keys
    statuses = [s.value for s in TaskStatus]
    with redis_errors(queue.settings):
        async with queue.client.pipeline(transaction=False) as pipe:
            for p in PRIORITIES:
                pipe.llen(k.queue(p))
            pipe.zcard(k.delayed)
            pipe.scard(k.running)
            pipe.zcard(k.leases)
            for s in statuses:
                pipe.zcard(k.status_index(s))
            pipe.zcard(k.execution_index)
            pipe.hgetall(k.stats)
            res = await pipe.execute()
    n = len(PRIORITIES)
    counters = {str(key): int(v) for key, v in (res[-1] or {}).items()}
    return QueueStats(
        ready={p: int(res[i]) for i, p in enumerate(PRIORITIES)},
        delayed=int(res[n]),
        running=int(res[n + 1]),
        leased=int(res[n + 2]),
        by_status={s: int(res[n + 3 + i]) for i, s in enumerate(statuses)},
        executions=int(res[-2]),
        counters=counters,
        parked=await parked_routes(queue),
    )
