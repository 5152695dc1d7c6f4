"""Hashes and queue entries written by the original TaskQueue keep working."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest
import redis.asyncio as aioredis

from app.models import Execution, ExecutionStatus, Priority, Task, TaskStatus
from app.queries import execution_task_ids, get_execution, list_tasks
from app.queue import TaskQueue
from app.settings import Settings
from tests.conftest import FakeClock


def legacy_task(task_id: str, plugin: str = "tushare_daily", **over: object) -> dict[str, object]:
    """A task hash exactly as the original TaskQueue wrote it."""
    now = datetime.now().isoformat()  # naive local time, as the original did
    fields: dict[str, object] = {
        "task_id": task_id,
        "plugin_name": plugin,
        "task_type": "incremental",
        "trade_dates": json.dumps(["20240102", "20240103"]),
        "status": "pending",
        "progress": 0,
        "records_processed": 0,
        "error_message": "",
        "created_at": now,
        "updated_at": now,
        "started_at": "",
        "completed_at": "",
        "execution_id": "",
        "user_id": "",
        "username": "",
        "priority": 1,
        "attempt": 0,
        "max_attempts": 3,
        "next_run_at": "",
        "last_error_type": "",
        "timeout_seconds": 3600,
        "deadline_at": "",
    }
    fields.update(over)
    return fields


async def push_legacy(client: aioredis.Redis, task_id: str, **over: object) -> None:
    """HSET + EXPIRE + LPUSH, no doorbell, no index: the original producer."""
    key = f"stock:task:{task_id}"
    await client.hset(key, mapping=legacy_task(task_id, **over))  # type: ignore[arg-type,misc]
    await client.expire(key, 86400)
    await client.lpush(f"stock:task_queue:{over.get('priority', 1)}", task_id)  # type: ignore[misc]


async def test_legacy_hash_decodes(client: aioredis.Redis) -> None:
    tid = str(uuid.uuid4())
    await push_legacy(client, tid)
    raw = await client.hgetall(f"stock:task:{tid}")  # type: ignore[misc]
    assert raw["priority"] == "1" and "schema" not in raw
    t = Task.from_hash(raw)
    assert t.task_id == tid and t.plugin_name == "tushare_daily"
    assert t.status == TaskStatus.PENDING and t.task_type == "incremental"
    assert t.trade_dates == ["20240102", "20240103"]
    assert t.priority == Priority.NORMAL and t.attempt == 0 and t.max_attempts == 3
    assert t.timeout_seconds == 3600 and t.progress == 0 and t.records_processed == 0
    assert t.schema == 0 and t.trigger == "legacy"
    assert t.created_at is not None and t.created_at.tzinfo is not None  # read as local time
    assert abs(t.created_at.timestamp() - datetime.now().timestamp()) < 3600
    assert t.started_at is None and t.completed_at is None and t.deadline_at is None
    assert t.next_run_at is None and t.execution_id == "" and t.params == {}
    d = t.to_dict()
    assert d["priority"] == 1 and d["status"] == "pending" and "lease_token" not in d


async def test_legacy_task_is_claimed_indexed_and_completed(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    tid = str(uuid.uuid4())
    await push_legacy(client, tid)
    key = f"stock:task:{tid}"
    assert await client.ttl(key) > 0
    assert not await client.exists("stock:doorbell", "stock:index:all")

    t = await queue.claim("w1", "tok")
    assert t is not None and t.task_id == tid
    assert t.status == TaskStatus.RUNNING and t.attempt == 1 and t.lease_token == "tok"
    assert t.trade_dates == ["20240102", "20240103"]
    assert t.deadline_at is not None
    assert t.deadline_at.timestamp() == pytest.approx(clock.now + 3600)
    assert await client.ttl(key) == -1  # no TTL while running
    assert await client.zscore("stock:index:all", tid) == pytest.approx(clock.now * 1000)
    assert await client.zscore("stock:index:plugin:tushare_daily", tid) is not None
    assert await client.sismember("stock:index:plugins", "tushare_daily")
    assert await client.zscore("stock:index:status:running", tid) is not None
    assert await client.sismember("stock:running_tasks", tid)
    assert await client.zscore("stock:leases", tid) is not None
    listed = await list_tasks(queue, plugin="tushare_daily")
    assert [x.task_id for x in listed.items] == [tid]

    clock.advance(4)
    assert await queue.progress(t, 50, 10) is False
    await queue.complete(t, records=20)
    done = await queue.get(tid)
    assert done.status == TaskStatus.COMPLETED and done.records_processed == 20
    assert done.progress == 100 and done.duration_ms == 4000 and done.attempt == 1
    assert 0 < await client.ttl(key) <= settings.retention_seconds
    assert await client.zscore("stock:index:status:completed", tid) is not None
    assert await client.zscore("stock:index:status:running", tid) is None
    assert not await client.exists("stock:running_tasks", "stock:leases")
    assert await client.hget("stock:stats", "completed:tushare_daily") == "1"
    raw = await client.hgetall(key)  # type: ignore[misc]
    assert "lease_token" not in raw and "schema" not in raw  # still the original shape


async def test_legacy_tasks_honour_priority_and_fail_like_others(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    low, high = str(uuid.uuid4()), str(uuid.uuid4())
    await push_legacy(client, low, priority=2, max_attempts=1)
    await push_legacy(client, high, priority=0, max_attempts=1)
    t = await queue.claim("w")
    assert t is not None and t.task_id == high and t.priority == Priority.HIGH
    out = await queue.fail(t, "network", "down")
    assert out.status == TaskStatus.FAILED  # attempt 1 of 1
    failed = await queue.get(high)
    assert failed.status == TaskStatus.FAILED and failed.last_error_type == "network"
    t = await queue.claim("w")
    assert t is not None and t.task_id == low
    await queue.cancel(low)
    await queue.acknowledge_cancel(t)
    assert (await queue.get(low)).status == TaskStatus.CANCELLED


async def test_legacy_entry_that_is_no_longer_pending_is_skipped(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    done, gone, ok = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    await push_legacy(client, done, status="completed")
    await client.lpush("stock:task_queue:1", gone)  # type: ignore[misc]
    await push_legacy(client, ok)
    t = await queue.claim("w")
    assert t is not None and t.task_id == ok
    assert await queue.claim("w") is None
    assert (await queue.get(done)).status == TaskStatus.COMPLETED


async def test_legacy_execution_hash_decodes(queue: TaskQueue, client: aioredis.Redis) -> None:
    eid = uuid.uuid4().hex[:8]  # the original used 8 hex characters
    task_ids = [str(uuid.uuid4()) for _ in range(3)]
    await client.hset(f"stock:execution:{eid}", mapping={  # type: ignore[misc]
        "execution_id": eid,
        "task_ids": json.dumps(task_ids),
        "total_plugins": 3,
        "completed_plugins": 1,
        "failed_plugins": 1,
        "trigger_type": "scheduled",
        "group_name": "daily_update",
        "date_range": "20240101~20240105",
        "status": "running",
        "created_at": datetime.now().isoformat(),
    })
    raw = await client.hgetall(f"stock:execution:{eid}")  # type: ignore[misc]
    e = Execution.from_hash(raw)
    assert e.execution_id == eid and e.status == ExecutionStatus.RUNNING
    assert (e.total, e.completed, e.failed, e.cancelled) == (3, 1, 1, 0)
    assert e.pending == 1 and e.schema == 0
    assert e.trigger_type == "scheduled" and e.group_name == "daily_update"
    assert e.date_range == "20240101~20240105" and e.plugins == []
    assert e.legacy_task_ids == task_ids
    assert e.created_at is not None and e.created_at.tzinfo is not None
    d = e.to_dict()
    assert d["status"] == "running" and d["pending"] == 1 and "legacy_task_ids" not in d
    # the queries read its task ids from the JSON field
    loaded = await get_execution(queue, eid)
    assert await execution_task_ids(queue, loaded) == task_ids


def test_malformed_task_fields_fall_back_to_defaults() -> None:
    h = legacy_task("t1")
    raw = {k: str(v) for k, v in h.items()}
    raw.update(
        priority="high",
        progress="abc",
        trade_dates="not json",
        records_processed="12x",
        attempt="inf",
        max_attempts="",
        timeout_seconds="-",
        created_at="yesterday",
        updated_at="99999999999999999999999",
        deadline_at="1e999",
        params="[1, 2]",
        status="exploded",
        result="{broken",
        duration_ms="soon",
        waiting="nan",
    )
    t = Task.from_hash(raw)
    assert t.priority == Priority.NORMAL  # the scripts read a non-number as 1
    assert t.progress == 0.0 and t.trade_dates == [] and t.records_processed == 0
    assert t.attempt == 0 and t.max_attempts == 3 and t.timeout_seconds == 3600
    assert t.created_at is None and t.updated_at is None and t.deadline_at is None
    assert t.params == {} and t.status == TaskStatus.PENDING and t.result is None
    assert not t.duration_ms and t.waiting_on == 0
    assert Task.from_hash({}).task_id == ""  # an empty hash decodes too
    # priority as stored by stockq and the original: a number 0-2
    for stored, expected in (("0", Priority.HIGH), ("2", Priority.LOW), ("7", Priority.NORMAL),
                             ("-1", Priority.NORMAL), ("", Priority.NORMAL)):
        assert Task.from_hash({**raw, "priority": stored}).priority == expected


def test_malformed_execution_fields_fall_back_to_defaults() -> None:
    e = Execution.from_hash({"execution_id": "x", "status": "exploded", "total_plugins": "many",
                             "completed_plugins": "1.0", "task_ids": "not json",
                             "plugins": '{"a": 1}', "created_at": "noon"})
    assert e.status == ExecutionStatus.RUNNING and e.total == 0 and e.completed == 1
    assert e.legacy_task_ids == [] and e.plugins == [] and e.created_at is None
    assert e.pending == 0
