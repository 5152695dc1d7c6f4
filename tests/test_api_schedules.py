"""The HTTP sidecar's schedule routes on a real Redis: GET /api/v1/schedules and
POST /api/v1/schedules/{name}/run, with the plugins of tests.schedule_plugins
(``bars`` and ``indicators`` in the daily sync, ``report`` on its own weekly trigger)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from app.api.app import create_app
from app.keys import Keys
from app.scheduler.calendar import offline_day
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry
from tests.api_support import V1, assert_error_shape, fails, ok
from tests.api_support import registry as unscheduled_registry
from tests.api_support import store as store  # fixture: pytest finds it by name here

SH = ZoneInfo("Asia/Shanghai")
PLUGINS = "tests.schedule_plugins:PLUGINS"
TOKEN = "api-s3cret-7c6b5a4d"


def scheduled_registry() -> PluginRegistry:
    return PluginRegistry.load((PLUGINS,), use_entry_points=False)


async def _serve(settings: Settings, registry: PluginRegistry
                 ) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings, registry=registry))) as client:
        yield client


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async for client in _serve(settings, scheduled_registry()):
        yield client


@pytest.fixture
async def bare_api(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """An app whose plugins have no schedule: the daily sync has nothing to run."""
    async for client in _serve(settings, unscheduled_registry()):
        yield client


@pytest.fixture
async def locked_api(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async for client in _serve(replace(settings, api_token=TOKEN), scheduled_registry()):
        yield client


def latest_trading_day() -> date:
    """The latest trading day whose data is published (from 17:00 Asia/Shanghai)."""
    day = Settings().data_day()
    while not offline_day(day).trading:
        day -= timedelta(days=1)
    return day


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in body["items"]}


def execution_count(store: redis.Redis) -> int:
    return int(store.zcard(Keys("stock").execution_index))


# ------------------------------------------------------------------ list
async def test_list_schedules(api: TestClient[Any, Any]) -> None:
    before = datetime.now(SH)
    body = await ok(api, "GET", f"{V1}/schedules")
    assert set(body) == {"items", "calendar", "settings"}
    assert body["settings"] == {  # no schedule edit made
        "version": 0, "enabled": True, "daily_sync_cron": None, "include_optional": False,
        "skip_non_trading_days": True, "plugins": {}, "updated_at": None}
    assert [item["name"] for item in body["items"]] == ["daily_sync", "plugin:report"]
    assert all(item["enabled"] for item in body["items"])
    jobs = by_name(body)

    daily = jobs["daily_sync"]
    assert daily["trigger"] == "0 18 * * 1-5"
    assert daily["timezone"] == "Asia/Shanghai"
    assert daily["plugins"] == ["bars", "indicators"]
    assert daily["last_fire"] is None
    assert isinstance(daily["description"], str) and daily["description"]

    report = jobs["plugin:report"]
    assert report["trigger"] == "30 19 * * fri" and report["plugins"] == ["report"]
    assert report["last_fire"] is None

    for job in (daily, report):
        text = job["next_run_at"]
        assert text.endswith("+08:00"), text
        nxt = datetime.fromisoformat(text)
        assert nxt.utcoffset() == timedelta(hours=8)
        assert before < nxt <= before + timedelta(days=7)
    daily_next = datetime.fromisoformat(daily["next_run_at"])
    assert (daily_next.hour, daily_next.minute, daily_next.second) == (18, 0, 0)
    assert daily_next.weekday() < 5
    report_next = datetime.fromisoformat(report["next_run_at"])
    assert report_next.weekday() == 4 and (report_next.hour, report_next.minute) == (19, 30)

    assert body["calendar"] == {"exchange": "SSE", "source": "offline"}


async def test_list_shows_the_cached_tushare_calendar(
        api: TestClient[Any, Any], store: redis.Redis) -> None:
    store.hset("stock:calendar:SSE", mapping={
        "exchange": "SSE", "source": "tushare", "start": "2025-01-01", "end": "2027-12-31",
        "open_days": "20261130", "fetched_at": "2026-11-30T00:00:00+00:00",
        "fetched_at_epoch": "1796000000"})
    body = await ok(api, "GET", f"{V1}/schedules")
    calendar = body["calendar"]
    assert (calendar["exchange"], calendar["source"]) == ("SSE", "tushare")
    assert calendar["fetched_at"] == "2026-11-30T00:00:00+00:00"


# ------------------------------------------------------------------ run
async def test_run_daily_sync_now(api: TestClient[Any, Any], store: redis.Redis) -> None:
    trade_date = latest_trading_day().strftime("%Y%m%d")
    fire = await ok(api, "POST", f"{V1}/schedules/daily_sync/run", 202)
    assert fire["job"] == "daily_sync"
    assert fire["outcome"] == "fired" and fire["trigger"] == "manual"
    assert fire["tasks"] == 4 and fire["trade_date"] == trade_date
    assert fire["execution_id"] and fire["reason"] == ""
    assert fire["slot_at"].endswith("+08:00")

    execution = await ok(api, "GET", f"{V1}/executions/{fire['execution_id']}")
    assert execution["trigger_type"] == "manual" and execution["group_name"] == "daily_sync"
    assert execution["total"] == 4
    assert sorted(t["plugin_name"] for t in execution["tasks"]) == [
        "bars", "basics", "calendar", "indicators"]
    assert all(t["trade_dates"] == [trade_date] and t["trigger"] == "manual"
               for t in execution["tasks"])
    assert execution_count(store) == 1

    jobs = by_name(await ok(api, "GET", f"{V1}/schedules"))
    last = jobs["daily_sync"]["last_fire"]
    assert last is not None
    assert last["execution_id"] == fire["execution_id"]
    assert last["trigger"] == "manual" and last["outcome"] == "fired"
    assert last["slot_at"] == fire["slot_at"]
    datetime.fromisoformat(last["fired_at"])
    assert jobs["plugin:report"]["last_fire"] is None

    # a manual run settles no slot: running it again is a second execution
    again = await ok(api, "POST", f"{V1}/schedules/daily_sync/run", 202)
    assert again["outcome"] == "fired" and again["execution_id"] != fire["execution_id"]
    assert execution_count(store) == 2


async def test_run_a_plugin_job_now(api: TestClient[Any, Any]) -> None:
    fire = await ok(api, "POST", f"{V1}/schedules/plugin:report/run", 202)
    assert fire["job"] == "plugin:report" and fire["outcome"] == "fired"
    assert fire["trigger"] == "manual" and fire["tasks"] == 1


async def test_run_an_unknown_schedule_is_404(api: TestClient[Any, Any],
                                              store: redis.Redis) -> None:
    message = await fails(api, "POST", f"{V1}/schedules/nightly/run", 404,
                          "schedule_not_found")
    assert "'nightly'" in message
    assert "daily_sync" in message and "plugin:report" in message
    assert execution_count(store) == 0


async def test_run_with_nothing_scheduled_is_409(bare_api: TestClient[Any, Any],
                                                 store: redis.Redis) -> None:
    body = await ok(bare_api, "GET", f"{V1}/schedules")
    assert [(j["name"], j["plugins"]) for j in body["items"]] == [("daily_sync", [])]
    message = await fails(bare_api, "POST", f"{V1}/schedules/daily_sync/run", 409,
                          "nothing_to_run")
    assert "daily_sync" in message and "no plugin" in message
    assert execution_count(store) == 0
    assert store.keys("stock:execution:*") == []
    assert store.keys("stock:task:*") == []


# ------------------------------------------------------------------ auth and docs
async def test_schedule_routes_need_the_bearer_token(locked_api: TestClient[Any, Any],
                                                     store: redis.Redis) -> None:
    for method, path in (("GET", f"{V1}/schedules"),
                         ("POST", f"{V1}/schedules/daily_sync/run")):
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            async with locked_api.request(method, path, headers=headers) as resp:
                assert resp.status == 401, (method, path, headers)
                assert resp.headers.get("WWW-Authenticate") == "Bearer"
                body = await resp.json()
            assert_error_shape(body)
            assert body["error"]["code"] == "unauthorized"
            assert TOKEN not in body["error"]["message"]
    assert execution_count(store) == 0
    auth = {"Authorization": f"Bearer {TOKEN}"}
    listed = await ok(locked_api, "GET", f"{V1}/schedules", headers=auth)
    assert len(listed["items"]) == 2
    fired = await ok(locked_api, "POST", f"{V1}/schedules/daily_sync/run", 202, headers=auth)
    assert fired["outcome"] == "fired"
    assert execution_count(store) == 1


async def test_schedule_routes_are_in_the_openapi_document(api: TestClient[Any, Any]) -> None:
    doc = await ok(api, "GET", "/openapi.json")
    listing = doc["paths"][f"{V1}/schedules"]["get"]
    assert listing["tags"] == ["schedules"] and "200" in listing["responses"]
    assert "401" in listing["responses"]
    run = doc["paths"][f"{V1}/schedules/{{name}}/run"]["post"]
    assert run["tags"] == ["schedules"]
    assert {"202", "401", "404", "409"} <= set(run["responses"])
    assert [p["name"] for p in run["parameters"]] == ["name"]
    assert run["parameters"][0]["in"] == "path" and run["parameters"][0]["required"]
    assert run["security"] == [{"bearer": []}] and listing["security"] == [{"bearer": []}]
    schemas = doc["components"]["schemas"]
    assert "ScheduleList" in schemas and "Fire" in schemas
