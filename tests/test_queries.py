"""Reads: filtered, paged task lists (newest first) and queue stats."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from app import queries
from app.errors import ExecutionNotFound, InvalidInput
from app.executions import BatchTask, create_execution
from app.models import TaskSpec, TaskStatus
from app.queries import MAX_PAGE, Page, list_tasks, queue_stats
from app.queue import TaskQueue
from tests.conftest import FakeClock


def spec(plugin: str = "noop", **kw: object) -> TaskSpec:
    return TaskSpec.build(plugin, **kw)  # type: ignore[arg-type]


async def page_all(queue: TaskQueue, limit: int, **filters: str) -> list[list[str]]:
    """Every page of a listing, following next_cursor until it is None."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page: Page = await list_tasks(queue, limit=limit, cursor=cursor, **filters)
        pages.append([t.task_id for t in page.items])
        assert len(pages) < 10_000, "paging does not end"
        if page.next_cursor is None:
            return pages
        assert page.next_cursor != cursor, "cursor did not move"
        cursor = page.next_cursor


def flat(pages: list[list[str]]) -> list[str]:
    return [tid for page in pages for tid in page]


async def make_mix(queue: TaskQueue, clock: FakeClock) -> dict[str, list[str]]:
    """Tasks of two plugins in every status, one clock step apart."""
    made: dict[str, list[str]] = {}

    async def add(name: str, plugin: str) -> str:
        clock.advance(1)
        n = sum(len(v) for v in made.values())  # distinct work: no deduplication
        tid, created = await queue.enqueue(spec(plugin, params={"n": n}, max_attempts=2))
        assert created
        made.setdefault(name, []).append(tid)
        return tid

    for plugin in ("daily", "adj"):
        for name in ("completed", "failed", "retrying", "running", "cancelled"):
            tid = await add(name, plugin)
            t = await queue.claim("w")
            assert t is not None and t.task_id == tid
            if name == "completed":
                await queue.complete(t)
            elif name == "failed":
                await queue.fail(t, "config_error", "no token")
            elif name == "retrying":
                await queue.fail(t, "rate_limit", "quota", retry_after_seconds=3600)
            elif name == "cancelled":
                await queue.cancel(t.task_id)
                await queue.acknowledge_cancel(t)
    for plugin in ("daily", "adj"):
        await add("pending", plugin)
        await add("pending", plugin)
    return made


async def test_list_by_status_plugin_and_both(queue: TaskQueue, clock: FakeClock) -> None:
    made = await make_mix(queue, clock)
    everything = await list_tasks(queue, limit=MAX_PAGE)
    assert len(everything.items) == 14 and everything.next_cursor is None
    created = [t.created_at for t in everything.items]
    assert created == sorted(created, reverse=True)  # newest first (distinct ms here)

    for status in ("pending", "running", "retrying", "completed", "failed", "cancelled"):
        page = await list_tasks(queue, status=status)
        assert {t.task_id for t in page.items} == set(made[status])
        assert all(t.status == status for t in page.items)
        assert page.next_cursor is None

    daily = await list_tasks(queue, plugin="daily")
    assert len(daily.items) == 7 and {t.plugin_name for t in daily.items} == {"daily"}
    assert [t.task_id for t in daily.items] == [
        t.task_id for t in everything.items if t.plugin_name == "daily"]
    assert (await list_tasks(queue, plugin="nope")).items == []

    both = await list_tasks(queue, status="pending", plugin="adj")
    assert [t.task_id for t in both.items] == made["pending"][:1:-1]  # adj's two, newest first
    assert all(t.plugin_name == "adj" and t.status == TaskStatus.PENDING for t in both.items)
    both = await list_tasks(queue, status="failed", plugin="daily")
    assert [t.task_id for t in both.items] == made["failed"][:1]


