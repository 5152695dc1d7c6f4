"""Exactly which Redis keys remain once work has ended (in the spirit of arq's
test_remain_keys): no dedup key, lease, running set, queue, delayed entry, status
index of a passing state or dependents set may linger."""

from __future__ import annotations

import redis.asyncio as aioredis

from app.executions import BatchTask, cancel_execution, create_execution
from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from tests.conftest import FakeClock

# What every ended task leaves behind besides its own hash and its status index.
SHARED = {
    "stock:index:all",
    "stock:index:plugin:noop",
    "stock:index:plugins",
    "stock:stats",
    "stock:doorbell",  # nobody listened: the tokens stay (trimmed to 1000)
}
# The audit outbox: a row per attempt end (and per execution end), until flushed.
OUTBOX = {"stock:audit:tasks"}
OUTBOX_EXECUTIONS = OUTBOX | {"stock:audit:executions"}


def spec(**kw: object) -> TaskSpec:
    return TaskSpec.build("noop", **kw)  # type: ignore[arg-type]


async def keys(client: aioredis.Redis) -> set[str]:
    return set(await client.keys("*"))


async def assert_ended_hash(client: aioredis.Redis, settings: Settings, tid: str) -> None:
    ttl = await client.ttl(f"stock:task:{tid}")
    assert 0 < ttl <= settings.retention_seconds


async def test_keys_left_after_complete(queue: TaskQueue, client: aioredis.Redis,
                                        settings: Settings) -> None:
    tid, _ = await queue.enqueue(spec(trade_dates=["20240102"]))
    assert await keys(client) == SHARED | {
        f"stock:task:{tid}",
        "stock:task_queue:1",
        "stock:index:status:pending",
        f"stock:dedup:{spec(trade_dates=['20240102']).dedup_digest()}",
    }
    t = await queue.claim("w")
    assert t is not None
    assert await keys(client) == SHARED | {
        f"stock:task:{tid}",
        "stock:index:status:running",
        "stock:running_tasks",
        "stock:leases",
        f"stock:dedup:{spec(trade_dates=['20240102']).dedup_digest()}",
    }
    assert await client.ttl(f"stock:task:{tid}") == -1  # no TTL while active
    await queue.complete(t, records=3)
    assert await keys(client) == SHARED | OUTBOX | {f"stock:task:{tid}",
                                                    "stock:index:status:completed"}
    await assert_ended_hash(client, settings, tid)
    for k in SHARED:
        assert await client.ttl(k) == -1  # shared structures never expire
    assert await client.hgetall("stock:stats") == {  # type: ignore[misc]
        "enqueued": "1", "completed": "1", "completed:noop": "1",
        "duration_bucket:0.1": "1", "duration_sum_ms": "0"}


async def test_keys_left_after_dependent_execution_completes(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings
) -> None:
    eid, (a, b) = await create_execution(
        queue, [BatchTask(spec(params={"n": 1})), BatchTask(spec(params={"n": 2}), (0,))]
    )
    assert await client.hget(f"stock:task:{a}", "dependents") == b
    ta = await queue.claim("w")
    assert ta is not None and ta.task_id == a
    await queue.complete(ta)
    tb = await queue.claim("w")
    assert tb is not None and tb.task_id == b
    await queue.complete(tb)
    assert await keys(client) == SHARED | OUTBOX_EXECUTIONS | {
        f"stock:task:{a}",
        f"stock:task:{b}",
        "stock:index:status:completed",
        f"stock:execution:{eid}",
        f"stock:execution:{eid}:tasks",
        "stock:index:executions",
    }
    for tid in (a, b):
        await assert_ended_hash(client, settings, tid)
        assert not await client.hexists(f"stock:task:{tid}", "waiting")
        assert not await client.hexists(f"stock:task:{tid}", "dependents")
    for k in (f"stock:execution:{eid}", f"stock:execution:{eid}:tasks"):
        assert 0 < await client.ttl(k) <= settings.retention_seconds


async def test_keys_left_after_failing_for_good(queue: TaskQueue, client: aioredis.Redis,
                                                settings: Settings, clock: FakeClock) -> None:
    tid, _ = await queue.enqueue(spec(max_attempts=2))
    t = await queue.claim("w")
    assert t is not None
    out = await queue.fail(t, "network", "down")
    assert "stock:delayed" in await keys(client)
    assert "stock:index:status:retrying" in await keys(client)
    clock.advance((out.next_run_at_ms or 0) / 1000 - clock.now)
    t = await queue.claim("w")
    assert t is not None and t.attempt == 2
    await queue.fail(t, "network", "still down")
    assert await keys(client) == SHARED | OUTBOX | {f"stock:task:{tid}",
                                                    "stock:index:status:failed"}
    await assert_ended_hash(client, settings, tid)


