"""Schedule edits kept in Redis (app/scheduler/overrides.py): what each one changes in
the jobs and their fires (stepped clock, real redis-server), and a real ``stockq
scheduler`` process picking edits up while it runs, without a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from app import queries
from app.errors import InvalidInput
from app.queue import TaskQueue
from app.scheduler import overrides
from app.scheduler.calendar import TradingCalendar
from app.scheduler.jobs import DAILY_SYNC, build_jobs, find_job
from app.scheduler.overrides import PluginOverride, ScheduleOverrides
from app.scheduler.service import ScheduleService
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry
from tests.conftest import FakeClock
from tests.test_scheduler_processes import open_today
from tests.workers import WorkerProcess, wait_until, worker_env

SH = ZoneInfo("Asia/Shanghai")
PLUGINS = "tests.schedule_plugins:PLUGINS"


def at(*args: int) -> float:
    return datetime(*args, tzinfo=SH).timestamp()  # type: ignore[misc]


@pytest.fixture
async def service(client: aioredis.Redis, settings: Settings, clock: FakeClock
                  ) -> AsyncIterator[ScheduleService]:
    sched = replace(settings, plugins=(PLUGINS,))
    registry = PluginRegistry.load(sched.plugins, use_entry_points=False)
    queue = TaskQueue(client, sched, clock=clock)
    svc = ScheduleService(queue, registry, TradingCalendar(client, sched, clock=clock),
                          build_jobs(sched, registry), scheduler_id="sched-a", clock=clock)
    yield svc
    await queue.aclose()


async def tasks_of(svc: ScheduleService, execution_id: str) -> dict[str, object]:
    execution = await queries.get_execution(svc.queue, execution_id)
    ids = await queries.execution_task_ids(svc.queue, execution)
    return {t.plugin_name: t for t in await queries.get_many(svc.queue, ids) if t}


async def test_edits_round_trip_and_raise_the_version(service: ScheduleService,
                                                      clock: FakeClock) -> None:
    queue = service.queue
    assert await overrides.load(queue) == ScheduleOverrides()
    assert await overrides.version(queue) == 0
    edited = await overrides.update(queue, enabled=False, daily_sync_cron="30 9  * * *",
                                    plugins={"bars": {"schedule_enabled": False,
                                                      "full_scan_enabled": True}})
    assert edited.version == 1 and not edited.enabled
    assert edited.daily_sync_cron == "30 9 * * *"  # normalised
    assert edited.plugin("bars") == PluginOverride(False, True)
    assert edited.scheduled("indicators") and not edited.full_scan("indicators")
    partly = await overrides.update(queue, plugins={"bars": {"data_source": "qmt"},
                                                     "indicators": {"enabled": False}})
    assert partly.plugin("bars") == PluginOverride(False, True, True, "qmt")  # merged
    assert not partly.scheduled("indicators")  # disabled: not scheduled either
    assert partly.to_dict()["plugins"]["indicators"] == {
        "schedule_enabled": True, "full_scan_enabled": False, "enabled": False,
        "data_source": None}
    edited = await overrides.update(queue, plugins={"indicators": {"enabled": True}})
    with pytest.raises(InvalidInput, match="is not one of"):
        await overrides.update(queue, plugins={"bars": {"schedule_enabled": "no"}})
    assert edited.updated_at == "2026-01-01T00:00:00.000+00:00"
    assert await overrides.load(queue) == edited and edited.version == 3
    same = await overrides.update(queue)  # nothing asked: nothing written
    assert same.version == 3
    again = await overrides.update(queue, enabled=True, daily_sync_cron="")
    assert again.version == 4 and again.enabled and again.daily_sync_cron == ""
    assert again.to_dict()["daily_sync_cron"] is None
    assert again.plugin("bars") == PluginOverride(False, True, True, "qmt")  # kept
    with pytest.raises(InvalidInput, match="must be a crontab expression"):
        await overrides.update(queue, daily_sync_cron="at six")
    with pytest.raises(InvalidInput, match="not valid"):
        await overrides.update(queue, daily_sync_cron="61 9 * * *")
    assert await overrides.version(queue) == 4  # refused edits write nothing


async def test_jobs_follow_the_edits(service: ScheduleService) -> None:
    assert find_job(service.jobs, DAILY_SYNC).plugins == ("bars", "indicators")
    assert await service.refresh() is True  # first read
    assert await service.refresh() is False  # nothing changed since
    await overrides.update(service.queue, daily_sync_cron="15 7 * * 1-5",
                           plugins={"indicators": {"schedule_enabled": False},
                                    "report": {"enabled": False}})
    with capture_logs() as logs:
        assert await service.refresh() is True
    daily = find_job(service.jobs, DAILY_SYNC)
    assert daily.plugins == ("bars",) and daily.expression == "15 7 * * 1-5"
    assert [j.name for j in service.jobs] == [DAILY_SYNC]  # report's own job is gone
    [event] = [e for e in logs if e["event"] == "schedule.reloaded"]
    assert event["version"] == 1 and event["jobs"][0]["plugins"] == ["bars"]
    described = await service.describe()
    assert described[0]["trigger"] == "15 7 * * 1-5" and described[0]["enabled"] is True


async def test_disabled_schedule_settles_slots_as_skipped(service: ScheduleService,
                                                         clock: FakeClock) -> None:
    clock.now = at(2026, 9, 29, 17, 0)
    await service.refresh()
    await service.register()
    await overrides.update(service.queue, enabled=False)
    await service.refresh()
    clock.now = at(2026, 9, 30, 18, 0, 2)
    [fire] = await service.fire_due(find_job(service.jobs, DAILY_SYNC))
    assert fire.outcome == "skipped" and "disabled" in fire.reason
    assert await service.queue.client.zcard(service.keys.execution_index) == 0
    await overrides.update(service.queue, enabled=True)
    await service.refresh()
    clock.now = at(2026, 9, 30, 18, 30)
    assert [f for f in await service.sweep() if f.outcome == "fired"] == []  # not caught up
    assert (await service.describe())[0]["enabled"] is True
    manual = await service.run_now(DAILY_SYNC)  # a manual run works either way
    assert manual.outcome == "fired"


async def test_full_scan_optional_dependencies_and_closed_days(service: ScheduleService,
                                                               clock: FakeClock) -> None:
    clock.now = at(2026, 9, 29, 17, 0)
    await service.refresh()
    await service.register()
    await overrides.update(service.queue, skip_non_trading_days=False, include_optional=True,
                           plugins={"bars": {"full_scan_enabled": True},
                                    "indicators": {"data_source": "tushare"}})
    await service.refresh()
    clock.now = at(2026, 10, 1, 18, 0, 1)  # National Day: closed, fired anyway
    [fire] = await service.fire_due(find_job(service.jobs, DAILY_SYNC))
    assert fire.outcome == "fired" and fire.trade_date == "20260930"  # the day before
    tasks = await tasks_of(service, fire.execution_id)
    assert set(tasks) == {"calendar", "basics", "bars", "indicators"}
    bars = tasks["bars"]
    assert bars.task_type == "full" and bars.trade_dates == []  # type: ignore[attr-defined]
    assert set(bars.depends_on) == {tasks["calendar"].task_id,  # type: ignore[attr-defined]
                                    tasks["basics"].task_id}  # type: ignore[attr-defined]
    indicators = tasks["indicators"]
    assert indicators.task_type == "incremental"  # type: ignore[attr-defined]
    assert indicators.trade_dates == ["20260930"]  # type: ignore[attr-defined]
    assert indicators.data_source == "tushare"  # type: ignore[attr-defined]
    assert tasks["calendar"].data_source == ""  # type: ignore[attr-defined]


async def test_a_changed_trigger_does_not_fire_its_earlier_slots(
        service: ScheduleService, clock: FakeClock, client: aioredis.Redis) -> None:
    clock.now = at(2026, 9, 28, 8, 0)
    await service.refresh()
    await service.register()  # 18:00 on weekdays, seen since Monday 08:00
    clock.now = at(2026, 9, 30, 12, 0)  # Wednesday noon: move the sync to 09:00
    await overrides.update(service.queue, daily_sync_cron="0 9 * * 1-5")
    assert await service.refresh()
    with capture_logs() as logs:
        await service.register()
    assert [e["was"] for e in logs if e["event"] == "schedule.trigger_changed"] == [
        "0 18 * * 1-5"]
    state = await client.hgetall(service.keys.schedule(DAILY_SYNC))  # type: ignore[misc]
    assert float(state["since"]) == clock.now and state["expression"] == "0 9 * * 1-5"
    fires = await service.sweep()  # today's 09:00 passed before the edit: not fired
    assert [f.outcome for f in fires] == []
    clock.now = at(2026, 10, 9, 9, 5)  # the next open weekday, after 09:00: caught up
    fired = [f for f in await service.sweep() if f.outcome == "fired"]
    assert [(f.slot_at, f.trigger) for f in fired] == [("2026-10-09T09:00:00+08:00",
                                                         "catch_up")]


def test_a_running_scheduler_picks_up_edits(redis_url: str, tmp_path: Path) -> None:
    """A real ``stockq scheduler``: its daily sync is set to fire every two seconds,
    then loses a plugin, then the schedule is disabled, each through Redis while it
    runs (the way the sidecar's schedule routes edit it)."""
    open_today(redis_url)
    env = worker_env(redis_url, STOCKQ_PLUGINS=PLUGINS, TUSHARE_TOKEN="",
                     STOCKQ_DAILY_SYNC_CRON="0 3 1 1 *")  # New Year's 03:00: not during a test
    proc = WorkerProcess(env, tmp_path / "scheduler.log", command="scheduler")
    settings = Settings(redis_url=redis_url)

    def edit(**changes: object) -> int:
        async def go() -> int:
            client = aioredis.Redis.from_url(redis_url, decode_responses=True)
            queue = TaskQueue(client, settings)
            try:
                return (await overrides.update(queue, **changes)).version  # type: ignore[arg-type]
            finally:
                await queue.aclose()
                await client.aclose()
        return asyncio.run(go())

    def reloaded(version: int) -> bool:
        return any(e["version"] == version for e in proc.events("schedule.reloaded"))

    try:
        wait_until(lambda: proc.events("scheduler.started") or proc.proc.poll() is not None,
                   30, "scheduler start")
        assert proc.proc.poll() is None, proc.log_path.read_text()
        [started] = proc.events("scheduler.started")
        assert started["jobs"][0]["trigger"] == "0 3 1 1 *"

        version = edit(daily_sync_cron="*/2 * * * * *")
        wait_until(lambda: reloaded(version), 30, "the scheduler to read the edit")
        wait_until(lambda: len(proc.events("schedule.fired")) >= 2, 30, "two fires")
        assert all(e["plugins"] == ["calendar", "basics", "bars", "indicators"]
                   for e in proc.events("schedule.fired"))

        version = edit(plugins={"indicators": {"schedule_enabled": False}})
        wait_until(lambda: reloaded(version), 30, "the second edit")
        fired_before = len(proc.events("schedule.fired"))
        wait_until(lambda: len(proc.events("schedule.fired")) >= fired_before + 2, 30,
                   "fires without indicators")
        assert proc.events("schedule.fired")[-1]["plugins"] == ["calendar", "basics", "bars"]

        version = edit(enabled=False)
        wait_until(lambda: reloaded(version), 30, "the third edit")
        wait_until(lambda: any("disabled" in e.get("reason", "")
                               for e in proc.events("schedule.skipped")), 30,
                   "a slot skipped while disabled")
    finally:
        assert proc.stop() == 0, proc.log_path.read_text()[-3000:]
    skipped = [e for e in proc.events("schedule.skipped") if "disabled" in e.get("reason", "")]
    assert skipped and all(e["job"] == DAILY_SYNC for e in skipped)
    history = asyncio.run(_history(redis_url))
    assert history[0]["outcome"] == "skipped" and "disabled" in history[0]["reason"]


async def _history(redis_url: str) -> list[dict[str, object]]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        raw = await client.lrange("stock:schedule:daily_sync:history", 0, 4)  # type: ignore[misc]
    finally:
        await client.aclose()
    return [json.loads(item) for item in raw]
