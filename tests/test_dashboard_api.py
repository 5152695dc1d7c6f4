"""The routes the dashboard reads (stats, session, data coverage, daily history, the
history of one task, tasks by date) and the read-only token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.api.app import create_app
from app.audit import AuditFlusher
from app.errors import ConfigError
from app.models import TaskSpec
from app.queue import TaskQueue
from app.scheduler.calendar import offline_day
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.tushare.datasets import DAILY, Daily, StockBasic
from plugins_bridge.warehouse import Warehouse
from tests.api_support import V1, fails, ok, registry
from tests.api_support import api as api  # fixtures: pytest finds them by name here
from tests.api_support import worker as worker
from tests.conftest import FakeClock
from tests.sidecar_support import GOOD_TOKEN

READ_TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    wh = Warehouse(f"chdb://{tmp_path / 'ch'}")
    yield wh
    wh.close()


@asynccontextmanager
async def serve(settings: Settings, **kw: Any) -> AsyncIterator[TestClient[Any, Any]]:
    kw.setdefault("registry", registry())
    async with TestClient(TestServer(create_app(settings, **kw))) as client:
        yield client


def spec(n: int, plugin: str = "prices") -> TaskSpec:
    return TaskSpec.build(plugin, params={"n": n}, max_attempts=1)


# ------------------------------------------------------------------ stats
async def test_stats_count_what_ended_lately_and_per_minute(api: TestClient[Any, Any],
                                                            worker: TaskQueue) -> None:
    ids = [(await worker.enqueue(spec(n)))[0] for n in range(4)]
    for _ in range(2):
        task = await worker.claim("w")
        assert task is not None
        await worker.complete(task)
    task = await worker.claim("w")
    assert task is not None
    await worker.fail(task, "bad_parameters", "no")
    await worker.cancel(ids[3], "not needed")
    body = await ok(api, "GET", f"{V1}/stats")
    assert body["queue"] == {"ready": {"0": 0, "1": 0, "2": 0}, "ready_total": 0,
                             "delayed": 0, "running": 0, "pending": 0, "retrying": 0}
    expected = {"completed": 2, "failed": 1, "cancelled": 1}
    assert body["recent"] == {"hour": expected, "day": expected}
    series = body["throughput"]
    assert series["bucket_seconds"] == 60 and len(series["completed"]) == 60
    assert sum(series["completed"]) == 2 and sum(series["failed"]) == 1
    assert series["completed"][-1] + series["completed"][-2] == 2  # this minute or the last
    assert body["timezone"] == "Asia/Shanghai"


# ------------------------------------------------------------------ session, tokens
async def test_the_session_says_what_the_token_may_do(settings: Settings) -> None:
    async with serve(settings) as client:
        body = await ok(client, "GET", f"{V1}/session")
        assert body == {"access": "full", "auth": False, "clickhouse": False,
                        "timezone": "Asia/Shanghai", "namespace": "stock"}
    guarded = replace(settings, api_token=GOOD_TOKEN, api_read_token=READ_TOKEN)
    async with serve(guarded) as client:
        await fails(client, "GET", f"{V1}/session", 401, "unauthorized")
        full = {"Authorization": f"Bearer {GOOD_TOKEN}"}
        read = {"Authorization": f"Bearer {READ_TOKEN}"}
        assert (await ok(client, "GET", f"{V1}/session", headers=full))["access"] == "full"
        assert (await ok(client, "GET", f"{V1}/session", headers=read))["access"] == "read"


async def test_a_read_only_token_reads_and_changes_nothing(settings: Settings,
                                                           worker: TaskQueue) -> None:
    guarded = replace(settings, api_token=GOOD_TOKEN, api_read_token=READ_TOKEN)
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    tid, _ = await worker.enqueue(spec(1))
    async with serve(guarded) as client:
        listed = await ok(client, "GET", f"{V1}/tasks", headers=read)
        assert [t["task_id"] for t in listed["items"]] == [tid]
        message = await fails(client, "POST", f"{V1}/tasks", 403, "read_only_token",
                              headers=read, json={"plugin_name": "prices"})
        assert "STOCKQ_API_TOKEN" in message and READ_TOKEN not in message
        await fails(client, "POST", f"{V1}/tasks/{tid}/cancel", 403, "read_only_token",
                    headers=read)
        assert (await worker.get(tid)).status == "pending"
        assert len((await ok(client, "GET", f"{V1}/tasks", headers=read))["items"]) == 1
        await fails(client, "POST", f"{V1}/tasks/{tid}/cancel", 401, "unauthorized",
                    headers={"Authorization": f"Bearer {READ_TOKEN}x"})
        cancelled = await ok(client, "POST", f"{V1}/tasks/{tid}/cancel",
                             headers={"Authorization": f"Bearer {GOOD_TOKEN}"})
        assert cancelled["outcome"] == "cancelled"


@pytest.mark.parametrize(("token", "read", "says"), [
    ("", READ_TOKEN, "without STOCKQ_API_TOKEN"),
    (GOOD_TOKEN, GOOD_TOKEN, "equals STOCKQ_API_TOKEN"),
    (GOOD_TOKEN, "short", "STOCKQ_API_READ_TOKEN is 5 characters long"),
])
def test_a_read_only_token_must_be_a_secret_of_its_own(settings: Settings, token: str,
                                                        read: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        create_app(replace(settings, api_token=token, api_read_token=read),
                   registry=registry())


# ------------------------------------------------------------------ tasks by date
async def test_tasks_are_filtered_by_when_they_were_created(settings: Settings,
                                                            queue: TaskQueue,
                                                            clock: FakeClock) -> None:
    first, _ = await queue.enqueue(spec(1))  # 2026-01-01T00:00Z
    clock.advance(2 * 86400)
    second, _ = await queue.enqueue(spec(2))  # 2026-01-03
    async with serve(settings) as client:
        async def ids(query: str) -> list[str]:
            body = await ok(client, "GET", f"{V1}/tasks?{query}")
            return [t["task_id"] for t in body["items"]]

        assert await ids("since=2026-01-02") == [second]
        assert await ids("until=2026-01-02") == [first]
        assert await ids("since=2026-01-01&until=2026-01-04") == [second, first]
        assert await ids("status=pending&since=2026-01-02T12:00:00") == [second]
        assert await ids("plugin=prices&until=2026-01-01T00:00:00.001") == [first]
        await fails(client, "GET", f"{V1}/tasks?since=yesterday", 400, "invalid_input")
        await fails(client, "GET", f"{V1}/tasks?execution_id=e&since=2026-01-02", 400,
                    "invalid_input")


# ------------------------------------------------------------------ the audit
async def ended_in_audit(worker: TaskQueue, warehouse: Warehouse) -> list[str]:
    """Two completed tasks and a failed one of plugin prices, flushed to ClickHouse."""
    ids = [(await worker.enqueue(spec(n)))[0] for n in range(3)]
    for _ in range(2):
        task = await worker.claim("w")
        assert task is not None
        await worker.complete(task)
    task = await worker.claim("w")
    assert task is not None
    await worker.fail(task, "bad_parameters", "no such date")
    flusher = AuditFlusher(worker, warehouse)
    assert await flusher.hold_lock()
    assert await flusher.flush_once() == 3
    await flusher.release()
    return ids


async def test_the_history_of_one_task_and_per_day(settings: Settings, worker: TaskQueue,
                                                   warehouse: Warehouse) -> None:
    ids = await ended_in_audit(worker, warehouse)
    async with serve(settings, warehouse=warehouse) as client:
        one = await ok(client, "GET", f"{V1}/history?task_id={ids[2]}")
        assert [(r["task_id"], r["status"], r["error_type"]) for r in one["items"]] == [
            (ids[2], "failed", "bad_parameters")]
        daily = await ok(client, "GET", f"{V1}/history/daily?days=3")
        today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
        assert daily["days"] == [(today - timedelta(days=d)).isoformat() for d in (2, 1, 0)]
        assert daily["plugins"] == {"prices": {"completed": [0, 0, 2], "failed": [0, 0, 1]}}
        assert (await ok(client, "GET", f"{V1}/history/daily?plugin=other"))["plugins"] == {}
        for days in ("0", "91", "x", "1e3"):
            await fails(client, "GET", f"{V1}/history/daily?days={days}", 400,
                        "invalid_input")
    async with serve(settings) as client:  # a sidecar without ClickHouse
        await fails(client, "GET", f"{V1}/history/daily", 503, "clickhouse_unavailable")


# ------------------------------------------------------------------ data coverage
def trading_days(today: date, days: int) -> list[date]:
    return [d for d in (today - timedelta(days=i) for i in range(days - 1, -1, -1))
            if offline_day(d).trading]


async def test_coverage_shows_the_latest_day_and_the_gaps(settings: Settings,
                                                         warehouse: Warehouse) -> None:
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    open_days = [d for d in trading_days(today, 20) if d != today]
    loaded = [open_days[-1], open_days[-4]]
    warehouse.insert(DAILY, [["000001.SZ", d.isoformat(), 1, 2, 0.5, 1.5, None, None, None,
                              None, None] for d in loaded])
    plugins = PluginRegistry([Daily(), StockBasic()])
    async with serve(settings, registry=plugins, warehouse=warehouse) as client:
        body = await ok(client, "GET", f"{V1}/data/coverage?days=20")
    assert body["start"] == (today - timedelta(days=19)).isoformat()
    assert body["end"] == today.isoformat()
    assert body["calendar"] == {"exchange": "SSE", "source": "offline"}
    assert body["trading_days"] == [d.isoformat() for d in trading_days(today, 20)]
    daily, basic = body["tables"]
    assert daily["table"] == "ods_daily" and daily["plugins"] == ["tushare_daily"]
    assert daily["exists"] and daily["latest"] == loaded[0].isoformat()
    assert daily["loaded"] == sorted(d.isoformat() for d in loaded)
    assert daily["missing"] == [d.isoformat() for d in open_days if d not in loaded]
    assert daily["today"] == ("not_yet" if offline_day(today).trading
                              else "not_a_trading_day")
    assert daily["last_loaded_at"]
    assert basic == {"table": "ods_stock_basic", "plugins": ["tushare_stock_basic"],
                     "date_column": "", "exists": False, "latest": None,
                     "last_loaded_at": None, "rows": None}
    async with serve(settings, registry=plugins, warehouse=warehouse) as client:
        for days in ("0", "367", "-1", "30x"):
            await fails(client, "GET", f"{V1}/data/coverage?days={days}", 400,
                        "invalid_input")
