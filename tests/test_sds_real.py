"""The real stock_datasource snapshot's plugins as stockq tasks: discovered by the adapter,
run by a ``stockq worker`` from the snapshot's own environment (its dependencies pinned
as in its uv.lock), calling the fake TuShare and writing through their own ClickHouse
client to the embedded engine's HTTP server (tests/clickhouse_http.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.quota import token_digest
from plugins_bridge.tushare import fake_server
from plugins_bridge.tushare.fake_server import FakeTushare
from tests.clickhouse_http import ClickHouseHttp
from tests.proxy_server import CountingProxy
from tests.sds_support import (
    DATABASE,
    TOKEN,
    SdsWorker,
    clickhouse,
    fake,
    latest_open_day,
    open_days,
    run_in_snapshot,
    sds_environment,
    sds_python,
    snapshot_src,
)

__all__ = ["clickhouse", "fake", "sds_python", "snapshot_src"]  # fixtures
# the first test builds the snapshot's environment when no earlier run left it (20-30 s),
# and the daily sync runs some fifty tasks: more than the suite's two minutes under load
pytestmark = pytest.mark.timeout(600)

DISCOVER = """
import json, os, pathlib
from plugins_bridge.adapters.stock_datasource import discover, unavailable
from stock_datasource.services.task_worker import _detect_plugin_param_style
plugins = discover()
print(json.dumps({
    "plugins": {p.name: {"style": str(p.planner.style), "schedule": p.schedule,
                         "theirs": _detect_plugin_param_style(p.original),
                         "frequency": p.original.get_schedule().get("frequency"),
                         "deps": list(p.dependencies), "optional": list(p.optional_dependencies),
                         "attempts": p.default_max_attempts,
                         "timeouts": [p.default_timeout_seconds, p.task_timeouts["full"]]}
                 for p in plugins},
    "unavailable": [u.to_dict() for u in unavailable()],
    "token_file": (pathlib.Path.home() / "tk.csv").exists(),
}))
"""


def _rows(ch: ClickHouseHttp, table: str, where: str = "") -> int:
    text = ch.query(f"SELECT count() FROM {table} FINAL {where}", DATABASE)
    return int(text.strip())


def _expected(api: str, day: str) -> int:
    return len(fake_server.APIS[api]({"trade_date": day})[1])


def test_every_real_plugin_is_adapted_as_their_worker_sees_it(
        sds_python: str, snapshot_src: Path) -> None:
    found = run_in_snapshot(sds_python, snapshot_src, DISCOVER, {"TUSHARE_TOKEN": TOKEN})
    plugins: dict[str, Any] = found["plugins"]
    # 74 plugin modules: one cannot be imported here (yfinance is not installed), two
    # are disabled in their config.json
    assert len(plugins) == 71
    [missing] = found["unavailable"]
    assert missing["name"] == "stock_datasource.plugins.tushare_hk_daily"
    assert "No module named 'yfinance'" in missing["reason"]
    # the argument style of every plugin is the one stock_datasource's worker picks
    assert {n: p["style"] for n, p in plugins.items()} == \
        {n: p["theirs"] for n, p in plugins.items()}
    assert Counter(p["style"] for p in plugins.values()) == {
        "trade_date": 32, "date_range": 28, "no_params": 7, "entity_code": 3,
        "month_range": 1}
    # its unified scheduler: one daily job, weekly on Saturday, monthly on the 1st
    expected = {"daily": "daily", "weekly": "weekly", "monthly": "monthly",
                "realtime": None}
    assert {n: p["schedule"] for n, p in plugins.items()} == \
        {n: expected[p["frequency"]] for n, p in plugins.items()}
    assert sum(p["schedule"] == "daily" for p in plugins.values()) == 41
    assert plugins["tushare_daily"]["deps"] == ["tushare_stock_basic"]
    assert plugins["tushare_daily"]["optional"] == ["tushare_adj_factor"]
    assert {(p["attempts"], *p["timeouts"]) for p in plugins.values()} == {(3, 3600, 7200)}
    assert found["token_file"] is False  # tushare.set_token() wrote nothing to $HOME


@pytest.fixture(scope="module")
def worker(sds_python: str, snapshot_src: Path, clickhouse: ClickHouseHttp, fake: FakeTushare,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SdsWorker, Path]]:
    from tests.redis_server import RedisServer

    server = RedisServer().start()
    home = tmp_path_factory.mktemp("home")
    env = sds_environment(server.url, snapshot_src, clickhouse, home,
                          STOCKQ_TUSHARE_URL=fake.url)
    running = SdsWorker(sds_python, env, tmp_path_factory.mktemp("log") / "worker.log",
                        server.url)
    running.process.wait_started(timeout=120)
    yield running, home
    running.stop()
    server.cleanup()


def test_incremental_without_dates_runs_the_latest_trading_day(
        worker: tuple[SdsWorker, Path], clickhouse: ClickHouseHttp, snapshot_src: Path) -> None:
    sds, _ = worker
    task = sds.done(sds.submit("tushare_daily", task_type="incremental"))
    day = latest_open_day(snapshot_src)
    assert task.status == "completed", task.error_message
    assert task.checkpoint == day
    where = f"WHERE trade_date = '{day[:4]}-{day[4:6]}-{day[6:]}'"
    rows = _expected("daily", day)
    assert rows > 0
    assert _rows(clickhouse, "ods_daily", where) == rows
    assert _rows(clickhouse, "fact_daily_bar", where) == rows
    assert task.records_processed == 2 * rows  # both tables, as the plugin counts them


def test_incremental_for_a_date_and_full_over_a_range(
        worker: tuple[SdsWorker, Path], clickhouse: ClickHouseHttp, snapshot_src: Path) -> None:
    sds, _ = worker
    one = sds.done(sds.submit("tushare_adj_factor", task_type="incremental",
                              trade_dates=["20240108"]))
    assert one.status == "completed", one.error_message
    assert one.records_processed == _expected("adj_factor", "20240108") == \
        _rows(clickhouse, "ods_adj_factor", "WHERE trade_date = '2024-01-08'")
    full = sds.done(sds.submit("tushare_adj_factor", task_type="full",
                               start_date="20240115", end_date="20240121"))
    days = open_days(snapshot_src, "20240115", "20240121")
    assert full.status == "completed", full.error_message
    assert full.checkpoint == days[-1] and len(days) == 5
    loaded = _rows(clickhouse, "ods_adj_factor",
                   "WHERE trade_date BETWEEN '2024-01-15' AND '2024-01-21'")
    assert full.records_processed == loaded == sum(_expected("adj_factor", d) for d in days)
    # a plugin that takes no arguments runs once (its own range)
    calendar = sds.done(sds.submit("tushare_trade_calendar", task_type="full"))
    assert calendar.status == "completed", calendar.error_message
    assert calendar.records_processed == _rows(clickhouse, "ods_trade_calendar") > 1000


def test_backfill_over_a_range_runs_each_trading_day(
        worker: tuple[SdsWorker, Path], clickhouse: ClickHouseHttp, snapshot_src: Path,
        fake: FakeTushare) -> None:
    sds, _ = worker
    before = len(fake.calls)
    task = sds.done(sds.submit("tushare_daily_basic", task_type="backfill",
                               start_date="20240102", end_date="20240110"))
    days = open_days(snapshot_src, "20240102", "20240110")
    assert task.status == "completed", task.error_message
    asked = [p["trade_date"] for api, p in fake.calls[before:] if api == "daily_basic"]
    assert asked == days
    loaded = _rows(clickhouse, "ods_daily_basic",
                   "WHERE trade_date BETWEEN '2024-01-02' AND '2024-01-10'")
    assert task.records_processed == loaded == sum(_expected("daily_basic", d) for d in days)


def test_a_nested_failure_shows_its_cause(worker: tuple[SdsWorker, Path]) -> None:
    sds, _ = worker
    # tushare_stock_basic replaces dim_security, a table of stock_datasource's deployment
    # that this warehouse lacks: the result says only "load: Failed to truncate ..."
    task = sds.done(sds.submit("tushare_stock_basic", task_type="incremental"))
    assert task.status == "failed"
    assert "load: Failed to truncate dim_security" in task.error_message
    assert "dim_security does not exist" in task.error_message  # the client's own error
    assert task.last_error_type == "error" and task.attempt == 3  # unknown: retried


def test_a_network_failure_is_retried(worker: tuple[SdsWorker, Path], fake: FakeTushare,
                                      clickhouse: ClickHouseHttp) -> None:
    sds, _ = worker
    # the plugin's own tenacity retries its call 3 times, then BasePlugin.run returns
    # only "RetryError[...]": the TuShare error behind it says network, so stockq retries
    fake.fail_next(3, 502, body="Bad Gateway")
    task = sds.done(sds.submit("tushare_adj_factor", task_type="incremental",
                               trade_dates=["20240111"]))
    assert task.status == "completed", task.error_message
    assert task.attempt == 2
    assert task.records_processed == _expected("adj_factor", "20240111") == \
        _rows(clickhouse, "ods_adj_factor", "WHERE trade_date = '2024-01-11'")


def test_tushare_calls_take_the_shared_quota_and_the_task_proxy(
        sds_python: str, snapshot_src: Path, clickhouse: ClickHouseHttp, fake: FakeTushare,
        tmp_path: Path) -> None:
    from tests.redis_server import RedisServer

    fake_host = fake.url.split("/")[2]
    server = RedisServer().start()
    with CountingProxy({"tushare.test": fake_host}) as proxy:
        env = sds_environment(server.url, snapshot_src, clickhouse, tmp_path / "home",
                              STOCKQ_TUSHARE_URL="http://tushare.test/dataapi",
                              STOCKQ_HTTP_PROXY=proxy.url)
        sds = SdsWorker(sds_python, env, tmp_path / "worker.log", server.url)
        try:
            sds.process.wait_started(timeout=120)
            assert proxy.seen == []  # loading the plugins called nothing
            task = sds.done(sds.submit("tushare_daily_basic", task_type="incremental",
                                       trade_dates=["20240112", "20240115"]))
            assert task.status == "completed", task.error_message
        finally:
            sds.stop()
        # only the two TuShare calls went through the proxy (not ClickHouse, not Redis)
        assert proxy.seen == [("POST", "http://tushare.test/dataapi/daily_basic")] * 2
    client = redis.Redis.from_url(server.url)
    try:
        key = f"stock:quota:{token_digest(TOKEN)}:daily_basic"
        assert client.zcard(key) == 2
    finally:
        client.close()
        server.cleanup()
    assert not (tmp_path / "home" / "tk.csv").exists()


PROBLEMS = """
import asyncio, json
from dataclasses import asdict
from aiohttp.test_utils import TestClient, TestServer
from app.api.app import create_app
from app.doctor import check_plugins
from app.settings import load_settings

