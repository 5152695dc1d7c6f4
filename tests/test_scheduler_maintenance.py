"""The scheduler daemon keeps the queue's maintenance going when no worker pool runs:
due retries go back to their queue, expired leases are reaped, and its heartbeat is
published (and removed at stop).  A real redis-server, a stepped clock."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from app.models import TaskSpec, TaskStatus
from app.queue import TaskQueue
from app.scheduler.daemon import HEARTBEAT_SECONDS, SchedulerDaemon
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry
from tests.conftest import FakeClock

PLUGINS = "tests.schedule_plugins:PLUGINS"
PENDING = "stock:task_queue:1"  # the normal-priority queue
DELAYED = "stock:delayed"
LEASES = "stock:leases"
RUNNING = "stock:running_tasks"


@pytest.fixture
def sched_settings(settings: Settings) -> Settings:
    return replace(settings, plugins=(PLUGINS,))


@pytest.fixture
async def daemon(sched_settings: Settings, clock: FakeClock
                 ) -> AsyncIterator[SchedulerDaemon]:
    registry = PluginRegistry.load(sched_settings.plugins, use_entry_points=False)
    d = SchedulerDaemon(sched_settings, registry, clock=clock)
    await d.start()
    # the background loop steps on the FakeClock, which only the test moves; push every
    # due time out of reach so that each maintenance pass here is the test's own call
    d._due = dict.fromkeys(d._due, math.inf)
    try:
        yield d
    finally:
        await d.stop()


def spec(n: int = 1) -> TaskSpec:
    return TaskSpec.build("noop", params={"n": n})


async def test_due_retry_is_moved_back_to_pending(
        daemon: SchedulerDaemon, queue: TaskQueue, client: aioredis.Redis,
        clock: FakeClock) -> None:
    tid, _ = await queue.enqueue(spec())
    task = await queue.claim("w-gone")
    assert task is not None and task.task_id == tid
    out = await queue.fail(task, "network", "connection reset")
    assert out.status == TaskStatus.RETRYING
    assert out.next_run_at_ms is not None and out.next_run_at_ms > clock.now * 1000
    assert await client.zscore(DELAYED, tid) == out.next_run_at_ms

    await daemon._maintain()  # the backoff has not elapsed yet
    assert (await queue.get(tid)).status == TaskStatus.RETRYING
    assert await client.lrange(PENDING, 0, -1) == []

    clock.now = out.next_run_at_ms / 1000 + 0.001
    await daemon._maintain()
    back = await queue.get(tid)
    assert back.status == TaskStatus.PENDING and back.attempt == 1
    assert back.last_error_type == "network"
    assert await client.zscore(DELAYED, tid) is None
    assert await client.lrange(PENDING, 0, -1) == [tid]

    await daemon._maintain()  # again: nothing more to do
    assert (await queue.get(tid)).status == TaskStatus.PENDING
    assert await client.lrange(PENDING, 0, -1) == [tid]
    assert await client.zcard(DELAYED) == 0

    again = await queue.claim("w-next")
    assert again is not None and again.task_id == tid and again.attempt == 2


async def test_expired_lease_is_reaped(
        daemon: SchedulerDaemon, queue: TaskQueue, client: aioredis.Redis,
        clock: FakeClock, sched_settings: Settings) -> None:
    tid, _ = await queue.enqueue(spec())
    task = await queue.claim("w-gone")
    assert task is not None
    assert await client.sismember(RUNNING, tid)

    clock.advance(sched_settings.lease_seconds - 1)  # still leased
    await daemon._maintain()
    assert (await queue.get(tid)).status == TaskStatus.RUNNING

    clock.advance(2)  # the lease ran out and nobody renewed it
    with capture_logs() as logs:
        await daemon._maintain()
    back = await queue.get(tid)
    assert back.status == TaskStatus.PENDING and back.last_error_type == "worker_lost"
    assert not await client.sismember(RUNNING, tid)
    assert await client.zscore(LEASES, tid) is None
    assert await client.lrange(PENDING, 0, -1) == [tid]
    [lost] = [e for e in logs if e["event"] == "task.worker_lost"]
    assert lost["task_id"] == tid and lost["outcome"] == "requeued"

    with capture_logs() as logs:
        await daemon._maintain()  # idempotent: no second reap, no second stat
    assert not [e for e in logs if e["event"] == "task.worker_lost"]
    assert (await queue.get(tid)).status == TaskStatus.PENDING
    assert await client.lrange(PENDING, 0, -1) == [tid]
    assert await client.hget("stock:stats", "worker_lost") == "1"
    claimed = await queue.claim("w-next")
    assert claimed is not None and claimed.task_id == tid and claimed.attempt == 2


async def test_maintenance_with_nothing_to_do(daemon: SchedulerDaemon, queue: TaskQueue,
                                              client: aioredis.Redis) -> None:
    tid, _ = await queue.enqueue(spec())
    await daemon._maintain()
    await daemon._maintain()
    assert (await queue.get(tid)).status == TaskStatus.PENDING
    assert await client.lrange(PENDING, 0, -1) == [tid]


async def test_heartbeat_is_published_and_removed_at_stop(
        sched_settings: Settings, client: aioredis.Redis, clock: FakeClock) -> None:
    registry = PluginRegistry.load(sched_settings.plugins, use_entry_points=False)
    daemon = SchedulerDaemon(sched_settings, registry, clock=clock)
    key = f"stock:scheduler:{daemon.id}"
    await daemon.start()
    try:
        daemon._due = dict.fromkeys(daemon._due, math.inf)
        assert await client.zscore("stock:schedulers", daemon.id) == int(clock.now * 1000)
        beat = await client.hgetall(key)
        assert beat["worker_id"] == daemon.id
        assert beat["jobs"] == "2" and beat["timezone"] == "Asia/Shanghai"
        assert beat["pid"].isdigit() and beat["host"] and beat["started_at"]
        ttl = await client.ttl(key)
        assert 0 < ttl <= HEARTBEAT_SECONDS * 3
        # workers are a separate registry
        assert await client.zscore("stock:workers", daemon.id) is None

        clock.advance(7)
        await daemon._beat()
        assert await client.zscore("stock:schedulers", daemon.id) == int(clock.now * 1000)
    finally:
        await daemon.stop()
    assert await client.zscore("stock:schedulers", daemon.id) is None
    assert await client.exists(key) == 0


async def test_start_registers_jobs_and_logs_the_offline_calendar(
        sched_settings: Settings, client: aioredis.Redis, clock: FakeClock) -> None:
    registry = PluginRegistry.load(sched_settings.plugins, use_entry_points=False)
    daemon = SchedulerDaemon(sched_settings, registry, clock=clock)
    with capture_logs() as logs:
        await daemon.start()
        daemon._due = dict.fromkeys(daemon._due, math.inf)
        await daemon.stop()
    names = [e["event"] for e in logs]
    assert names.index("scheduler.started") < names.index("scheduler.stopped")
    [fallback] = [e for e in logs if e["event"] == "calendar.fallback"]
    assert "TUSHARE_TOKEN" in str(fallback["reason"])
    [started] = [e for e in logs if e["event"] == "scheduler.started"]
    assert [j["name"] for j in started["jobs"]] == ["daily_sync", "plugin:report"]
    for job in ("daily_sync", "plugin:report"):
        assert float(await client.hget(f"stock:schedule:{job}", "since")) == clock.now
    assert started["jobs"][0] == {"name": "daily_sync", "trigger": "0 18 * * 1-5",
                                  "plugins": ["bars", "indicators"]}
