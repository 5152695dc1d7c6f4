"""stock_datasource's data-management routes with its own real plugins (the snapshot's
environment, tests/sds_env.py): what its screens read about a plugin comes from the
plugin itself (category, role, config.json, schema.json), the schedule screens list its
scheduled plugins, the schedule trigger and a group trigger enqueue them, and every
answer has the fields its frontend reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.datamanage_contract import check_model, check_ts, frontend, route_of
from tests.redis_server import RedisServer
from tests.sds_support import TOKEN, run_in_snapshot
from tests.sds_support import sds_python as sds_python  # fixtures
from tests.sds_support import snapshot_src as snapshot_src

SCREENS = """
import asyncio, json
from aiohttp.test_utils import TestClient, TestServer
from app.api.app import create_app
from app.settings import load_settings

CALLS = [
    ("getPlugins", "GET", "/plugins", None),
    ("getPluginDetail", "GET", "/plugins/tushare_daily/detail", None),
    ("getPluginDependencies", "GET", "/plugins/tushare_daily/dependencies", None),
    ("getDependencyGraph", "GET", "/plugins/dependency-graph", None),
    ("getPluginScheduleConfigs", "GET", "/schedule/plugins", None),
    ("getScheduleConfig", "GET", "/schedule/config", None),
    ("triggerScheduleNow", "POST", "/schedule/trigger", None),
    ("getPluginGroups", "GET", "/groups", None),
    ("triggerPluginGroup", "POST", "/groups/stock_datasource/trigger",
     {"task_type": "incremental"}),
    ("triggerSync", "POST", "/sync/trigger",
     {"plugin_name": "tushare_adj_factor", "task_type": "backfill",
      "trade_dates": ["2024-01-16"]}),
    ("getSyncTasks", "GET", "/sync/tasks?page=1&page_size=5", None),
]

async def run():
    out = {}
    async with TestClient(TestServer(create_app(load_settings()))) as client:
        for name, verb, path, body in CALLS:
            kw = {"json": body} if body is not None else {}
            reply = await client.request(verb, "/api/datamanage" + path, **kw)
            out[name] = [reply.status, await reply.json()]
    return out

print(json.dumps(asyncio.run(run()), ensure_ascii=False))
"""


def test_the_screens_with_the_real_plugins(sds_python: str, snapshot_src: Path) -> None:
    server = RedisServer().start()
    try:
        found: dict[str, Any] = run_in_snapshot(sds_python, snapshot_src, SCREENS, {
            "TUSHARE_TOKEN": TOKEN, "STOCKQ_REDIS_URL": server.url,
            "STOCKQ_BUILTIN_PLUGINS": "true"})
    finally:
        server.cleanup()
    for name, (status, answer) in found.items():
        assert status == 200, (name, answer)
        [call] = [c for c in frontend().calls if c.method == name]
        check_ts(answer, call.returns, name)
        route = route_of(call.verb, call.path)
        assert route is not None
        if route.response_model:
            check_model(answer, route.response_model, name)

    plugins = {p["name"]: p for p in found["getPlugins"][1]}
    assert len(plugins) == 71  # theirs, replacing the five built-ins of the same names
    daily = plugins["tushare_daily"]
    assert (daily["category"], daily["role"]) == ("cn_stock", "primary")
    assert daily["schedule_frequency"] == "daily" and daily["schedule_time"] == "18:00"
    assert daily["dependencies"] == ["tushare_stock_basic"]
    assert plugins["tushare_stock_basic"]["role"] == "basic"
    assert plugins["tushare_hk_basic"]["category"] == "hk_stock"
    assert {p["category"] for p in plugins.values()} >= {"cn_stock", "hk_stock", "index",
                                                          "etf_fund"}

    detail = found["getPluginDetail"][1]
    schema = detail["table_schema"]
    assert schema["table_name"] == "ods_daily" and schema["engine"] == "ReplacingMergeTree"
    assert schema["order_by"] == ["ts_code", "trade_date"]
    assert {c["name"] for c in schema["columns"]} >= {"ts_code", "trade_date", "close"}
    assert detail["config"]["parameters_schema"]  # its config.json's
    # this sidecar has no ClickHouse: nothing is read, no data reported missing
    assert found["getPluginDependencies"][1]["satisfied"] is True

    scheduled = {p["plugin_name"]: p for p in found["getPluginScheduleConfigs"][1]}
    assert scheduled["tushare_daily"]["schedule_frequency"] == "daily"
    assert scheduled["tushare_stock_basic"]["schedule_frequency"] == "weekly"
    assert list(scheduled)[0] in {n for n, p in plugins.items() if p["role"] == "basic"}

    fired = found["triggerScheduleNow"][1]
    assert fired["status"] == "running" and fired["group_name"] == "daily_sync"
    assert fired["total_plugins"] == len(fired["task_ids"]) > 40  # the daily plugins

    groups = found["getPluginGroups"][1]
    assert [g["group_id"] for g in groups["items"]] == ["stock_datasource"]
    group_run = found["triggerPluginGroup"][1]
    assert group_run["trigger_type"] == "group" and group_run["total_plugins"] == 71

    task = found["triggerSync"][1]
    assert task["plugin_name"] == "tushare_adj_factor" and task["trade_dates"] == [
        "2024-01-16"]
    listed = found["getSyncTasks"][1]
    assert listed["total"] == 1 + fired["total_plugins"] + group_run["total_plugins"]
