"""The built-in TuShare plugins end to end: a real worker pool (supervisor in this
process, real child processes) against the fake TuShare server on loopback and the
embedded ClickHouse.  Children load rows through their supervisor; nothing is mocked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app import queries
from app.executions import create_execution
from app.models import Task, TaskStatus
from app.queue import TaskQueue
from app.settings import Settings
from app.submission import build_spec, plan_execution
from app.worker.supervisor import PoolOptions, Supervisor
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.tushare.client import TushareClient
from plugins_bridge.tushare.fake_server import FakeTushare
from plugins_bridge.warehouse import Warehouse
from tests.conftest import ROOT
from tests.proxy_server import CountingProxy
from tests.workers import WorkerProcess, wait_until, worker_env

TOKEN = "pool-token-7"


class ShiftClock:
    """Real time plus an offset the test moves forward (to skip a quota window)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Pool:
    def __init__(self, queue: TaskQueue, warehouse: Warehouse, fake: FakeTushare,
                 clock: ShiftClock, registry: PluginRegistry) -> None:
        self.queue, self.warehouse, self.fake, self.clock = queue, warehouse, fake, clock
        self.registry = registry

    async def sql(self, text: str) -> list[list[Any]]:
        result = await self.warehouse.run(self.warehouse.fetch, text)
        return list(result["rows"])

    async def submit(self, plugin: str, **fields: Any) -> str:
        spec = build_spec(self.registry, self.queue.settings, plugin, **fields)
        task_id, _ = await self.queue.enqueue(spec)
        return task_id

    async def execution(self, plugins: list[str], **fields: Any) -> tuple[str, list[str]]:
        ordered, tasks = plan_execution(self.registry, self.queue.settings, plugins, **fields)
        eid, _ = await create_execution(self.queue, tasks)
        return eid, ordered

    async def until(self, task_id: str, check: Callable[[Task], bool],
                    timeout: float = 60) -> Task:
        deadline = time.monotonic() + timeout
        while True:
            task = await self.queue.get(task_id)
            if check(task):
                return task
            assert time.monotonic() < deadline, f"task still {task.status}: {task}"
            await asyncio.sleep(0.05)

    async def done(self, task_id: str) -> Task:
        return await self.until(task_id, lambda t: t.status.terminal)

    async def execution_done(self, eid: str, timeout: float = 90) -> list[Task]:
        deadline = time.monotonic() + timeout
        while True:
            execution = await queries.get_execution(self.queue, eid)
            if execution.status.value in ("completed", "failed", "cancelled"):
                ids = await queries.execution_task_ids(self.queue, execution)
                return [t for t in await queries.get_many(self.queue, ids) if t]
            assert time.monotonic() < deadline, execution
            await asyncio.sleep(0.1)


@asynccontextmanager
async def pool(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
               env_token: str = TOKEN, tushare_url: str = "", proxy: str = ""
               ) -> AsyncIterator[Pool]:
    settings = replace(settings, builtin_plugins=True, plugins=(), retry_base_seconds=0.2,
                       retry_max_seconds=0.5, tushare_token=env_token)
    with FakeTushare(token=TOKEN) as fake:
        # what the children read from their environment
        monkeypatch.setenv("STOCKQ_TUSHARE_URL", tushare_url or fake.url)
        monkeypatch.setenv("TUSHARE_TOKEN", env_token)
        monkeypatch.setenv("STOCKQ_BUILTIN_PLUGINS", "true")
        monkeypatch.setenv("STOCKQ_LOG_FORMAT", "json")
        monkeypatch.delenv("STOCKQ_PLUGINS", raising=False)
        if proxy:
            monkeypatch.setenv("STOCKQ_HTTP_PROXY", proxy)
        warehouse = Warehouse(f"chdb://{tmp_path / 'ch'}")
        clock = ShiftClock()
        queue = TaskQueue(queue_client(settings), settings, clock=clock)
        supervisor = Supervisor(queue, settings, PoolOptions(concurrency=2, kill_grace=0.5),
                                clock=clock, warehouse=warehouse)
        running = asyncio.create_task(supervisor.run(install_signals=False))
        try:
            yield Pool(queue, warehouse, fake, clock, PluginRegistry.from_settings(settings))
        finally:
            supervisor.request_stop()  # nothing is running by now: a quick drain
            await running
            await queue.aclose()
            await queue.client.aclose()
            warehouse.close()