from app.scheduler.jobs import build_jobs
from plugins_bridge.registry import PluginRegistry

settings = load_settings()
findings = [asdict(f) for f in check_plugins(settings) if f.check == "plugins"]
jobs = {j.name: [j.expression, *j.plugins]
        for j in build_jobs(settings, PluginRegistry.from_settings(settings))}

async def route():
    async with TestClient(TestServer(create_app(settings))) as client:
        reply = await client.get("/api/v1/plugins")
        body = await reply.json()
        return reply.status, len(body["plugins"]), body["unavailable"]

print(json.dumps({"findings": findings, "route": asyncio.run(route()), "jobs": jobs}))
"""


def test_doctor_and_the_plugins_route_name_what_did_not_load(
        sds_python: str, snapshot_src: Path) -> None:
    found = run_in_snapshot(sds_python, snapshot_src, PROBLEMS, {"TUSHARE_TOKEN": TOKEN})
    status, count, unavailable = found["route"]
    assert status == 200 and count == 71  # the five built-ins are replaced by theirs
    [entry] = unavailable
    assert entry["name"] == "stock_datasource.plugins.tushare_hk_daily"
    warned = [f for f in found["findings"] if f["level"] == "warn"]
    assert len(warned) == 1 and "tushare_hk_daily" in warned[0]["detail"]
    assert "yfinance" in warned[0]["detail"] and warned[0]["fix"].startswith("install yfinance")
    # the jobs of stock_datasource's unified scheduler, no job per plugin
    jobs = found["jobs"]
    assert list(jobs) == ["daily_sync", "weekly_sync", "monthly_sync"]
    assert jobs["weekly_sync"] == ["0 10 * * 6", *(f"tushare_{n}" for n in (
        "etf_basic", "etf_index", "hk_basic", "index_basic", "index_monthly", "index_weekly",
        "stock_basic", "ths_index", "weekly"))]
    assert jobs["monthly_sync"][0] == "0 10 1 * *" and len(jobs["monthly_sync"]) == 1 + 15
    assert len(jobs["daily_sync"]) == 1 + 41
    # without the token the plugin manager cannot even be imported: doctor fails and says
    # which variable is missing
    found = run_in_snapshot(sds_python, snapshot_src, PROBLEMS)
    [failed] = [f for f in found["findings"] if f["level"] == "fail"]
    assert "none of the stock_datasource plugins loaded" in failed["detail"]
    assert "TuShare token not configured" in failed["detail"]
    assert "TUSHARE_TOKEN" in failed["fix"]
    assert found["route"][2][0]["name"] == "stock_datasource.core.plugin_manager"


ENQUEUE = """
import json, sys
from stock_datasource.services.task_queue import task_queue
dates = ["2024-01-16", "2024-01-17"]
print(json.dumps([task_queue.enqueue("tushare_adj_factor", "backfill", trade_dates=dates),
                  task_queue.enqueue("tushare_top_list", "backfill", trade_dates=dates,
                                     ts_code="000001.SZ")]))