async def test_list_by_execution(queue: TaskQueue) -> None:
    eid, ids = await create_execution(
        queue, [BatchTask(spec("daily", params={"n": i})) for i in range(3)]
        + [BatchTask(spec("adj", params={"n": i})) for i in range(3)]
    )
    other, _ = await create_execution(queue, [BatchTask(spec("daily", params={"n": 9}))])
    t = await queue.claim("w")
    assert t is not None and t.task_id == ids[0]
    await queue.complete(t)

    page = await list_tasks(queue, execution_id=eid)
    assert [x.task_id for x in page.items] == ids  # submission order
    page = await list_tasks(queue, execution_id=eid, plugin="adj")
    assert [x.task_id for x in page.items] == ids[3:]
    page = await list_tasks(queue, execution_id=eid, status="completed")
    assert [x.task_id for x in page.items] == ids[:1]
    page = await list_tasks(queue, execution_id=eid, status="pending", plugin="daily")
    assert [x.task_id for x in page.items] == ids[1:3]
    # paging an execution: the cursor is a position in its task list
    pages = await page_all(queue, 4, execution_id=eid)
    assert flat(pages) == ids and pages[0] == ids[:4]
    assert len((await list_tasks(queue, execution_id=other)).items) == 1
    with pytest.raises(ExecutionNotFound):
        await list_tasks(queue, execution_id="no-such-execution")


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
async def test_paging_visits_every_task_once_newest_first(
    queue: TaskQueue, clock: FakeClock, limit: int
) -> None:
    ids = []
    for n in range(23):
        clock.advance(1)  # distinct milliseconds (float steps of 0.001 s can collide)
        ids.append((await queue.enqueue(spec(params={"n": n})))[0])
    pages = await page_all(queue, limit)
    assert flat(pages) == ids[::-1]
    assert all(len(p) == limit for p in pages[:-1]) and len(pages[-1]) <= limit
    assert flat(await page_all(queue, limit, plugin="noop")) == ids[::-1]
    assert flat(await page_all(queue, limit, status="pending")) == ids[::-1]


async def test_paging_many_tasks_with_the_same_score(
    queue: TaskQueue, clock: FakeClock
) -> None:
    # 60 enqueued at one millisecond, then 2,500 created in one call (one millisecond)
    same = [(await queue.enqueue(spec(params={"n": n})))[0] for n in range(60)]
    clock.advance(1)
    _, batch = await create_execution(
        queue, [BatchTask(spec(params={"b": n})) for n in range(2_500)]
    )
    clock.advance(1)
    newest = (await queue.enqueue(spec(params={"n": "last"})))[0]

    for limit, filters in ((7, {}), (50, {}), (500, {}), (50, {"plugin": "noop"}),
                           (50, {"status": "pending"}), (50, {"status": "pending",
                                                              "plugin": "noop"})):
        seen = flat(await page_all(queue, limit, **filters))
        assert len(seen) == len(set(seen)) == 2_561, (limit, filters)
        assert seen[0] == newest
        assert set(seen[1:2_501]) == set(batch)  # newer millisecond first
        assert set(seen[2_501:]) == set(same)


