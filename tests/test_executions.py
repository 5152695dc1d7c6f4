"""Executions: batches of tasks with dependencies, counters, retry and cancel."""

from __future__ import annotations

import dataclasses
import json

import pytest
import redis.asyncio as aioredis

from app.errors import (
    DependencyCycle,
    ExecutionNotFound,
    IllegalTransition,
    InvalidInput,
    StockqError,
)
from app.executions import (
    BatchTask,
    cancel_execution,
    create_execution,
    delete_execution,
    retry_execution,
)
from app.models import Execution, ExecutionStatus, Task, TaskSpec, TaskStatus
from app.queries import get_execution, list_tasks
from app.queue import TaskQueue
from app.settings import Settings
from tests.conftest import FakeClock


def spec(plugin: str = "noop", **kw: object) -> TaskSpec:
    return TaskSpec.build(plugin, **kw)  # type: ignore[arg-type]


def bt(plugin: str = "noop", *deps: int, **kw: object) -> BatchTask:
    return BatchTask(spec(plugin, **kw), depends_on=tuple(deps))


async def ready_ids(client: aioredis.Redis) -> set[str]:
    out: set[str] = set()
    for p in (0, 1, 2):
        out.update(await client.lrange(f"stock:task_queue:{p}", 0, -1))  # type: ignore[misc]
    return out


async def claim_one(queue: TaskQueue, expected: str | None = None) -> Task:
    t = await queue.claim("w")
    assert t is not None
    if expected is not None:
        assert t.task_id == expected
    return t


async def execution(queue: TaskQueue, eid: str) -> Execution:
    return await get_execution(queue, eid)


def counters(e: Execution) -> tuple[int, int, int, int]:
    return e.total, e.completed, e.failed, e.cancelled


async def test_create_without_dependencies(queue: TaskQueue, client: aioredis.Redis) -> None:
    eid, ids = await create_execution(
        queue, [bt("a", params={"n": 1}), bt("b"), bt("c", priority="high")],
        trigger_type="schedule", group_name="daily", date_range="20240101-20240131",
    )
    assert len(ids) == len(set(ids)) == 3
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.PENDING and e.schema == 1
    assert counters(e) == (3, 0, 0, 0)
    assert e.trigger_type == "schedule" and e.group_name == "daily"
    assert e.date_range == "20240101-20240131" and e.plugins == ["a", "b", "c"]
    assert await client.lrange(f"stock:execution:{eid}:tasks", 0, -1) == ids  # type: ignore[misc]
    assert await client.zscore("stock:index:executions", eid) is not None
    for tid in ids:
        t = await queue.get(tid)
        assert t.status == TaskStatus.PENDING and t.execution_id == eid
        assert t.waiting_on == 0 and t.depends_on == []
    assert await ready_ids(client) == set(ids)
    assert await client.lrange("stock:task_queue:0", 0, -1) == [ids[2]]  # type: ignore[misc]
    # claimable at once, priority first, then submission order
    assert [(await claim_one(queue)).task_id for _ in ids] == [ids[2], ids[0], ids[1]]
    assert await queue.claim("w") is None