"""
READ = """
import json, sys
from stock_datasource.services.task_queue import task_queue
print(json.dumps(task_queue.get_task(sys.argv[1]) if len(sys.argv) > 1 else {}))
"""


def test_a_task_of_the_original_producer_runs_as_it_was_queued(
        sds_python: str, snapshot_src: Path, clickhouse: ClickHouseHttp, fake: FakeTushare,
        tmp_path: Path) -> None:
    """stock_datasource's own TaskQueue.enqueue with only REDIS_HOST/REDIS_PORT set (so
    its db 1), dates with dashes and a ts_code: a worker configured the same way runs it."""
    from tests.redis_server import RedisServer
    from tests.workers import WorkerProcess, wait_until

    server = RedisServer().start()
    legacy = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port)}
    try:
        env = sds_environment(server.url, snapshot_src, clickhouse, tmp_path / "home",
                              STOCKQ_TUSHARE_URL=fake.url, **legacy)
        env.pop("STOCKQ_REDIS_URL")
        worker = WorkerProcess(env, tmp_path / "worker.log", python=sds_python)
        try:
            worker.wait_started(timeout=120)
            ids = run_in_snapshot(sds_python, snapshot_src, ENQUEUE,
                                  {**legacy, "TUSHARE_TOKEN": TOKEN})
            db1 = redis.Redis(host="127.0.0.1", port=server.port, db=1, decode_responses=True)
            adj, top = (wait_until(
                lambda i=i: (h := db1.hgetall(f"stock:task:{i}")).get("status") in
                ("completed", "failed") and h, 120, "the original task to end") for i in ids)
            db1.close()
        finally:
            worker.stop()
    finally:
        server.cleanup()
    assert adj["status"] == "completed", adj.get("error_message")
    assert top["status"] == "completed", top.get("error_message")
    # the dashes were removed: a day each, all of its rows
    rows = sum(_expected("adj_factor", d) for d in ("20240116", "20240117"))
    assert adj["records_processed"] == str(rows) and adj["checkpoint"] == "20240117"
    assert _rows(clickhouse, "ods_adj_factor",
                 "WHERE trade_date IN ('2024-01-16', '2024-01-17')") == rows
    # the producer's ts_code reached the plugin that takes one (and TuShare)
    assert [p for api, p in fake.calls if api == "top_list"] == [
        {"trade_date": "20240116", "ts_code": "000001.SZ"},
        {"trade_date": "20240117", "ts_code": "000001.SZ"}]


RUN_DAILY_SYNC = """
import asyncio, json
from aiohttp.test_utils import TestClient, TestServer
from app.api.app import create_app
from app.settings import load_settings

