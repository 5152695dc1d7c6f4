"""Every route stock_datasource's frontend calls for sync tasks, schedules, executions,
plugins and groups, called by the name of the client's own function with the payloads
of its own request types, on a real Redis and an embedded ClickHouse (the audit history,
the plugins' tables): each answer has every field the frontend's TypeScript type and
the original's response model name, of the right type (tests/datamanage_contract.py).
The test also fails when the client gains a call of this part that it does not make."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from app.api.app import create_app
from app.audit import AuditFlusher
from app.queue import TaskQueue
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.warehouse import Warehouse
from tests.datamanage_contract import (
    check_model,
    check_ts,
    frontend,
    route_of,
)
from tests.datamanage_plugins import CALENDAR, PLUGINS, PRICES
from tests.test_datamanage_contract import in_scope


@dataclass
class Frontend:
    """Calls the sidecar as the frontend's ``datamanageApi.<method>`` does."""

    client: TestClient[Any, Any]
    called: set[str] = field(default_factory=set)

    async def call(self, method: str, *args: str, body: Any = None, query: str = "",
                   request_type: str | None = None, status: int = 200) -> Any:
        [spec] = [c for c in frontend().calls if c.method == method]
        path = spec.path
        for arg in args:
            path = path.replace("{param}", arg, 1)
        if body is not None and request_type:  # a payload of the frontend's own type
            fields = frontend().interfaces[request_type]
            assert set(body) <= set(fields), (method, set(body) - set(fields))
            assert request_type in spec.params or request_type.startswith(
                ("CheckDataExists", "GroupDataExists", "PartialRetry")), spec.params
        kw = {"json": body} if body is not None else {}
        async with self.client.request(spec.verb, path + (f"?{query}" if query else ""),
                                       **kw) as resp:
            text = await resp.text()
            assert resp.status == status, (method, resp.status, text[:500])
            answer = json.loads(text)
        if status == 200:
            check_ts(answer, spec.returns, method)
            route = route_of(spec.verb, spec.path)
            assert route is not None
            if route.response_model:
                check_model(answer, route.response_model, method)
            self.called.add(method)
        else:
            assert set(answer) == {"detail"}, answer
        return answer


@pytest.fixture
async def env(settings: Settings) -> AsyncIterator[tuple[Frontend, TaskQueue, Warehouse]]:
    warehouse = Warehouse("chdb://" + tempfile.mkdtemp(prefix="stockq-dm-fields-"))
    app = create_app(settings, registry=PluginRegistry(PLUGINS), warehouse=warehouse)
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    worker = TaskQueue(client, settings)
    try:
        async with TestClient(TestServer(app)) as http:
            yield Frontend(http), worker, warehouse
    finally:
        await worker.aclose()
        await client.aclose()
        warehouse.close()


async def run_next(worker: TaskQueue, warehouse: Warehouse, *, fail: str = "") -> str:
    """Play a worker: claim the next task, load its rows, end it."""
    task = await worker.claim("w1")
    assert task is not None
    if fail:
        await worker.fail(task, "plugin_error", fail, retryable=False)
        return task.task_id
    day = (task.trade_dates or [date.today().strftime("%Y%m%d")])[0]
    iso = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    spec, rows = (CALENDAR, [[iso, 1]]) if task.plugin_name == "dm_calendar" else (
        PRICES, [["600000.SH", iso, 10.5]])
    if task.plugin_name in ("dm_calendar", "dm_prices"):
        warehouse.ensure_table(spec)
        warehouse.insert(spec, rows, [1] * len(rows))
    await worker.complete(task, records=len(rows))
    return task.task_id


