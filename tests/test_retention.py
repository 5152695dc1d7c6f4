"""Retention: cleanup() removes ended tasks older than the window with all their index
entries, keeps active tasks, and copes with hashes that expired on their own."""

from __future__ import annotations

import redis.asyncio as aioredis

from app.executions import BatchTask, create_execution
from app.models import TaskSpec, TaskStatus
from app.queries import list_tasks
from app.queue import TaskQueue
from app.settings import Settings
from tests.conftest import FakeClock


def spec(plugin: str = "noop", **kw: object) -> TaskSpec:
    return TaskSpec.build(plugin, **kw)  # type: ignore[arg-type]


async def run_one(queue: TaskQueue, outcome: str) -> str:
    t = await queue.claim("w")
    assert t is not None
    if outcome == "completed":
        await queue.complete(t)
    else:
        await queue.fail(t, "config_error", "no token")
    return t.task_id


async def indexed(client: aioredis.Redis, tid: str) -> set[str]:
    """The index zsets that still hold ``tid``."""
    found = set()
    for key in await client.keys("stock:index:*"):
        if await client.type(key) == "zset" and await client.zscore(key, tid) is not None:
            found.add(key)
    return found


async def test_cleanup_removes_old_ended_tasks_and_keeps_active_ones(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    # the old pending task is low priority, so the high priority ones are claimed first
    old_pending, _ = await queue.enqueue(spec("other", priority="low"))
    await queue.enqueue(spec(params={"n": 1}, priority="high"))
    await queue.enqueue(spec(params={"n": 2}, priority="high"))
    cancelled, _ = await queue.enqueue(spec(params={"n": 3}, priority="high"))
    completed = await run_one(queue, "completed")
    failed = await run_one(queue, "failed")
    await queue.cancel(cancelled)
    for tid in (completed, failed, cancelled):
        assert len(await indexed(client, tid)) == 3  # all, plugin, its status

    clock.advance(settings.retention_seconds - 1)
    assert await queue.cleanup() == (0, 0)  # not old enough yet
    young, _ = await queue.enqueue(spec(params={"n": 4}))
    young_done = await run_one(queue, "completed")
    assert young_done == young

    clock.advance(2)
    assert await queue.cleanup() == (3, 0)
    for tid in (completed, failed, cancelled):
        assert not await client.exists(f"stock:task:{tid}", f"stock:task:{tid}:dependents")
        assert await indexed(client, tid) == set()
    # an active task stays however old it is; a recently ended one stays too
    assert (await queue.get(old_pending)).status == TaskStatus.PENDING
    assert await indexed(client, old_pending) == {
        "stock:index:all", "stock:index:plugin:other", "stock:index:status:pending"}
    assert await client.lrange("stock:task_queue:2", 0, -1) == [old_pending]  # type: ignore[misc]
    assert (await queue.get(young)).status == TaskStatus.COMPLETED
    assert len(await indexed(client, young)) == 3
    assert await queue.cleanup() == (0, 0)

    clock.advance(settings.retention_seconds)
    assert await queue.cleanup() == (1, 0)
    assert await client.zrange("stock:index:all", 0, -1) == [old_pending]
    claimed = await queue.claim("w")
    assert claimed is not None and claimed.task_id == old_pending


async def test_cleanup_keeps_old_pending_running_and_retrying(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    pending, _ = await queue.enqueue(spec(params={"n": 1}))
    running_id, _ = await queue.enqueue(spec(params={"n": 2}))
    retrying_id, _ = await queue.enqueue(spec(params={"n": 3}, priority="high"))
    t = await queue.claim("w")
    assert t is not None and t.task_id == retrying_id
    await queue.fail(t, "network", "down")
    await client.lrem("stock:task_queue:1", 0, pending)  # type: ignore[misc]
    t = await queue.claim("w")
    assert t is not None and t.task_id == running_id
    await client.lpush("stock:task_queue:1", pending)  # type: ignore[misc]

    clock.advance(settings.retention_seconds * 3)
    assert await queue.cleanup() == (0, 0)
    statuses = {tid: (await queue.get(tid)).status for tid in (pending, running_id, retrying_id)}
    assert statuses == {pending: TaskStatus.PENDING, running_id: TaskStatus.RUNNING,
                        retrying_id: TaskStatus.RETRYING}
    for tid in statuses:
        assert "stock:index:all" in await indexed(client, tid)


async def test_cleanup_of_an_already_expired_hash(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    await queue.enqueue(spec("daily", params={"n": 1}))
    await queue.enqueue(spec("adj", params={"n": 2}))
    gone = await run_one(queue, "completed")
    kept = await run_one(queue, "failed")
    await client.delete(f"stock:task:{gone}")  # its TTL ran out before cleanup came
    assert await indexed(client, gone) == {
        "stock:index:all", "stock:index:plugin:daily", "stock:index:status:completed"}

    clock.advance(settings.retention_seconds + 1)
    assert await queue.cleanup() == (2, 0)
    assert await indexed(client, gone) == set()
    assert await indexed(client, kept) == set()
    assert not await client.exists(f"stock:task:{kept}")
    assert await client.keys("stock:index:*") == ["stock:index:plugins"]
    assert await client.smembers("stock:index:plugins") == {"daily", "adj"}


async def test_cleanup_respects_the_limit(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    for n in range(5):
        await queue.enqueue(spec(params={"n": n}))
        await run_one(queue, "completed")
    clock.advance(settings.retention_seconds + 1)
    assert await queue.cleanup(limit=2) == (2, 0)
    assert await client.zcard("stock:index:status:completed") == 3
    assert await queue.cleanup(limit=2) == (2, 0)
    assert await queue.cleanup(limit=2) == (1, 0)
    assert await client.zcard("stock:index:all") == 0


async def test_cleanup_drops_expired_executions(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    eid, (a,) = await create_execution(queue, [BatchTask(spec())])
    live, _ = await create_execution(queue, [BatchTask(spec(params={"n": 1}))])
    await run_one(queue, "completed")
    clock.advance(settings.retention_seconds + 1)
    await client.delete(f"stock:execution:{eid}")  # expired
    assert await queue.cleanup() == (1, 1)
    assert await client.zrange("stock:index:executions", 0, -1) == [live]
    assert not await client.exists(f"stock:execution:{eid}:tasks")
    assert not await client.exists(f"stock:task:{a}")
    assert await client.exists(f"stock:execution:{live}", f"stock:execution:{live}:tasks") == 2


async def test_list_tasks_drops_dead_ids_lazily(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    ids = [(await queue.enqueue(spec(params={"n": n})))[0] for n in range(4)]
    dead = ids[1:3]
    for tid in dead:
        await client.delete(f"stock:task:{tid}")
    # the index still names them until a read passes by
    assert await client.zcard("stock:index:all") == 4
    page = await list_tasks(queue)
    assert {t.task_id for t in page.items} == {ids[0], ids[3]}
    assert page.next_cursor is None
    assert set(await client.zrange("stock:index:all", 0, -1)) == {ids[0], ids[3]}
    # other indexes are cleaned when they are read
    assert await client.zcard("stock:index:plugin:noop") == 4
    page = await list_tasks(queue, plugin="noop")
    assert {t.task_id for t in page.items} == {ids[0], ids[3]}
    assert await client.zcard("stock:index:plugin:noop") == 2
    page = await list_tasks(queue, status="pending", limit=1)
    assert len(page.items) == 1 and page.next_cursor is not None
    rest = await list_tasks(queue, status="pending", limit=1, cursor=page.next_cursor)
    assert {page.items[0].task_id, rest.items[0].task_id} == {ids[0], ids[3]}
    assert await client.zcard("stock:index:status:pending") == 2