async def test_keys_left_after_non_retryable_failure_in_execution(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    eid, (a, b) = await create_execution(
        queue, [BatchTask(spec(params={"n": 1})), BatchTask(spec(params={"n": 2}), (0,))]
    )
    t = await queue.claim("w")
    assert t is not None
    await queue.fail(t, "config_error", "no token")
    assert await keys(client) == SHARED | OUTBOX_EXECUTIONS | {
        f"stock:task:{a}",
        f"stock:task:{b}",
        "stock:index:status:failed",
        "stock:index:status:cancelled",
        f"stock:execution:{eid}",
        f"stock:execution:{eid}:tasks",
        "stock:index:executions",
    }


async def test_keys_left_after_cancel(queue: TaskQueue, client: aioredis.Redis,
                                      settings: Settings) -> None:
    pending, _ = await queue.enqueue(spec(params={"n": 1}))
    running, _ = await queue.enqueue(spec(params={"n": 2}))
    assert await queue.cancel(pending) == "cancelled"
    t = await queue.claim("w")
    assert t is not None and t.task_id == running
    assert await queue.cancel(running) == "cancel_requested"
    await queue.acknowledge_cancel(t)
    assert await keys(client) == SHARED | OUTBOX | {
        f"stock:task:{pending}",
        f"stock:task:{running}",
        "stock:index:status:cancelled",
    }
    for tid in (pending, running):
        await assert_ended_hash(client, settings, tid)
        h = await client.hgetall(f"stock:task:{tid}")  # type: ignore[misc]
        assert "lease_token" not in h and "cancel_requested" not in h


async def test_keys_left_after_cancelling_an_execution(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    eid, ids = await create_execution(
        queue, [BatchTask(spec(params={"n": 1})), BatchTask(spec(params={"n": 2}), (0,))]
    )
    await cancel_execution(queue, eid)
    assert await keys(client) == SHARED | OUTBOX_EXECUTIONS | {
        *(f"stock:task:{tid}" for tid in ids),
        "stock:index:status:cancelled",
        f"stock:execution:{eid}",
        f"stock:execution:{eid}:tasks",
        "stock:index:executions",
    }


async def test_output_is_fields_of_the_task_not_a_key(queue: TaskQueue, client: aioredis.Redis,
                                                      settings: Settings,
                                                      clock: FakeClock) -> None:
    """An attempt's output (its last bytes, how much it printed, which attempt) is
    written into the task hash by the script that ends the attempt, cut to
    ``task_output_bytes``; a later attempt that printed nothing removes it."""
    tid, _ = await queue.enqueue(spec(max_attempts=2))
    t = await queue.claim("w")
    assert t is not None
    printed = "x" * 30_000 + "\nlast line\n"
    out = await queue.fail(t, "network", "down", output=printed, output_bytes=5_000_000)
    h = await client.hgetall(f"stock:task:{tid}")  # type: ignore[misc]
    assert h["output"].endswith("\nlast line\n")
    assert len(h["output"].encode()) == settings.task_output_bytes
    assert h["output_bytes"] == "5000000" and h["output_attempt"] == "1"
    assert (await queue.get(tid)).output_attempt == 1
    clock.advance((out.next_run_at_ms or 0) / 1000 - clock.now)
    t = await queue.claim("w")
    assert t is not None and t.attempt == 2
    await queue.complete(t, records=1)  # printed nothing
    assert await keys(client) == SHARED | OUTBOX | {f"stock:task:{tid}",
                                                    "stock:index:status:completed"}
    h = await client.hgetall(f"stock:task:{tid}")  # type: ignore[misc]
    assert not {"output", "output_bytes", "output_attempt"} & set(h)
    await assert_ended_hash(client, settings, tid)


async def test_keys_left_by_schedule_and_group_edits_and_a_deleted_execution(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    """Schedule edits and groups made at run time are one hash each; deleting an ended
    execution leaves nothing of it but its tasks."""
    from app import groups
    from app.executions import delete_execution
    from app.scheduler import overrides
    from plugins_bridge.examples import EXAMPLES
    from plugins_bridge.registry import PluginRegistry

    await overrides.update(queue, enabled=False, daily_sync_cron="0 9 * * 1-5",
                           plugins={"noop": {"schedule_enabled": False, "data_source": "x"}})
    made = await groups.create_group(queue, PluginRegistry(EXAMPLES), name="mine",
                                     plugin_names=["noop"])
    assert await keys(client) == {"stock:schedule_settings", "stock:groups"}
    await groups.delete_group(queue, PluginRegistry(EXAMPLES), made.group_id)
    assert await keys(client) == {"stock:schedule_settings"}
    for key in await keys(client):
        assert await client.ttl(key) == -1  # edits never expire

    eid, (tid,) = await create_execution(queue, [BatchTask(spec())])
    await cancel_execution(queue, eid)
    await delete_execution(queue, eid)
    assert await keys(client) == SHARED | OUTBOX_EXECUTIONS | {
        "stock:schedule_settings", f"stock:task:{tid}", "stock:index:status:cancelled"}
