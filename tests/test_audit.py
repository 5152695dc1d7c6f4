"""The audit history: outbox rows written by the transition scripts, the flusher into
the embedded ClickHouse (at least once, deduplicated), outages, secrets, the history
API, and who may open the embedded engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.audit import TASK_AUDIT, AuditFlusher
from app.executions import BatchTask, create_execution
from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from plugins_bridge.warehouse import Warehouse, WarehouseUnavailable
from tests.conftest import ROOT, FakeClock

BY_ATTEMPT = ("SELECT task_id, attempt, status, error_type FROM stockq_task_audit FINAL "
              "ORDER BY finished_at, attempt")


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    wh = Warehouse(f"chdb://{tmp_path / 'ch'}")
    yield wh
    wh.close()


@pytest.fixture
async def flusher(queue: TaskQueue, warehouse: Warehouse) -> AsyncIterator[AuditFlusher]:
    f = AuditFlusher(queue, warehouse, batch=3)  # small batches: several rounds
    yield f
    await f.release()


async def rows(warehouse: Warehouse, sql: str = BY_ATTEMPT) -> list[list[Any]]:
    return list((await warehouse.run(warehouse.fetch, sql))["rows"])


def spec(**kw: Any) -> TaskSpec:
    return TaskSpec.build("noop", **kw)


async def test_every_kind_of_attempt_end_leaves_one_row(
        queue: TaskQueue, clock: FakeClock, flusher: AuditFlusher, warehouse: Warehouse) -> None:
    ends: dict[str, tuple[str, int, str, str]] = {}
    # completed
    tid, _ = await queue.enqueue(spec(params={"n": 1}, trade_dates=["20260105"]))
    t = await queue.claim("w-1")
    assert t is not None
    clock.advance(1.5)
    await queue.complete(t, records=7)
    ends["completed"] = (tid, 1, "completed", "")
    # retry scheduled after a timeout, then failed for good (network)
    tid, _ = await queue.enqueue(spec(params={"n": 2}, max_attempts=2))
    t = await queue.claim("w-1")
    assert t is not None
    out = await queue.fail(t, "timeout", "deadline passed")
    ends["retrying"] = (tid, 1, "retrying", "timeout")
    clock.advance((out.next_run_at_ms or 0) / 1000 - clock.now + 1)
    t = await queue.claim("w-1")
    assert t is not None and t.attempt == 2
    await queue.fail(t, "network", "still down")
    ends["failed"] = (tid, 2, "failed", "network")
    # cancelled while running
    tid, _ = await queue.enqueue(spec(params={"n": 3}))
    t = await queue.claim("w-1")
    assert t is not None
    await queue.cancel(tid)
    await queue.acknowledge_cancel(t)
    ends["cancelled"] = (tid, 1, "cancelled", "cancelled")
    # worker lost: the lease expires, the reaper requeues (attempt 1 ends as retrying)
    tid, _ = await queue.enqueue(spec(params={"n": 4}, max_attempts=1))
    t = await queue.claim("w-2")
    assert t is not None
    clock.advance(queue.settings.lease_seconds + 1)
    assert await queue.reap() == [(tid, "failed")]
    ends["worker_lost"] = (tid, 1, "failed", "worker_lost")
    # an execution: its end is a row of its own
    eid, ids = await create_execution(queue, [BatchTask(spec(params={"n": 5}))])
    t = await queue.claim("w-1")
    assert t is not None
    await queue.complete(t)

    moved = 0
    while n := await flusher.step():
        moved += n
    assert moved == 7  # 6 attempt ends + 1 execution end
    assert await queue.client.llen(queue.keys.audit_tasks) == 0
    got = {(r[0], r[1]): (r[2], r[3]) for r in await rows(warehouse)}
    for task_id, attempt, status, error_type in ends.values():
        assert got[(task_id, attempt)] == (status, error_type)
    [detail] = await rows(warehouse, f"SELECT records, duration_ms, worker, trade_dates, "
                          f"plugin, trigger FROM stockq_task_audit FINAL WHERE task_id = "
                          f"'{ends['completed'][0]}'")
    assert detail == [7, 1500, "w-1", '["20260105"]', "noop", "manual"]
    assert await rows(warehouse, "SELECT execution_id, status, total, completed FROM "
                      "stockq_execution_audit FINAL") == [[eid, "completed", 1, 1]]


async def test_no_secret_reaches_an_audit_row(queue: TaskQueue, flusher: AuditFlusher,
                                              warehouse: Warehouse) -> None:
    await queue.enqueue(spec(max_attempts=1))
    t = await queue.claim("w")
    assert t is not None
    await queue.fail(t, "network", "GET http://api/x?token=abc123SECRET failed via proxy "
                     "http://bob:hunter2@proxy.example:3128 (password=pa55)")
    await flusher.step()
    [[message]] = await rows(warehouse, "SELECT error_message FROM stockq_task_audit FINAL")
    for secret in ("abc123SECRET", "hunter2", "pa55"):
        assert secret not in message
    assert "token=***" in message and "bob:***@proxy.example" in message


class FlakyWarehouse:
    """The real warehouse behind a switch that makes every insert fail as if the
    ClickHouse server were down (the embedded engine cannot be taken down)."""

    def __init__(self, real: Warehouse) -> None:
        self.real, self.down = real, True

    async def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if self.down and getattr(func, "__name__", "") == "insert":
            raise WarehouseUnavailable("ClickHouse at test: connection refused")
        return await self.real.run(getattr(self.real, func.__name__), *args, **kwargs)

    def insert(self) -> None: ...


async def test_rows_wait_while_clickhouse_is_down_and_all_arrive(
        queue: TaskQueue, warehouse: Warehouse, caplog: pytest.LogCaptureFixture) -> None:
    from structlog.testing import capture_logs

    flaky = FlakyWarehouse(warehouse)
    flusher = AuditFlusher(queue, flaky, batch=4)  # type: ignore[arg-type]
    for n in range(10):
        await queue.enqueue(spec(params={"n": n}))
        t = await queue.claim("w")
        assert t is not None
        await queue.complete(t)
    with capture_logs() as logs:
        assert await flusher.step() == 0
        assert await flusher.step() == 0
        assert await queue.client.llen(queue.keys.audit_tasks) == 10  # nothing lost
        flaky.down = False
        assert await flusher.step() == 10
    events = [e["event"] for e in logs]
    assert events.count("audit.clickhouse_down") == 1 and "audit.clickhouse_back" in events
    assert await rows(warehouse, "SELECT count() FROM stockq_task_audit FINAL") == [[10]]
    await flusher.release()


async def test_the_cap_drops_the_oldest_rows_loudly(queue: TaskQueue, settings: Settings,
                                                    warehouse: Warehouse) -> None:
    small = TaskQueue(queue.client, replace(settings, audit_max_rows=100), clock=queue.clock)
    for n in range(105):
        await small.client.lpush(small.keys.audit_tasks, json.dumps(n))
    flusher = AuditFlusher(small, warehouse)
    assert await flusher.enforce_cap() == 5
    assert await small.client.llen(small.keys.audit_tasks) == 100
    assert await small.client.hget(small.keys.stats, "audit_dropped") == "5"
    assert json.loads(await small.client.lindex(small.keys.audit_tasks, -1)) == 5
    await small.aclose()


async def test_only_one_flusher_is_active(queue: TaskQueue, warehouse: Warehouse) -> None:
    a, b = AuditFlusher(queue, warehouse), AuditFlusher(queue, warehouse)
    assert await a.hold_lock() and not await b.hold_lock()
    assert await a.hold_lock()  # renews
    await a.release()
    assert await b.hold_lock()
    await b.release()


KILL_AFTER_INSERT = r"""
import asyncio, os, signal, sys
import redis.asyncio as aioredis
from app.audit import AuditFlusher
from app.queue import TaskQueue
from app.settings import load_settings
from plugins_bridge.warehouse import Warehouse