def queue_client(settings: Settings) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(settings.redis_url, decode_responses=True)


async def test_every_builtin_loads_its_table_exactly(settings: Settings, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    async with pool(settings, tmp_path, monkeypatch) as p:
        eid, ordered = await p.execution(
            ["tushare_daily", "tushare_adj_factor", "tushare_daily_basic"],
            task_type="backfill", trade_dates=["20261126", "20261127"])
        assert ordered[:2] in (["tushare_trade_calendar", "tushare_stock_basic"],
                               ["tushare_stock_basic", "tushare_trade_calendar"])
        tasks = await p.execution_done(eid)
        assert {t.plugin_name: t.status for t in tasks} == {
            name: TaskStatus.COMPLETED for name in ordered}
        records = {t.plugin_name: t.records_processed for t in tasks}
        assert records["tushare_daily"] == records["tushare_adj_factor"] == 40
        assert records["tushare_stock_basic"] == 20

        # exactly what TuShare (the fake) serves, typed
        with TushareClient(p.fake.url, TOKEN) as client:
            served = client.query("daily", {"trade_date": "20261127", "ts_code": "000001.SZ"})
        [row] = await p.sql("SELECT ts_code, toString(trade_date), open, high, low, close, "
                            "pre_close, change, pct_chg, vol, amount FROM ods_daily FINAL "
                            "WHERE ts_code = '000001.SZ' AND trade_date = '2026-11-27'")
        expected = served[0]
        assert row == [expected["ts_code"], "2026-11-27", expected["open"], expected["high"],
                       expected["low"], expected["close"], expected["pre_close"],
                       expected["change"], expected["pct_chg"], expected["vol"],
                       expected["amount"]]
        types = {name: kind for name, kind, *_ in await p.sql("DESCRIBE TABLE ods_daily")}
        assert types["trade_date"] == "Date" and types["close"] == "Float64"
        assert types["pre_close"] == "Nullable(Float64)" and types["version"] == "UInt64"
        assert await p.sql("SELECT count(), uniqExact(ts_code, trade_date) FROM ods_daily "
                           "FINAL") == [[40, 40]]
        assert await p.sql("SELECT pe FROM ods_daily_basic FINAL WHERE ts_code = '000725.SZ' "
                           "AND trade_date = '2026-11-27'") == [[None]]
        assert await p.sql("SELECT is_open FROM ods_trade_calendar FINAL WHERE cal_date IN "
                           "('2026-09-30', '2026-10-01') ORDER BY cal_date") == [[1], [0]]
        assert await p.sql("SELECT count() FROM ods_stock_basic FINAL") == [[20]]

        # the same dates again: rows are replaced, never duplicated
        again, _ = await p.execution(["tushare_daily"], task_type="backfill",
                                     trade_dates=["20261126", "20261127"])
        assert all(t.status == TaskStatus.COMPLETED for t in await p.execution_done(again))
        assert await p.sql("SELECT count(), uniqExact(ts_code, trade_date) FROM ods_daily "
                           "FINAL") == [[40, 40]]
        [[raw]] = await p.sql("SELECT count() FROM ods_daily")
        assert raw >= 40  # unmerged copies may exist; FINAL sees one row per key


async def test_quota_error_is_retried_after_the_window(settings: Settings, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async with pool(settings, tmp_path, monkeypatch) as p:
        p.fake.rate_limit_next(1)
        task_id = await p.submit("tushare_stock_basic", task_type="full")
        waiting = await p.until(task_id, lambda t: t.status == TaskStatus.RETRYING)
        assert waiting.last_error_type == "rate_limit" and "每分钟" in waiting.error_message
        assert waiting.next_run_at is not None
        delay = waiting.next_run_at.timestamp() - p.clock()
        assert 50 < delay <= 67  # the quota window (60 s) plus up to 10 % jitter
        p.clock.offset += 70  # let the minute pass
        done = await p.done(task_id)
        assert done.status == TaskStatus.COMPLETED and done.attempt == 2
        assert done.records_processed == 20


async def test_http_500_is_retried(settings: Settings, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    async with pool(settings, tmp_path, monkeypatch) as p:
        p.fake.fail_next(1, 500)
        task_id = await p.submit("tushare_daily", task_type="backfill",
                                 trade_dates=["20261127"])
        done = await p.done(task_id)
        assert done.status == TaskStatus.COMPLETED and done.attempt == 2
        assert done.records_processed == 20


async def test_a_bad_token_fails_at_once(settings: Settings, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async with pool(settings, tmp_path, monkeypatch, env_token="wrong-token-9") as p:
        task_id = await p.submit("tushare_daily", task_type="backfill",
                                 trade_dates=["20261127"])
        failed = await p.done(task_id)
        assert failed.status == TaskStatus.FAILED and failed.attempt == 1
        assert failed.last_error_type == "config_error"
        assert "token" in failed.error_message and "wrong-token-9" not in failed.error_message


async def test_a_holiday_completes_with_no_records(settings: Settings, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async with pool(settings, tmp_path, monkeypatch) as p:
        task_id = await p.submit("tushare_daily", task_type="backfill",
                                 trade_dates=["20261001", "20261002"])
        done = await p.done(task_id)
        assert done.status == TaskStatus.COMPLETED and done.records_processed == 0
        assert not any(api == "daily" for api, _ in p.fake.calls)  # closed days: no call


async def test_the_proxy_carries_tushare_calls_only(settings: Settings, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """TuShare is addressed by a name only the proxy resolves; Redis and ClickHouse are
    used by the supervisor, whose environment has no proxy variables."""
    with FakeTushare(token=TOKEN) as real:
        aliases = {"tushare.test": f"127.0.0.1:{real.url.split(':')[2].split('/')[0]}"}
        with CountingProxy(aliases) as proxy:
            async with pool(settings, tmp_path, monkeypatch, proxy=proxy.url,
                            tushare_url="http://tushare.test/dataapi") as p:
                task_id = await p.submit("tushare_daily", task_type="backfill",
                                         trade_dates=["20261127"])
                done = await p.done(task_id)
                assert done.status == TaskStatus.COMPLETED, done.error_message
                assert done.records_processed == 20
                assert await p.sql("SELECT count() FROM ods_daily FINAL") == [[20]]
            assert proxy.seen and len(proxy.seen) == len(real.calls)
            assert all(url.startswith("http://tushare.test/dataapi/") for _, url in proxy.seen)
            assert {url.rsplit("/", 1)[1] for _, url in proxy.seen} == {"trade_cal", "daily"}
    assert "HTTP_PROXY" not in os.environ and "http_proxy" not in os.environ


def test_the_quota_holds_across_two_worker_processes(redis_url: str, tmp_path: Path) -> None:
    with FakeTushare(token=TOKEN) as fake:
        env = worker_env(redis_url, STOCKQ_PLUGINS="tests.tushare_probe:PLUGINS",
                         STOCKQ_TUSHARE_URL=fake.url, TUSHARE_TOKEN=TOKEN)
        workers = [WorkerProcess(env, tmp_path / f"w{i}.log", "--concurrency", "1")
                   for i in (1, 2)]
        try:
            for w in workers:
                w.wait_started()
            for n in range(2):  # 16 calls in all, 10 a minute allowed for the token
                subprocess.run([sys.executable, "-m", "app.cli", "submit", "tushare_probe",
                                "--param-json", "calls=8", "--param", f"n={n}",
                                "--param", f"barrier={tmp_path / 'barrier'}"],
                               env=env, cwd=ROOT, check=True, capture_output=True, timeout=60)
            wait_until(lambda: all(w.events("task.started") for w in workers), 30,
                       "both workers running a probe")
            wait_until(lambda: len(fake.calls) >= 10, 30, "ten calls")
            time.sleep(1.5)  # the other six wait for the next minute of the shared quota
            assert len(fake.calls) == 10
        finally:
            for w in workers:
                w.kill()