async def run():
    async with TestClient(TestServer(create_app(load_settings()))) as client:
        reply = await client.post("/api/v1/schedules/daily_sync/run", json={})
        return reply.status, await reply.json()

print(json.dumps(asyncio.run(run())))
"""


def test_the_daily_sync_runs_the_daily_plugins_in_dependency_order(
        sds_python: str, snapshot_src: Path, fake: FakeTushare, tmp_path: Path) -> None:
    from app.models import TaskStatus
    from tests.redis_server import RedisServer
    from tests.sds_support import DEPLOYMENT_TABLES, DIM_SECURITY

    found = run_in_snapshot(sds_python, snapshot_src, DISCOVER, {"TUSHARE_TOKEN": TOKEN})
    plugins: dict[str, Any] = found["plugins"]
    daily = {n for n, p in plugins.items() if p["schedule"] == "daily"}
    server = RedisServer().start()
    with ClickHouseHttp(tmp_path / "clickhouse") as ch:
        ch.query(f"CREATE DATABASE {DATABASE}")
        for statement in (*DEPLOYMENT_TABLES, DIM_SECURITY):
            ch.query(statement, DATABASE)
        env = sds_environment(server.url, snapshot_src, ch, tmp_path / "home",
                              STOCKQ_TUSHARE_URL=fake.url)
        sds = SdsWorker(sds_python, env, tmp_path / "worker.log", server.url)
        try:
            sds.process.wait_started(timeout=120)
            status, fire = run_in_snapshot(sds_python, snapshot_src, RUN_DAILY_SYNC, env)
            assert status == 202, fire
            client = redis.Redis.from_url(server.url, decode_responses=True)
            ids = client.lrange(f"stock:execution:{fire['execution_id']}:tasks", 0, -1)
            client.close()
            tasks = {t.plugin_name: t for t in (sds.done(i, timeout=600) for i in ids)}
            day = fire["trade_date"]
            where = f"WHERE trade_date = '{day[:4]}-{day[4:6]}-{day[6:]}'"
            counts = {t: _rows(ch, t, where) for t in ("ods_daily", "ods_adj_factor",
                                                        "ods_daily_basic")}
            listed = _rows(ch, "dim_security")
        finally:
            sds.stop()
            server.cleanup()
    # every daily plugin, with the lists they need (stockq adds required dependencies)
    needed = {d for n in daily for d in plugins[n]["deps"]}
    assert set(tasks) == daily | needed and fire["tasks"] == len(tasks)
    # each one started after what it needs (in the batch) had completed
    for name, task in tasks.items():
        for dep in (*plugins[name]["deps"], *plugins[name]["optional"]):
            if dep in tasks and task.status == TaskStatus.COMPLETED:
                assert tasks[dep].status == TaskStatus.COMPLETED
                assert task.started_at >= tasks[dep].completed_at, (name, dep)
    for name, api in (("tushare_daily", "daily"), ("tushare_adj_factor", "adj_factor"),
                      ("tushare_daily_basic", "daily_basic")):
        assert tasks[name].status == TaskStatus.COMPLETED, tasks[name].error_message
        assert counts[f"ods_{api}"] == _expected(api, day) > 0
    assert tasks["tushare_stock_basic"].status == TaskStatus.COMPLETED
    assert listed == len(fake_server.STOCKS)