async def main():
    settings = load_settings()
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    queue = TaskQueue(client, settings)
    flusher = AuditFlusher(queue, Warehouse(sys.argv[1]))
    if sys.argv[2] == "kill":
        async def die(*a, **k):  # ClickHouse has the rows; Redis never hears of it
            os.kill(os.getpid(), signal.SIGKILL)
        client.ltrim = die
    print(await flusher.step(), flush=True)

asyncio.run(main())
"""


def test_a_flusher_killed_between_insert_and_acknowledgement_duplicates_nothing(
        redis_url: str, settings: Settings, tmp_path: Path) -> None:
    import redis as sync_redis

    r = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    rows_in = [json.dumps([f"t{n}", "1", "", "noop", "incremental", "completed", "", "",
                           "1", "[]", "1", "api", "w", "2026-01-01T00:00:00+00:00",
                           "2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00", "1000",
                           str(1_767_225_602_000 + n)]) for n in range(5)]
    r.lpush("stock:audit:tasks", *rows_in)
    env = {**os.environ, "STOCKQ_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT),
           "STOCKQ_LOG_FORMAT": "json"}
    url = f"chdb://{tmp_path / 'ch'}"
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_INSERT, url, "kill"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert r.llen("stock:audit:tasks") == 5  # not acknowledged: still in Redis
    r.delete("stock:audit:flusher")  # the dead flusher's lock (else: wait for its TTL)
    again = subprocess.run([sys.executable, "-c", KILL_AFTER_INSERT, url, "ok"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == "5"  # the same five rows again
    assert r.llen("stock:audit:tasks") == 0
    wh = Warehouse(url)
    try:
        assert wh.fetch("SELECT count() FROM stockq_task_audit")["rows"] == [[10]]  # sent twice
        assert wh.fetch("SELECT count(), uniqExact(task_id, attempt) FROM stockq_task_audit "
                        "FINAL")["rows"] == [[5, 5]]
    finally:
        wh.close()


async def test_the_history_route_filters(queue: TaskQueue, settings: Settings,
                                         flusher: AuditFlusher, warehouse: Warehouse,
                                         clock: FakeClock) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from app.api.app import create_app
    from plugins_bridge.registry import PluginRegistry

    eid, _ = await create_execution(queue, [BatchTask(spec(params={"n": 1}))])
    t = await queue.claim("w")
    assert t is not None
    await queue.complete(t, records=3)
    clock.advance(86400 * 2)  # two days later
    await queue.enqueue(spec(params={"n": 2}, max_attempts=1))
    t = await queue.claim("w")
    assert t is not None
    await queue.fail(t, "bad_params", "no such code")
    while await flusher.step():
        pass
    async with TestClient(TestServer(create_app(settings, registry=PluginRegistry(),
                                                warehouse=warehouse))) as http:
        async def items(query: str) -> list[dict[str, Any]]:
            resp = await http.get(f"/api/v1/history{query}")
            assert resp.status == 200, await resp.text()
            return list((await resp.json())["items"])

        both = await items("")
        assert [i["status"] for i in both] == ["failed", "completed"]  # newest first
        assert [i["status"] for i in await items("?status=completed")] == ["completed"]
        [done] = await items(f"?execution_id={eid}")
        assert done["records"] == 3 and done["plugin"] == "noop" and done["attempt"] == 1
        assert await items("?plugin=other") == []
        assert [i["status"] for i in await items("?since=2026-01-02")] == ["failed"]
        assert [i["status"] for i in await items("?until=2026-01-02")] == ["completed"]
        assert len(await items("?limit=1")) == 1
        resp = await http.get("/api/v1/history?since=yesterday")
        assert resp.status == 400 and "since" in (await resp.json())["error"]["message"]
    assert TASK_AUDIT.name == "stockq_task_audit"


@pytest.mark.parametrize("command", [["worker"], ["scheduler"], ["api"], ["audit-flush"]])
def test_separate_roles_refuse_the_embedded_engine(command: list[str], cli_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    env = {**cli_env, "STOCKQ_CLICKHOUSE_URL": f"chdb://{tmp_path}/ch"}
    proc = subprocess.run([sys.executable, "-m", "app.cli", *command], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5, proc.stderr
    assert "only one process can open" in proc.stderr and "stockq run" in proc.stderr
    assert "STOCKQ_CLICKHOUSE_URL" in proc.stderr and "Traceback" not in proc.stderr


async def test_cancelled_dependents_and_pending_cancels_are_audited(
        queue: TaskQueue, flusher: AuditFlusher, warehouse: Warehouse,
        client: aioredis.Redis) -> None:
    eid, (a, b) = await create_execution(
        queue, [BatchTask(spec(params={"n": 1})), BatchTask(spec(params={"n": 2}), (0,))])
    t = await queue.claim("w")
    assert t is not None
    await queue.fail(t, "config_error", "no token")
    lone, _ = await queue.enqueue(spec(params={"n": 3}))
    await queue.cancel(lone)
    while await flusher.step():
        pass
    got = {r[0]: (r[1], r[2], r[3]) for r in await rows(warehouse)}
    assert got[a] == (1, "failed", "config_error")
    assert got[b] == (0, "cancelled", "upstream_failed")  # never started: attempt 0
    assert got[lone] == (0, "cancelled", "cancelled")
    assert await rows(warehouse, "SELECT status, failed, cancelled FROM "
                      "stockq_execution_audit FINAL") == [["failed", 1, 1]]