async def test_paging_pending_while_the_cursor_task_leaves_the_index(
    queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cursor's own task leaves the status index between pages (here: cancelled),
    so the next page cannot find it by rank and must skip the ties it already returned
    by reading them: that must still make progress however large the tie is."""
    monkeypatch.setattr(queries, "_SCAN_BUDGET", 2)  # 2 batches of 50 per page
    _, ids = await create_execution(queue, [BatchTask(spec(params={"n": n}))
                                            for n in range(300)])
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        page = await list_tasks(queue, status="pending", limit=10, cursor=cursor)
        seen += [t.task_id for t in page.items]
        if page.next_cursor is None:
            break
        assert page.items and page.next_cursor != cursor
        cursor = page.next_cursor
        await queue.cancel(page.items[-1].task_id)
    assert len(seen) == len(set(seen)) == 300 and set(seen) == set(ids)


async def test_paging_while_tasks_end(queue: TaskQueue, clock: FakeClock) -> None:
    """Tasks that change status between pages are neither repeated nor skipped in the
    all-tasks index (its score is the creation time)."""
    ids = []
    for n in range(10):
        clock.advance(1)  # distinct milliseconds (float steps of 0.001 s can collide)
        ids.append((await queue.enqueue(spec(params={"n": n})))[0])
    first = await list_tasks(queue, limit=4)
    t = await queue.claim("w")
    assert t is not None
    await queue.complete(t)
    clock.advance(1)
    ids.append((await queue.enqueue(spec(params={"n": "new"})))[0])  # newer than the cursor
    rest = flat(await page_all_from(queue, 4, first.next_cursor))
    assert [x.task_id for x in first.items] + rest == ids[9::-1]


async def page_all_from(queue: TaskQueue, limit: int, cursor: str | None) -> list[list[str]]:
    pages = []
    while cursor is not None:
        page = await list_tasks(queue, limit=limit, cursor=cursor)
        pages.append([t.task_id for t in page.items])
        cursor = page.next_cursor
    return pages


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": "bogus"},
        {"status": "PENDING"},
        {"limit": 0},
        {"limit": -1},
        {"limit": MAX_PAGE + 1},
        {"cursor": "abc"},
        {"cursor": "abc:def"},
        {"cursor": "nan:x"},
        {"cursor": "abc", "execution_id": "e"},
        {"cursor": "1.5", "execution_id": "e"},
        {"cursor": "-1", "execution_id": "e"},
        {"limit": 0, "execution_id": "e"},
    ],
)
async def test_invalid_input(queue: TaskQueue, kwargs: dict[str, object]) -> None:
    if "execution_id" in kwargs:
        await create_execution(queue, [BatchTask(spec())], execution_id="e")
    with pytest.raises(InvalidInput):
        await list_tasks(queue, **kwargs)  # type: ignore[arg-type]


async def test_queue_stats(queue: TaskQueue, client: aioredis.Redis, clock: FakeClock) -> None:
    empty = await queue_stats(queue)
    assert empty.ready == {0: 0, 1: 0, 2: 0} and empty.delayed == empty.running == 0
    assert set(empty.by_status.values()) == {0} and empty.counters == {}

    for n, prio in enumerate(("high", "high", "normal", "normal", "normal", "low")):
        await queue.enqueue(spec(params={"n": n}, priority=prio))
    await create_execution(queue, [BatchTask(spec("adj", params={"n": 9})),
                                   BatchTask(spec("adj"), (0,))])
    running = await queue.claim("w")  # a high one
    retrying = await queue.claim("w")  # the other high one
    done = await queue.claim("w")  # a normal one
    assert running and retrying and done
    await queue.fail(retrying, "network", "down")
    await queue.complete(done)

    stats = await queue_stats(queue)
    assert stats.ready == {0: 0, 1: 3, 2: 1}  # 2 normal + the execution's ready task; 1 low
    assert stats.delayed == 1 and stats.running == 1 and stats.leased == 1
    assert stats.by_status == {"pending": 5, "running": 1, "retrying": 1, "completed": 1,
                               "failed": 0, "cancelled": 0}
    assert stats.executions == 1
    assert stats.counters == {"enqueued": 8, "completed": 1, "completed:noop": 1,
                              "retried": 1, "retried:noop": 1,
                              # both attempts ended at the stepped clock's instant
                              "duration_bucket:0.1": 2,
                              "duration_sum_ms": 0}
    d = stats.to_dict()
    assert d["ready"] == {"0": 0, "1": 3, "2": 1} and d["ready_total"] == 4

    clock.advance(60)  # the backoff is over: the next claim promotes it
    again = await queue.claim("w")
    assert again is not None and again.task_id == retrying.task_id
    await queue.fail(again, "config_error", "no token")
    stats = await queue_stats(queue)
    assert stats.delayed == 0 and stats.running == 1
    assert stats.by_status["failed"] == 1 and stats.by_status["retrying"] == 0
    assert stats.counters["failed"] == 1 and stats.counters["failed:noop"] == 1