async def test_dependent_waits_until_its_dependencies_complete(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    # c depends on a and b (b is listed after c: indexes may point forwards)
    eid, (a, c, b) = await create_execution(queue, [bt("a"), bt("c", 0, 2), bt("b")])
    tc = await queue.get(c)
    assert tc.status == TaskStatus.PENDING and tc.waiting_on == 2
    assert sorted(tc.depends_on) == sorted([a, b])
    assert c not in await ready_ids(client)
    # who waits for a task is written in its hash (schema 2), with no key of its own
    assert await client.hget(f"stock:task:{a}", "dependents") == c
    assert await client.hget(f"stock:task:{b}", "dependents") == c
    assert await client.hget(f"stock:task:{a}", "schema") == "2"
    assert await client.keys("*:dependents") == []

    ta = await claim_one(queue, a)
    tb = await claim_one(queue, b)
    assert await queue.claim("w") is None  # c is still waiting

    await queue.complete(ta)
    assert (await queue.get(c)).waiting_on == 1
    assert c not in await ready_ids(client)
    assert await queue.claim("w") is None
    assert not await client.hexists(f"stock:task:{a}", "dependents")

    await queue.complete(tb)
    released = await queue.get(c)
    assert released.status == TaskStatus.PENDING and released.waiting_on == 0
    assert await ready_ids(client) == {c}
    tc = await claim_one(queue, c)
    await queue.complete(tc)
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.COMPLETED and counters(e) == (3, 3, 0, 0)


async def test_status_pending_running_completed(queue: TaskQueue, clock: FakeClock) -> None:
    eid, (a, b) = await create_execution(queue, [bt("a"), bt("b", 0)])
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.PENDING and e.started_at is None
    assert e.completed_at is None and e.pending == 2

    clock.advance(5)
    ta = await claim_one(queue, a)
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.RUNNING
    assert e.started_at is not None and e.started_at.timestamp() == pytest.approx(clock.now)
    await queue.complete(ta)
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.RUNNING and counters(e) == (2, 1, 0, 0)
    assert e.pending == 1

    clock.advance(5)
    tb = await claim_one(queue, b)
    clock.advance(5)
    await queue.complete(tb)
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.COMPLETED and counters(e) == (2, 2, 0, 0)
    assert e.pending == 0
    assert e.completed_at is not None and e.completed_at.timestamp() == pytest.approx(clock.now)


async def test_chain_head_fails_for_good_cancels_dependents(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    eid, (a, b, c) = await create_execution(
        queue, [bt("a", max_attempts=1), bt("b", 0), bt("c", 1)]
    )
    ta = await claim_one(queue, a)
    out = await queue.fail(ta, "network", "down")
    assert out.status == TaskStatus.FAILED
    assert (await queue.get(a)).status == TaskStatus.FAILED
    for tid, upstream in ((b, a), (c, b)):
        t = await queue.get(tid)
        assert t.status == TaskStatus.CANCELLED
        assert t.last_error_type == "upstream_failed"
        assert upstream in t.error_message
        assert t.completed_at is not None and t.waiting_on == 0
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.FAILED
    assert counters(e) == (3, 0, 1, 2) and e.pending == 0
    assert await queue.claim("w") is None
    assert await ready_ids(client) == set()
    assert await client.hget("stock:stats", "failed") == "1"
    assert await client.hget("stock:stats", "cancelled") == "2"


async def test_failure_in_one_branch_leaves_the_other_running(queue: TaskQueue) -> None:
    # a -> b, and an independent c; a fails, so the execution fails once c ends
    eid, (a, b, c) = await create_execution(
        queue, [bt("a", max_attempts=1), bt("b", 0), bt("c")]
    )
    ta = await claim_one(queue, a)
    tc = await claim_one(queue, c)
    await queue.fail(ta, "bad_params", "wrong")
    assert (await queue.get(b)).status == TaskStatus.CANCELLED
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.RUNNING and counters(e) == (3, 0, 1, 1)
    await queue.complete(tc)
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.FAILED and counters(e) == (3, 1, 1, 1)


async def test_retry_then_success_counts_only_as_completed(
    queue: TaskQueue, clock: FakeClock
) -> None:
    eid, (a, b) = await create_execution(queue, [bt("a", max_attempts=3), bt("b", 0)])
    ta = await claim_one(queue, a)
    out = await queue.fail(ta, "network", "blip")
    assert out.status == TaskStatus.RETRYING
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.RUNNING and counters(e) == (2, 0, 0, 0)
    assert (await queue.get(b)).status == TaskStatus.PENDING  # not cancelled by a retry
    assert out.next_run_at_ms == int(clock.now * 1000) + 5_000  # rng pinned to 0
    clock.advance(4)
    assert await queue.claim("w") is None  # still backing off
    clock.advance(1)
    ta = await claim_one(queue, a)
    assert ta.attempt == 2
    await queue.complete(ta)
    e = await execution(queue, eid)
    assert counters(e) == (2, 1, 0, 0)
    await queue.complete(await claim_one(queue, b))
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.COMPLETED and counters(e) == (2, 2, 0, 0)


async def test_retry_execution_keeps_dependencies_and_reopens(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    # ok completes; a fails for good; b -> a and c -> b are cancelled upstream_failed
    eid, (ok, a, b, c) = await create_execution(
        queue, [bt("ok"), bt("a", 0, max_attempts=1, params={"x": 1}), bt("b", 1), bt("c", 2)]
    )
    await queue.complete(await claim_one(queue, ok))
    await queue.fail(await claim_one(queue, a), "network", "down")
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.FAILED and counters(e) == (4, 1, 1, 2)

    new_ids = await retry_execution(queue, eid)
    assert len(new_ids) == 3 and not set(new_ids) & {ok, a, b, c}
    news = {(await queue.get(n)).retry_of: await queue.get(n) for n in new_ids}
    assert set(news) == {a, b, c}
    na, nb, nc = news[a], news[b], news[c]
    for old, new in ((a, na), (b, nb), (c, nc)):
        assert new.execution_id == eid and new.status == TaskStatus.PENDING
        assert new.trigger == "retry" and new.attempt == 0
        assert (await queue.get(old)).retried_by == new.task_id
    assert na.params == {"x": 1} and na.depends_on == [] and na.waiting_on == 0
    assert nb.depends_on == [na.task_id] and nb.waiting_on == 1
    assert nc.depends_on == [nb.task_id] and nc.waiting_on == 1
    # the spec of the old task is copied as is, with no made-up fields
    raw = await client.hgetall(f"stock:task:{na.task_id}")  # type: ignore[misc]
    assert "false" not in raw.values()
    assert nb.start_date == "" and nb.params == {}

    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.RUNNING and e.completed_at is None
    assert counters(e) == (4, 1, 0, 0)
    assert await client.ttl(f"stock:execution:{eid}") == -1
    assert await client.ttl(f"stock:execution:{eid}:tasks") == -1
    tasks_list = await client.lrange(f"stock:execution:{eid}:tasks", 0, -1)  # type: ignore[misc]
    assert tasks_list[:4] == [ok, a, b, c] and sorted(tasks_list[4:]) == sorted(new_ids)

    # dependents wait again: only the new a is ready
    assert await ready_ids(client) == {na.task_id}
    t = await claim_one(queue, na.task_id)
    assert await queue.claim("w") is None
    await queue.complete(t)
    await queue.complete(await claim_one(queue, nb.task_id))
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.RUNNING and counters(e) == (4, 3, 0, 0)
    await queue.complete(await claim_one(queue, nc.task_id))
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.COMPLETED and counters(e) == (4, 4, 0, 0)
    assert await client.ttl(f"stock:execution:{eid}") > 0

    with pytest.raises(IllegalTransition, match="no failed tasks"):
        await retry_execution(queue, eid)


async def test_retry_execution_can_fail_again(queue: TaskQueue) -> None:
    eid, (a, b) = await create_execution(queue, [bt("a", max_attempts=1), bt("b", 0)])
    await queue.fail(await claim_one(queue, a), "network", "down")
    na, nb = await retry_execution(queue, eid)
    await queue.fail(await claim_one(queue, na), "network", "down again")
    assert (await queue.get(nb)).last_error_type == "upstream_failed"
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.FAILED and counters(e) == (2, 0, 1, 1)
    # the old tasks were already retried: only the new ones are retried now
    again = await retry_execution(queue, eid)
    assert {(await queue.get(t)).retry_of for t in again} == {na, nb}


async def test_cancel_execution(queue: TaskQueue, client: aioredis.Redis) -> None:
    # a running, b waits for a, c pending and ready, d already completed
    eid, (d, a, b, c) = await create_execution(queue, [bt("d"), bt("a"), bt("b", 1), bt("c")])
    await queue.complete(await claim_one(queue, d))
    ta = await claim_one(queue, a)
    counts = await cancel_execution(queue, eid)
    # each task is counted once: d had ended, a is running, b (waiting) and c are pending
    assert counts == {"cancelled": 2, "cancel_requested": 1, "already_ended": 1}
    assert (await queue.get(a)).cancel_requested
    assert (await queue.get(b)).status == TaskStatus.CANCELLED
    assert (await queue.get(c)).status == TaskStatus.CANCELLED
    assert await ready_ids(client) == set()
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.RUNNING and counters(e) == (4, 1, 0, 2)

    await queue.acknowledge_cancel(ta)
    assert (await queue.get(a)).status == TaskStatus.CANCELLED
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.CANCELLED and counters(e) == (4, 1, 0, 3)
    with pytest.raises(IllegalTransition, match="no active task"):
        await cancel_execution(queue, eid)


async def test_cancel_execution_cascades_to_waiting_dependents(queue: TaskQueue) -> None:
    eid, (a, b, c) = await create_execution(queue, [bt("a"), bt("b", 0), bt("c", 1)])
    counts = await cancel_execution(queue, eid)
    # a is cancelled; b and c end with it (upstream) before their own turn comes
    assert counts == {"cancelled": 1, "cancel_requested": 0, "already_ended": 2}
    assert (await queue.get(a)).last_error_type == "cancelled"
    assert (await queue.get(b)).last_error_type == "upstream_failed"
    assert (await queue.get(c)).last_error_type == "upstream_failed"
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.CANCELLED and counters(e) == (3, 0, 0, 3)


async def test_dependency_cycle_names_the_plugins(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    with pytest.raises(DependencyCycle) as err:
        await create_execution(queue, [bt("daily", 2), bt("free"), bt("adj", 3), bt("basic", 0)])
    assert err.value.cycle == ["daily", "adj", "basic", "daily"]
    assert "daily -> adj -> basic -> daily" in str(err.value)
    assert isinstance(err.value, InvalidInput)
    assert await client.keys("*") == []


@pytest.mark.parametrize("deps", [(5,), (-1,), (0,)])
async def test_bad_dependency_index(queue: TaskQueue, client: aioredis.Redis,
                                    deps: tuple[int, ...]) -> None:
    # index out of range, negative, or the task itself (index 0 is the task here)
    with pytest.raises(InvalidInput, match="depends on"):
        await create_execution(queue, [BatchTask(spec("a"), depends_on=deps), bt("b")])
    assert await client.keys("*") == []


async def test_empty_execution(queue: TaskQueue, client: aioredis.Redis) -> None:
    with pytest.raises(InvalidInput, match="at least one task"):
        await create_execution(queue, [])
    assert await client.keys("*") == []


async def test_execution_over_the_limit_writes_nothing(
    client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    small = dataclasses.replace(settings, max_execution_tasks=5)
    q = TaskQueue(client, small, clock=clock, rng=lambda: 0.0)
    with pytest.raises(InvalidInput, match="at most 5 tasks"):
        await create_execution(q, [bt(params={"n": i}) for i in range(6)])
    assert await client.keys("*") == []
    eid, ids = await create_execution(q, [bt(params={"n": i}) for i in range(5)])
    assert len(ids) == 5 and (await get_execution(q, eid)).total == 5
    await q.aclose()


async def test_fan_out_and_fan_in_dependents_in_one_field(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    # root <- x, y, z (in submission order); x, y <- join
    eid, (root, x, y, z, join) = await create_execution(
        queue, [bt("root"), bt("x", 0), bt("y", 0), bt("z", 0), bt("join", 1, 2)])
    assert await client.hget(f"stock:task:{root}", "dependents") == f"{x},{y},{z}"
    assert await client.hget(f"stock:task:{x}", "dependents") == join
    await queue.complete(await claim_one(queue, root))
    assert await ready_ids(client) == {x, y, z}
    for tid in (x, y, z):
        await queue.complete(await claim_one(queue, tid))
    await queue.complete(await claim_one(queue, join))
    assert (await execution(queue, eid)).status == ExecutionStatus.COMPLETED


async def test_a_dependency_outside_the_batch_is_refused_before_any_write(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    # create_execution.lua's own check, for a payload not built by create_execution
    keys = [queue.keys.execution("e1"), queue.keys.execution_tasks("e1")]
    meta = json.dumps({"execution_id": "e1"})
    with pytest.raises(StockqError, match="not a task of this execution"):
        await queue.run("create_execution", keys, [
            meta, json.dumps([["noop", "1"]]), json.dumps([1, 2]),
            "t1", "", "", "", "t2", "", "", "1", '["elsewhere"]', "elsewhere"])
    assert await client.keys("*") == []


async def test_a_schema_1_dependents_set_still_releases_its_waiters(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    # tasks written before dependents moved into the hash: a set per upstream task
    eid, (a, b) = await create_execution(queue, [bt("a"), bt("b", 0)])
    await client.hset(f"stock:task:{a}", "schema", "1")  # type: ignore[misc]
    await client.hdel(f"stock:task:{a}", "dependents")  # type: ignore[misc]
    await client.sadd(f"stock:task:{a}:dependents", b)  # type: ignore[misc]
    await queue.complete(await claim_one(queue, a))
    assert not await client.exists(f"stock:task:{a}:dependents")
    assert await ready_ids(client) == {b}
    await queue.complete(await claim_one(queue, b))
    assert (await execution(queue, eid)).status == ExecutionStatus.COMPLETED
    # and a failure reaches them too
    eid2, (c, d) = await create_execution(queue, [bt("c", max_attempts=1), bt("d", 0)])
    await client.hset(f"stock:task:{c}", "schema", "1")  # type: ignore[misc]
    await client.hdel(f"stock:task:{c}", "dependents")  # type: ignore[misc]
    await client.sadd(f"stock:task:{c}:dependents", d)  # type: ignore[misc]
    await queue.fail(await claim_one(queue, c), "config_error", "no token")
    td = await queue.get(d)
    assert td.status == TaskStatus.CANCELLED and td.last_error_type == "upstream_failed"
    assert not await client.exists(f"stock:task:{c}:dependents")
    assert (await execution(queue, eid2)).status == ExecutionStatus.FAILED


async def test_duplicate_dependency_indexes_count_once(queue: TaskQueue) -> None:
    eid, (a, b) = await create_execution(queue, [bt("a"), BatchTask(spec("b"), (0, 0))])
    assert (await queue.get(b)).waiting_on == 1
    await queue.complete(await claim_one(queue, a))
    await queue.complete(await claim_one(queue, b))
    assert (await execution(queue, eid)).status == ExecutionStatus.COMPLETED


async def test_ten_thousand_tasks_in_one_call(queue: TaskQueue, client: aioredis.Redis) -> None:
    n = 10_000
    eid, ids = await create_execution(queue, [bt(params={"n": i}) for i in range(n)])
    assert len(set(ids)) == n
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.PENDING and counters(e) == (n, 0, 0, 0)
    assert await client.llen("stock:task_queue:1") == n  # type: ignore[misc]
    assert await client.llen(f"stock:execution:{eid}:tasks") == n  # type: ignore[misc]
    assert await client.zcard("stock:index:status:pending") == n
    assert await client.hget("stock:stats", "enqueued") == str(n)
    assert json.loads(await client.hget(f"stock:execution:{eid}", "plugins") or "") == ["noop"]

    done = [await claim_one(queue, ids[i]) for i in range(3)]
    for t in done:
        await queue.complete(t)
    failing = await claim_one(queue, ids[3])
    await queue.fail(failing, "config_error", "no token")
    e = await execution(queue, eid)
    assert e.status == ExecutionStatus.RUNNING
    assert counters(e) == (n, 3, 1, 0) and e.pending == n - 4
    page = await list_tasks(queue, execution_id=eid, status="completed", limit=10)
    assert {t.task_id for t in page.items} == set(ids[:3])


async def test_retry_execution_skips_what_a_user_cancelled(queue: TaskQueue) -> None:
    # a fails; the user cancels b, so c (waiting on b) ends upstream_failed
    eid, (a, b, c) = await create_execution(
        queue, [bt("a", max_attempts=1), bt("b"), bt("c", 1)]
    )
    await queue.fail(await claim_one(queue, a), "network", "down")
    await queue.cancel(b)
    assert (await queue.get(c)).last_error_type == "upstream_failed"
    new = await retry_execution(queue, eid)
    assert [(await queue.get(t)).retry_of for t in new] == [a]  # not c: b never ran


async def test_delete_an_ended_execution(queue: TaskQueue, client: aioredis.Redis) -> None:
    """Only an ended execution can be deleted: its hash, task list and index entry go,
    its tasks stay, and a retry of one of them starts no execution."""
    eid, (a, b) = await create_execution(queue, [BatchTask(TaskSpec.build("noop",
                                                                          params={"n": 1})),
                                                 BatchTask(TaskSpec.build("noop",
                                                                          params={"n": 2}))])
    with pytest.raises(IllegalTransition, match="is pending; stop it first"):
        await delete_execution(queue, eid)
    await cancel_execution(queue, eid)
    await delete_execution(queue, eid)
    assert not await client.exists(f"stock:execution:{eid}", f"stock:execution:{eid}:tasks")
    assert await client.zscore("stock:index:executions", eid) is None
    kept = await queue.get(a)
    assert kept.status == TaskStatus.CANCELLED and kept.execution_id == eid
    new = await queue.get(await queue.retry(b))
    assert new.execution_id == "" and new.retry_of == b
    with pytest.raises(ExecutionNotFound, match=f"execution '{eid}' does not exist"):
        await delete_execution(queue, eid)
    with pytest.raises(ExecutionNotFound):
        await get_execution(queue, eid)