async def test_every_field_the_frontend_reads(
        env: tuple[Frontend, TaskQueue, Warehouse]) -> None:
    fe, worker, warehouse = env
    await worker.heartbeat("w1", {"concurrency": 2}, ttl=60)

    # ---- plugins before any data
    plugins = await fe.call("getPlugins")
    assert {p["name"] for p in plugins} == {"dm_calendar", "dm_prices", "dm_fails", "dm_slow"}
    assert [p["name"] for p in await fe.call("getPlugins", query="category=system")] == [
        "dm_calendar"]
    await fe.call("getPlugins", query="role=basic")
    await fe.call("getPlugins", query="category=nope", status=400)
    graph = await fe.call("getDependencyGraph")
    assert graph["reverse_graph"]["dm_calendar"] == ["dm_prices"]
    deps = await fe.call("getPluginDependencies", "dm_prices")
    assert deps["satisfied"] is False and deps["missing_data"] == {
        "dm_calendar": "No data in table"}
    await fe.call("checkPluginDependencies", "dm_prices")

    # ---- sync: the dependency check, then a backfill of the dependency
    refused = await fe.call("triggerSync", body={"plugin_name": "dm_prices",
                                                 "task_type": "incremental"},
                            request_type="TriggerSyncRequest", status=400)
    assert refused["detail"]["missing_data"] == {"dm_calendar": "No data in table"}
    calendar = await fe.call("triggerSync", body={
        "plugin_name": "dm_calendar", "task_type": "backfill",
        "trade_dates": ["2024-01-02", "2024-01-03"], "force_overwrite": False},
        request_type="TriggerSyncRequest")
    assert calendar["status"] == "pending" and calendar["trade_dates"] == [
        "2024-01-02", "2024-01-03"]
    await run_next(worker, warehouse)
    done = await fe.call("getSyncStatus", calendar["task_id"])
    assert done["status"] == "completed" and done["records_processed"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00", done["completed_at"])

    prices = await fe.call("triggerSync", body={
        "plugin_name": "dm_prices", "task_type": "backfill", "trade_dates": ["2024-01-02"],
        "force_overwrite": True, "data_source": "akshare"}, request_type="TriggerSyncRequest")
    assert prices["data_source"] == "akshare"
    await fe.call("triggerSync", body={"plugin_name": "dm_prices", "data_source": "qmt"},
                  request_type="TriggerSyncRequest", status=400)
    listed = await fe.call("getSyncTasks", query="page=1&page_size=1&sort_by=created_at"
                                                 "&sort_order=desc")
    assert listed["total"] == 2 and listed["total_pages"] == 2
    assert [t["task_id"] for t in listed["items"]] == [prices["task_id"]]
    assert (await fe.call("getSyncTasks", query="status=completed&plugin_name=CAL"))[
        "items"][0]["task_id"] == calendar["task_id"]
    assert (await fe.call("cancelSyncTask", prices["task_id"]))["success"] is True
    assert (await fe.call("deleteSyncTask", prices["task_id"]))["success"] is True
    await fe.call("getSyncStatus", prices["task_id"], status=404)

    failing = await fe.call("triggerSync", body={"plugin_name": "dm_fails"},
                            request_type="TriggerSyncRequest")
    await run_next(worker, warehouse, fail="the source refused the request")
    again = await fe.call("retrySyncTask", failing["task_id"])
    assert again["task_id"] != failing["task_id"] and again["status"] == "pending"
    await fe.call("retrySyncTask", failing["task_id"], status=400)  # retried already
    await run_next(worker, warehouse, fail="refused again")

    # ---- history from the ClickHouse audit
    await AuditFlusher(worker, warehouse).step()
    history = await fe.call("getSyncHistory", query="limit=20")
    assert {h["task_id"] for h in history} >= {calendar["task_id"], failing["task_id"]}
    only = await fe.call("getSyncHistory", query="limit=20&plugin_name=dm_fails")
    assert {h["plugin_name"] for h in only} == {"dm_fails"} and len(only) == 2
    assert only[0]["error_message"] == "refused again"

    # ---- parallelism
    config = await fe.call("getSyncConfig")
    assert config["max_concurrent_tasks"] == 2 and config["max_date_threads"] == 1
    await fe.call("updateSyncConfig", body={"max_concurrent_tasks": 2, "max_date_threads": 1},
                  request_type="SyncConfigRequest")
    await fe.call("updateSyncConfig", body={"max_concurrent_tasks": 3},
                  request_type="SyncConfigRequest", status=409)

    # ---- batch
    batch = await fe.call("batchTriggerSync", body={
        "plugin_names": ["dm_prices"], "task_type": "backfill", "include_optional": True,
        "trade_dates": ["2024-01-03"]}, request_type="BatchSyncRequest")
    assert batch["execution_order"] == ["dm_calendar", "dm_prices"]
    assert [t["order"] for t in batch["tasks"]] == [1, 2]
    for _ in batch["tasks"]:
        await run_next(worker, warehouse)

    # ---- plugin detail, status, data, data source, enable/disable
    detail = await fe.call("getPluginDetail", "dm_prices")
    assert detail["table_schema"]["table_name"] == "dm_prices"
    assert detail["config"]["available_data_sources"] == ["tushare", "akshare"]
    status = await fe.call("getPluginStatus", "dm_prices")
    assert status["latest_date"] == "2024-01-03" and status["total_records"] == 1
    preview = await fe.call("getPluginData", "dm_prices", query="page=1&page_size=1")
    assert preview["total_count"] == 1 and preview["data"][0]["trade_date"] == "2024-01-03"
    exists = await fe.call("checkDataExists", "dm_prices",
                           body={"dates": ["2024-01-03", "2024-01-05"]},
                           request_type="GroupDataExistsCheckRequest")
    assert exists["existing_dates"] == ["2024-01-03"]
    changed = await fe.call("updatePluginDataSource", "dm_prices",
                            body={"data_source": "akshare"})
    assert changed["config"]["data_source"] == "akshare"
    await fe.call("disablePlugin", "dm_prices")
    assert not next(p for p in await fe.call("getPlugins")
                    if p["name"] == "dm_prices")["is_enabled"]
    await fe.call("enablePlugin", "dm_prices")

    # ---- schedule
    await fe.call("getScheduleConfig")
    edited = await fe.call("updateScheduleConfig", body={
        "enabled": True, "execute_time": "17:30", "frequency": "weekday",
        "include_optional_deps": True, "skip_non_trading_days": True},
        request_type="ScheduleConfigRequest")
    assert edited["cron_expression"] == "30 17 * * 1-5" and edited["execute_time"] == "17:30"
    listed_plugins = await fe.call("getPluginScheduleConfigs")
    assert [p["plugin_name"] for p in listed_plugins] == ["dm_prices"]
    await fe.call("updatePluginScheduleConfig", "dm_prices", body={
        "schedule_enabled": True, "full_scan_enabled": False},
        request_type="PluginScheduleConfigRequest")
    fired = await fe.call("triggerScheduleNow")
    assert fired["status"] == "running" and fired["trigger_type"] == "manual"
    assert fired["group_name"] == "daily_sync" and len(fired["task_ids"]) == 2
    hist = await fe.call("getScheduleHistory", query="days=7&limit=50")
    assert hist["items"][0]["execution_id"] == fired["execution_id"]
    await fe.call("getScheduleHistory", query="days=7&limit=50&status=running"
                                              "&trigger_type=manual")
    execution = await fe.call("getExecutionDetail", fired["execution_id"])
    assert [t["plugin_name"] for t in execution["tasks"]] == ["dm_calendar", "dm_prices"]
    stopped = await fe.call("stopExecution", fired["execution_id"])
    assert stopped["status"] == "interrupted" and stopped["can_retry"] is True
    resumed = await fe.call("retryScheduleExecution", fired["execution_id"])
    assert resumed["status"] == "running"
    assert len((await fe.call("getExecutionDetail", fired["execution_id"]))["tasks"]) == 2
    await fe.call("stopExecution", fired["execution_id"])
    await fe.call("deleteScheduleExecution", fired["execution_id"])

    failed = await fe.call("triggerSync", body={"plugin_name": "dm_fails"},
                           request_type="TriggerSyncRequest")
    await run_next(worker, warehouse, fail="no")
    [record] = [r for r in (await fe.call("getScheduleHistory",
                                          query="status=failed"))["items"]
                if failed["task_id"] in r["task_ids"]]
    assert record["can_retry"] is True and record["group_name"] == "dm_fails"
    retried = await fe.call("retryScheduleExecution", record["execution_id"])
    assert retried["status"] == "running"
    await run_next(worker, warehouse, fail="no, again")
    retried_id = (await fe.call("getExecutionDetail", record["execution_id"]))["tasks"][0][
        "task_id"]
    partial = await fe.call("partialRetryExecution", record["execution_id"],
                            body={"task_ids": [retried_id]},
                            request_type="PartialRetryRequest")
    assert partial["execution_id"] == record["execution_id"]

    # ---- groups
    groups = await fe.call("getPluginGroups")
    assert groups["predefined_count"] == 1 and groups["items"][0]["group_id"] == "dm"
    assert (await fe.call("getPredefinedGroups"))["categories"][0]["key"] == "daily"
    made = await fe.call("createPluginGroup", body={
        "name": "evening", "description": "after the close", "plugin_names": ["dm_prices"],
        "default_task_type": "backfill"}, request_type="PluginGroupCreateRequest")
    group_detail = await fe.call("getPluginGroup", made["group_id"])
    assert group_detail["plugin_status"] == [{"name": "dm_prices", "exists": True,
                                              "has_data": True}]
    await fe.call("updatePluginGroup", made["group_id"], body={
        "name": "evening sync", "plugin_names": ["dm_prices", "dm_calendar"]},
        request_type="PluginGroupUpdateRequest")
    await fe.call("updatePluginGroup", "dm", body={"name": "x"},
                  request_type="PluginGroupUpdateRequest", status=403)
    checked = await fe.call("checkGroupDataExists", made["group_id"],
                            body={"dates": ["2024-01-03"]},
                            request_type="GroupDataExistsCheckRequest")
    assert checked["all_plugins_have_data"] is True
    group_run = await fe.call("triggerPluginGroup", made["group_id"], body={
        "task_type": "backfill", "trade_dates": ["2024-01-04", "2024-01-05"]},
        request_type="PluginGroupTriggerRequest")
    assert group_run["trigger_type"] == "group" and group_run["group_name"] == "evening sync"
    assert group_run["date_range"] == "2024-01-04 ~ 2024-01-05"
    await fe.call("deletePluginGroup", made["group_id"])

    # ---- the deprecated scheduler routes
    assert (await fe.call("getSchedulerStatus"))["data_sync_time"] == "17:30"
    await fe.call("updateSchedulerConfig", body={"enabled": True, "data_sync_time": "18:00"},
                  request_type="SchedulerConfigUpdate")
    await fe.call("startScheduler")
    await fe.call("stopScheduler")
    ran = await fe.call("runSchedulerNow", query="task_type=data_sync")
    assert ran["success"] is True

    wanted = {c.method for c in frontend().calls if in_scope(c.path)}
    assert fe.called == wanted, sorted(wanted - fe.called)
