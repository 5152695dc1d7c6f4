""""The latest trading day" is the latest day whose data is published: a manual
``daily_sync`` at 02:12 on a Monday runs for the Friday before (STOCKQ_DATA_READY_TIME,
17:00 Asia/Shanghai by default), after 17:00 for that Monday."""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from app.errors import ConfigError
from app.scheduler.jobs import DAILY_SYNC
from app.settings import Settings, load_settings
from plugins_bridge.registry import PluginRegistry
from tests.conftest import FakeClock
from tests.test_scheduler import PLUGINS, at, make_service


@pytest.mark.parametrize(("moment", "day"), [
    ((2026, 11, 30, 2, 12), "20261127"),   # Monday 02:12: Friday's data is the latest
    ((2026, 11, 30, 16, 59), "20261127"),  # a minute before the data is out
    ((2026, 11, 30, 17, 0), "20261130"),   # published: Monday itself
    ((2026, 11, 28, 20, 0), "20261127"),   # Saturday evening: Friday
])
async def test_a_manual_daily_sync_runs_for_the_latest_published_trading_day(
        client: aioredis.Redis, settings: Settings, clock: FakeClock,
        moment: tuple[int, ...], day: str) -> None:
    sched = replace(settings, plugins=(PLUGINS,))
    registry = PluginRegistry.load(sched.plugins, use_entry_points=False)
    svc = make_service(client, sched, registry, clock, "s")
    try:
        clock.now = at(*moment)
        fire = await svc.run_now(DAILY_SYNC)
        assert fire.trade_date == day
    finally:
        await svc.queue.aclose()


async def test_the_data_ready_time_is_configurable(
        client: aioredis.Redis, settings: Settings, clock: FakeClock) -> None:
    sched = replace(settings, plugins=(PLUGINS,), data_ready_time="09:30")
    registry = PluginRegistry.load(sched.plugins, use_entry_points=False)
    svc = make_service(client, sched, registry, clock, "s")
    try:
        clock.now = at(2026, 11, 30, 10, 0)
        assert (await svc.run_now(DAILY_SYNC)).trade_date == "20261130"
    finally:
        await svc.queue.aclose()
    assert load_settings({"STOCKQ_DATA_READY_TIME": "18:45"}).data_ready_time == "18:45"
    with pytest.raises(ConfigError, match="STOCKQ_DATA_READY_TIME='5pm' must be a time of day"):
        load_settings({"STOCKQ_DATA_READY_TIME": "5pm"})


async def test_a_slot_before_the_data_is_out_syncs_the_trading_day_before(
        client: aioredis.Redis, settings: Settings, clock: FakeClock) -> None:
    """A daily_sync scheduled at 09:00 on weekdays runs for the day before: that
    morning's own data is not published yet."""
    sched = replace(settings, plugins=(PLUGINS,), daily_sync_cron="0 9 * * 1-5")
    registry = PluginRegistry.load(sched.plugins, use_entry_points=False)
    svc = make_service(client, sched, registry, clock, "s")
    try:
        await svc.register()
        clock.now = at(2026, 11, 30, 9, 0, 5)  # Monday 09:00 slot
        job = next(j for j in svc.jobs if j.name == DAILY_SYNC)
        [fire] = await svc.fire_due(job)
        assert fire.outcome == "fired" and fire.trade_date == "20261127"
    finally:
        await svc.queue.aclose()
