"""Numbered pages of tasks with a total, sorted by creation, start or end (what a table
with page numbers needs; the cursor pages of :mod:`app.queries` are for scripts).

Unfiltered and newest (or oldest) first by creation, a page is read by rank from
``stock:index:all``: O(log n + page size), and the total is exact.  Filtered (by
status, or by a plugin name that contains a text, in any case) or sorted by start or
end time, the page is chosen among the newest :data:`SCAN_CAP` tasks of the narrowest
index (the status index, the matching plugins' indexes, or all tasks): their sort
fields are read in one pipelined round trip, filtered and sorted in the sidecar.  The
total then counts those, and ``capped`` says that older tasks were not considered (as
the original list read its newest 5,000 tasks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import InvalidInput
from app.models import Task
from app.models import _when as stored_time
from app.queries import check_status, get_many
from app.queue import TaskQueue
from app.redis_client import redis_errors

SCAN_CAP = 5000
SORTS = ("created_at", "started_at", "completed_at")
_FIELDS = ("status", "plugin_name", "created_at", "started_at", "completed_at")
_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True)
class NumberedPage:
    items: list[Task]
    total: int
    capped: bool = False


async def task_page(queue: TaskQueue, *, page: int = 1, page_size: int = 20,
                    status: str | None = None, plugin_contains: str | None = None,
                    sort_by: str = "created_at", descending: bool = True) -> NumberedPage:
    """Page ``page`` (from 1) of ``page_size`` tasks, with the total over all pages."""
    if page < 1 or not 1 <= page_size <= 500:
        raise InvalidInput("page must be at least 1 and page_size between 1 and 500")
    if sort_by not in SORTS:
        raise InvalidInput(f"sort_by {sort_by!r} must be one of {', '.join(SORTS)}")
    check_status(status)
    start = (page - 1) * page_size
    with redis_errors(queue.settings):
        if not status and not plugin_contains and sort_by == "created_at":
            return await _by_rank(queue, start, page_size, descending)
        ids, capped = await _candidates(queue, status, plugin_contains)
        rows = await _sort_fields(queue, ids)
    text = (plugin_contains or "").lower()
    chosen = [(tid, row) for tid, row in zip(ids, rows, strict=True)
              if row[0] is not None and (not status or row[0] == status)
              and (not text or text in (row[1] or "").lower())]
    column = 2 + SORTS.index(sort_by)
    chosen.sort(key=lambda item: (stored_time(item[1][column]) or _OLDEST,
                                  stored_time(item[1][2]) or _OLDEST), reverse=descending)
    wanted = [tid for tid, _ in chosen[start:start + page_size]]
    tasks = [t for t in await get_many(queue, wanted) if t is not None]
    return NumberedPage(tasks, len(chosen), capped)


async def _by_rank(queue: TaskQueue, start: int, size: int, descending: bool) -> NumberedPage:
    index = queue.keys.all_index
    async with queue.client.pipeline(transaction=False) as pipe:
        pipe.zcard(index)
        if descending:
            pipe.zrevrange(index, start, start + size - 1)
        else:
            pipe.zrange(index, start, start + size - 1)
        total, ids = await pipe.execute()
    found = await get_many(queue, ids)
    dead = [tid for tid, task in zip(ids, found, strict=True) if task is None]
    if dead:  # expired hashes: drop them from the index as we pass
        await queue.client.zrem(index, *dead)
    return NumberedPage([t for t in found if t is not None], max(0, int(total) - len(dead)))


async def _candidates(queue: TaskQueue, status: str | None,
                      plugin_contains: str | None) -> tuple[list[str], bool]:
    """The newest SCAN_CAP ids of the narrowest index, and whether there were more."""
    keys = queue.keys
    if status:
        indexes = [keys.status_index(status)]
    elif plugin_contains:
        text = plugin_contains.lower()
        names = sorted(n for n in await queue.client.smembers(keys.plugin_names)  # type: ignore[misc]
                       if text in n.lower())
        indexes = [keys.plugin_index(n) for n in names]
    else:
        indexes = [keys.all_index]
    if not indexes:
        return [], False
    async with queue.client.pipeline(transaction=False) as pipe:
        for index in indexes:
            pipe.zcard(index)
            pipe.zrevrange(index, 0, SCAN_CAP - 1, withscores=True)
        answers = await pipe.execute()
    sizes = answers[0::2]
    members: list[tuple[str, float]] = [m for part in answers[1::2] for m in part]
    if len(indexes) > 1:
        members.sort(key=lambda m: m[1], reverse=True)
    return [m[0] for m in members[:SCAN_CAP]], sum(int(n) for n in sizes) > SCAN_CAP


async def _sort_fields(queue: TaskQueue, ids: Sequence[str]) -> list[list[str | None]]:
    async with queue.client.pipeline(transaction=False) as pipe:
        for tid in ids:
            pipe.hmget(queue.keys.task(tid), list(_FIELDS))
        rows: list[list[str | None]] = await pipe.execute()
    return rows
