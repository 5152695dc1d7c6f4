"""The scheduler's firing rules against a real redis-server, driven by a stepped clock:
trading-day gating, one execution per slot across schedulers, catch-up after downtime,
missed slots, Redis outages, manual runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from app import queries
from app.errors import ConfigError, NothingToRun, RedisUnavailable, ScheduleNotFound
from app.queue import TaskQueue
from app.scheduler.calendar import TradingCalendar
from app.scheduler.daemon import SchedulerDaemon
from app.scheduler.jobs import DAILY_SYNC, build_jobs, find_job
from app.scheduler.service import ScheduleService
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry
from tests.conftest import FakeClock
from tests.redis_server import RedisServer

SH = ZoneInfo("Asia/Shanghai")
PLUGINS = "tests.schedule_plugins:PLUGINS"


def at(*args: int) -> float:
    """Epoch seconds of a wall-clock time in Shanghai."""
    return datetime(*args, tzinfo=SH).timestamp()  # type: ignore[misc]


@pytest.fixture
def sched_settings(settings: Settings) -> Settings:
    return replace(settings, plugins=(PLUGINS,))


@pytest.fixture
def registry(sched_settings: Settings) -> PluginRegistry:
    return PluginRegistry.load(sched_settings.plugins, use_entry_points=False)


def make_service(client: aioredis.Redis, settings: Settings, registry: PluginRegistry,
                 clock: FakeClock, name: str) -> ScheduleService:
    queue = TaskQueue(client, settings, clock=clock)
    calendar = TradingCalendar(client, settings, clock=clock)
    return ScheduleService(queue, registry, calendar, build_jobs(settings, registry),
                           scheduler_id=name, clock=clock)


@pytest.fixture
async def service(client: aioredis.Redis, sched_settings: Settings, registry: PluginRegistry,
                  clock: FakeClock) -> AsyncIterator[ScheduleService]:
    svc = make_service(client, sched_settings, registry, clock, "sched-a")
    yield svc
    await svc.queue.aclose()


async def executions(queue: TaskQueue) -> list[str]:
    return list(await queue.client.zrange(queue.keys.execution_index, 0, -1))


def daily(svc: ScheduleService):  # type: ignore[no-untyped-def]
    return find_job(svc.jobs, DAILY_SYNC)


async def test_jobs_come_from_settings_and_plugin_schedules(service: ScheduleService) -> None:
    names = [j.name for j in service.jobs]
    assert names == ["daily_sync", "plugin:report"]
    assert daily(service).plugins == ("bars", "indicators")
    assert daily(service).expression == "0 18 * * 1-5"


async def test_weekday_fires_one_execution_in_dependency_order(
        service: ScheduleService, clock: FakeClock) -> None:
    clock.now = at(2026, 9, 29, 17, 0)
    await service.register()
    clock.now = at(2026, 9, 30, 18, 0, 2)  # a Wednesday, 2 s after the slot
    with capture_logs() as logs:
        [fire] = await service.fire_due(daily(service))
    assert fire.outcome == "fired" and fire.trigger == "scheduled"
    assert fire.trade_date == "20260930" and fire.slot_at == "2026-09-30T18:00:00+08:00"
    execution = await queries.get_execution(service.queue, fire.execution_id)
    assert execution.trigger_type == "scheduled" and execution.group_name == "daily_sync"
    assert execution.total == 4
    ids = await queries.execution_task_ids(service.queue, execution)
    tasks = [t for t in await queries.get_many(service.queue, ids) if t]
    order = [t.plugin_name for t in tasks]
    assert set(order) == {"calendar", "basics", "bars", "indicators"}
    assert order.index("bars") > max(order.index("calendar"), order.index("basics"))
    by_name = {t.plugin_name: t for t in tasks}
    assert set(by_name["bars"].depends_on) == {by_name["calendar"].task_id,
                                                by_name["basics"].task_id}
    assert all(t.task_type == "incremental" and t.trade_dates == ["20260930"]
               and t.trigger == "scheduled" for t in tasks)
    [event] = [e for e in logs if e["event"] == "schedule.fired"]
    assert event["execution_id"] == fire.execution_id and event["tasks"] == 4
    [job] = [j for j in await service.describe() if j["name"] == "daily_sync"]
    assert job["last_fire"]["outcome"] == "fired"
    assert job["last_fire"]["execution_id"] == fire.execution_id
    assert job["next_run_at"] == "2026-10-01T18:00:00+08:00"


async def test_holiday_and_weekend_fires_are_skipped_with_the_reason(
        service: ScheduleService, clock: FakeClock) -> None:
    clock.now = at(2026, 9, 29, 17, 0)
    await service.register()
    clock.now = at(2026, 10, 1, 18, 0, 1)  # National Day, a Thursday
    with capture_logs() as logs:
        [fire] = await service.fire_due(daily(service))
    assert fire.outcome == "skipped" and "National Day" in fire.reason
    assert "offline calendar" in fire.reason
    assert await executions(service.queue) == []
    assert any(e["event"] == "schedule.skipped" and "National Day" in e["reason"]
               for e in logs)
    [job] = [j for j in await service.describe() if j["name"] == "daily_sync"]
    assert job["last_fire"]["outcome"] == "skipped"
    assert job["last_fire"]["execution_id"] is None
    # a weekend slot of a job that fires every day
    weekly = find_job(service.jobs, "plugin:report")
    clock.now = at(2026, 10, 9, 19, 30, 1)  # Friday 9 October: a normal trading day
    [fire] = await service.fire_due(weekly)
    assert fire.outcome == "fired" and fire.trade_date == "20261009"


async def test_the_cached_tushare_calendar_decides_when_present(
        service: ScheduleService, clock: FakeClock) -> None:
    """The calendar the scheduler caches in Redis wins over the offline one: here it
    says 30 September is closed."""
    await service.queue.client.hset(service.calendar.key, mapping={
        "exchange": "SSE", "source": "tushare", "start": "2026-01-01", "end": "2026-12-31",
        "open_days": "20260929,20261008", "fetched_at": "x",
        "fetched_at_epoch": str(clock.now)})
    clock.now = at(2026, 9, 29, 17, 0)
    await service.register()
    clock.now = at(2026, 9, 30, 18, 0, 1)
    [fire] = await service.fire_due(daily(service))
    assert fire.outcome == "skipped" and "SSE trade_cal" in fire.reason
    assert "tushare calendar" in fire.reason


async def test_two_schedulers_fire_a_slot_once(
        client: aioredis.Redis, sched_settings: Settings, registry: PluginRegistry,
        clock: FakeClock) -> None:
    others = [aioredis.Redis.from_url(sched_settings.redis_url, decode_responses=True)
              for _ in range(3)]
    services = [make_service(c, sched_settings, registry, clock, f"sched-{i}")
                for i, c in enumerate([client, *others])]
    try:
        clock.now = at(2026, 9, 30, 17, 0)
        await services[0].register()
        clock.now = at(2026, 9, 30, 18, 0, 3)
        with capture_logs() as logs:
            results = await asyncio.gather(*(s.fire_due(daily(s)) for s in services))
            # and the sweeps that follow find nothing left to do
            clock.now = at(2026, 9, 30, 19, 0)
            swept = await asyncio.gather(*(s.sweep() for s in services))
    finally:
        for s in services:
            await s.queue.aclose()
        for c in others:
            await c.aclose()
    outcomes = sorted(f.outcome for [f] in results)
    assert outcomes == ["already", "already", "already", "fired"]
    assert all(fires == [] for fires in swept), swept
    assert len(await executions(services[0].queue)) == 1
    skipped = [e for e in logs if e["event"] == "schedule.skipped"]
    assert len(skipped) == 3
    assert all("locked by scheduler" in e["reason"] or "already" in e["reason"]
               for e in skipped)


async def test_downtime_across_a_slot_is_caught_up_exactly_once(
        client: aioredis.Redis, sched_settings: Settings, registry: PluginRegistry,
        clock: FakeClock) -> None:
    first = make_service(client, sched_settings, registry, clock, "before")
    clock.now = at(2026, 11, 23, 12, 0)  # Monday; the scheduler runs, then stops
    await first.register()
    await first.queue.aclose()
    # it comes back on Thursday at 19:00: Mon, Tue, Wed 18:00 are beyond the 24 h
    # window, Thursday 18:00 is within it
    clock.now = at(2026, 11, 26, 19, 0)
    later = make_service(client, sched_settings, registry, clock, "after")
    try:
        await later.register()
        with capture_logs() as logs:
            fires = await later.sweep()
            again = await later.sweep()
    finally:
        await later.queue.aclose()
    daily_fires = [f for f in fires if f.job == DAILY_SYNC]
    assert [(f.slot_at[:10], f.outcome, f.trigger) for f in daily_fires] == [
        ("2026-11-23", "missed", "catch_up"), ("2026-11-24", "missed", "catch_up"),
        ("2026-11-25", "missed", "catch_up"), ("2026-11-26", "fired", "catch_up")]
    assert again == []
    [eid] = await executions(later.queue)
    execution = await queries.get_execution(later.queue, eid)
    assert execution.trigger_type == "catch_up" and execution.date_range == "20261126-20261126"
    assert len([e for e in logs if e["event"] == "schedule.missed"]) == 3
    history = await later.history(DAILY_SYNC)
    assert [h["outcome"] for h in history] == ["fired", "missed", "missed", "missed"]


async def test_slots_before_the_first_start_are_not_caught_up(
        service: ScheduleService, clock: FakeClock) -> None:
    clock.now = at(2026, 11, 26, 19, 0)  # first ever start, an hour after a slot
    await service.register()
    assert await service.sweep() == []
    assert await executions(service.queue) == []


async def test_a_slot_inside_the_grace_is_left_to_the_on_time_fire(
        service: ScheduleService, clock: FakeClock) -> None:
    clock.now = at(2026, 11, 26, 17, 0)
    await service.register()
    clock.now = at(2026, 11, 26, 18, 0, 20)  # 20 s late: APScheduler's fire is due now
    assert await service.sweep() == []
    [fire] = await service.fire_due(daily(service))
    assert (fire.outcome, fire.trigger) == ("fired", "scheduled")


async def test_redis_down_across_a_slot_fires_once_after_recovery(
        own_redis: RedisServer, sched_settings: Settings, registry: PluginRegistry,
        clock: FakeClock) -> None:
    settings = replace(sched_settings, redis_url=own_redis.url, redis_connect_timeout=0.5)
    clock.now = at(2026, 11, 26, 17, 59)
    daemon = SchedulerDaemon(settings, registry, clock=clock)
    await daemon.start()
    try:
        job = daily(daemon.service)
        raw = aioredis.Redis.from_url(own_redis.url)
        await raw.save()  # the restart below keeps the data, as a persistent Redis does
        await raw.aclose()
        own_redis.stop()
        clock.now = at(2026, 11, 26, 18, 0, 1)
        with capture_logs() as logs:
            await daemon._on_time(job)  # APScheduler's call at the slot: Redis is down
            with pytest.raises(RedisUnavailable):
                await daemon._tick()  # still down: no recovery yet
            own_redis.start()
            clock.now = at(2026, 11, 26, 18, 5)
            await daemon._tick()  # Redis answers again: the sweep fires the slot
            await daemon._tick()
            clock.now = at(2026, 11, 26, 18, 7)
            await daemon._sweep()
        events = [e["event"] for e in logs]
        assert "scheduler.redis_lost" in events and "scheduler.redis_back" in events
        fired = [e for e in logs if e["event"] == "schedule.fired"]
        assert len(fired) == 1 and fired[0]["trigger"] == "catch_up"
        assert len(await executions(daemon.queue)) == 1
    finally:
        await daemon.stop()


async def test_manual_run_targets_the_latest_trading_day(
        service: ScheduleService, clock: FakeClock) -> None:
    clock.now = at(2026, 10, 3, 10, 0)  # Saturday of the National Day holiday
    fire = await service.run_now(DAILY_SYNC)
    assert fire.outcome == "fired" and fire.trigger == "manual"
    assert fire.trade_date == "20260930"  # the last trading day before the holiday
    execution = await queries.get_execution(service.queue, fire.execution_id)
    assert execution.trigger_type == "manual" and execution.total == 4
    # a second manual run is a new execution (nothing is settled by a manual run)
    again = await service.run_now(DAILY_SYNC)
    assert again.execution_id != fire.execution_id
    [job] = [j for j in await service.describe() if j["name"] == "daily_sync"]
    assert job["last_fire"]["trigger"] == "manual"
    with pytest.raises(ScheduleNotFound) as err:
        await service.run_now("nightly")
    assert "daily_sync" in err.value.message and "plugin:report" in err.value.message


async def test_manual_run_of_a_job_without_plugins_is_refused(
        client: aioredis.Redis, settings: Settings, clock: FakeClock) -> None:
    registry = PluginRegistry.load(settings.plugins, use_entry_points=False)  # no schedules
    svc = make_service(client, settings, registry, clock, "x")
    try:
        with pytest.raises(NothingToRun):
            await svc.run_now(DAILY_SYNC)
        assert await executions(svc.queue) == []
    finally:
        await svc.queue.aclose()


async def test_a_fire_repeated_after_a_crash_reuses_the_execution(
        service: ScheduleService, clock: FakeClock) -> None:
    """A scheduler that died after creating the execution but before writing the slot's
    marker: the next one derives the same execution id and does not create another."""
    clock.now = at(2026, 11, 26, 17, 0)
    await service.register()
    slot = datetime(2026, 11, 26, 18, 0, tzinfo=SH)
    clock.now = at(2026, 11, 26, 18, 0, 1)
    first = await service.fire(daily(service), slot, "scheduled")
    k = service.keys
    ts = int(slot.timestamp())
    await service.queue.client.delete(k.schedule_slot(DAILY_SYNC, ts),
                                      k.schedule_lock(DAILY_SYNC, ts))
    second = await service.fire(daily(service), slot, "catch_up")
    assert second.execution_id == first.execution_id
    assert len(await executions(service.queue)) == 1
    marker = await service.queue.client.get(k.schedule_slot(DAILY_SYNC, ts))
    assert json.loads(marker)["execution_id"] == first.execution_id


def test_weekly_and_monthly_plugins_share_one_job_each(settings: Settings) -> None:
    """Plugins scheduled "weekly" / "monthly" run together, as stock_datasource's weekly
    (Saturday 10:00) and monthly (the 1st, 10:00) jobs run them; the jobs exist only
    when some plugin is scheduled so, and their triggers are settings."""
    from plugins_bridge.contract import Plugin

    def plugin(name: str, when: str) -> Plugin:
        made = Plugin()
        made.name, made.schedule = name, when
        return made

    registry = PluginRegistry([plugin("lists", "weekly"), plugin("index", "weekly"),
                               plugin("reports", "monthly"), plugin("bars", "daily")])
    jobs = {j.name: j for j in build_jobs(settings, registry)}
    assert list(jobs) == ["daily_sync", "weekly_sync", "monthly_sync"]
    assert (jobs["weekly_sync"].expression, jobs["weekly_sync"].plugins) == \
        ("0 10 * * 6", ("index", "lists"))
    assert (jobs["monthly_sync"].expression, jobs["monthly_sync"].plugins) == \
        ("0 10 1 * *", ("reports",))
    moved = replace(settings, weekly_sync_cron="weekly fri 18:30")
    assert find_job(build_jobs(moved, registry), "weekly_sync").expression == "30 18 * * fri"
    with pytest.raises(ConfigError, match="STOCKQ_MONTHLY_SYNC_CRON"):
        build_jobs(replace(settings, monthly_sync_cron="sometimes"), registry)
    assert [j.name for j in build_jobs(settings, PluginRegistry([plugin("b", "daily")]))] \
        == ["daily_sync"]
