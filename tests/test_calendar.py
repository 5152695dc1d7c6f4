"""The trading calendar (app.scheduler.calendar): the offline calendar, and the TuShare
calendar cached in a real Redis, fetched over HTTP from the fake TuShare server on
loopback.  The clock is a FakeClock (2026-01-01T00:00Z unless a test moves it), so a
refresh fetches 2025-01-01 .. 2027-12-31."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from app.scheduler.calendar import (
    REFRESH_SECONDS,
    DayInfo,
    TradingCalendar,
    offline_day,
    tushare_fetch,
)
from app.settings import Settings
from plugins_bridge.tushare.fake_server import FakeTushare
from tests.conftest import FakeClock

TOKEN = "cal-s3cret-token-9f8e7d6c5b4a"
KEY = "stock:calendar:SSE"


pytestmark = pytest.mark.usefixtures("no_ambient_proxy")


@pytest.fixture
def fake() -> Iterator[FakeTushare]:
    server = FakeTushare(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def ts_settings(settings: Settings, fake: FakeTushare) -> Settings:
    return replace(settings, tushare_url=fake.url, tushare_token=TOKEN, tushare_timeout=5)


def tushare_calendar(client: aioredis.Redis, settings: Settings,
                     clock: FakeClock) -> TradingCalendar:
    return TradingCalendar(client, settings, fetch=tushare_fetch(settings), clock=clock)


def trade_cal_calls(fake: FakeTushare) -> list[dict[str, object]]:
    return [params for api, params in fake.calls if api == "trade_cal"]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/dataapi"  # nothing listens there any more


def events(logs: list[Any], name: str) -> list[Any]:
    return [e for e in logs if e["event"] == name]


# ------------------------------------------------------------------ offline
def test_offline_weekend() -> None:
    assert offline_day(date(2026, 11, 28)) == DayInfo(date(2026, 11, 28), False, "weekend",
                                                      "offline")
    assert not offline_day(date(2026, 11, 29)).trading


def test_offline_public_holiday_has_its_name() -> None:
    info = offline_day(date(2026, 10, 1))  # National Day, a Thursday
    assert not info.trading and info.source == "offline"
    assert info.reason == "holiday: National Day"
    assert not offline_day(date(2026, 10, 7)).trading  # Wednesday, still the holiday
    assert offline_day(date(2026, 10, 8)).trading


def test_offline_make_up_working_saturday_is_not_a_trading_day() -> None:
    """10 October 2026 is a working Saturday in mainland China (making up for the
    National Day holiday), but the exchanges stay closed."""
    info = offline_day(date(2026, 10, 10))
    assert not info.trading and info.reason == "weekend"


def test_offline_normal_weekday() -> None:
    assert offline_day(date(2026, 9, 30)) == DayInfo(date(2026, 9, 30), True, "", "offline")


def test_offline_year_without_holiday_data_knows_weekends_only() -> None:
    monday = offline_day(date(2031, 10, 1))  # a Wednesday; chinesecalendar has no 2031
    assert monday.trading and monday.source == "offline"
    assert "no holidays for 2031" in monday.reason and "weekends only" in monday.reason
    assert offline_day(date(2031, 10, 4)) == DayInfo(date(2031, 10, 4), False, "weekend",
                                                     "offline")


# ------------------------------------------------------------------ refresh
async def test_refresh_without_a_fetcher_falls_back_to_offline(
        client: aioredis.Redis, settings: Settings, clock: FakeClock) -> None:
    calendar = TradingCalendar(client, settings, clock=clock)
    with capture_logs() as logs:
        assert await calendar.refresh() == "offline"
    [event] = events(logs, "calendar.fallback")
    assert "TUSHARE_TOKEN" in str(event["reason"]) and "token" in str(event["reason"])
    assert event["source"] == "offline" and event["exchange"] == "SSE"
    assert event["log_level"] == "warning"
    assert await client.exists(KEY) == 0
    assert await calendar.day(date(2026, 10, 1)) == offline_day(date(2026, 10, 1))
    assert await calendar.describe() == {"exchange": "SSE", "source": "offline"}


async def test_refresh_from_tushare_fills_the_cache(
        client: aioredis.Redis, ts_settings: Settings, clock: FakeClock,
        fake: FakeTushare) -> None:
    calendar = tushare_calendar(client, ts_settings, clock)
    with capture_logs() as logs:
        assert await calendar.refresh() == "tushare"
    [params] = trade_cal_calls(fake)
    assert params["exchange"] == "SSE"
    assert (params["start_date"], params["end_date"]) == ("20250101", "20271231")
    [event] = events(logs, "calendar.refreshed")
    assert event["source"] == "tushare" and event["open_days"] > 700  # type: ignore[operator]
    assert not events(logs, "calendar.fallback")

    stored = await client.hgetall(KEY)
    assert stored["source"] == "tushare" and stored["exchange"] == "SSE"
    assert (stored["start"], stored["end"]) == ("2025-01-01", "2027-12-31")
    assert float(stored["fetched_at_epoch"]) == clock.now
    days = stored["open_days"].split(",")
    assert days == sorted(days)
    assert "20260930" in days and "20261008" in days
    assert "20261001" not in days and "20261010" not in days and "20261003" not in days

    assert await calendar.day(date(2026, 9, 30)) == DayInfo(date(2026, 9, 30), True, "",
                                                            "tushare")
    holiday = await calendar.day(date(2026, 10, 1))
    assert not holiday.trading and holiday.source == "tushare"
    assert holiday.reason == "closed (SSE trade_cal)"
    saturday = await calendar.day(date(2026, 10, 10))
    assert (saturday.trading, saturday.reason, saturday.source) == (False, "weekend", "tushare")
    # outside the years fetched, the offline calendar answers
    assert (await calendar.day(date(2028, 3, 1))).source == "offline"
    described = await calendar.describe()
    assert described["source"] == "tushare" and described["start"] == "2025-01-01"

    # another process (the sidecar: no fetcher) reads the same cache
    reader = TradingCalendar(client, ts_settings, clock=clock)
    assert (await reader.day(date(2026, 10, 1))).source == "tushare"


async def test_refresh_within_a_day_does_not_fetch_again(
        client: aioredis.Redis, ts_settings: Settings, clock: FakeClock,
        fake: FakeTushare) -> None:
    calendar = tushare_calendar(client, ts_settings, clock)
    assert await calendar.refresh() == "tushare"
    assert len(trade_cal_calls(fake)) == 1
    clock.advance(REFRESH_SECONDS - 60)
    assert await calendar.refresh() == "tushare"
    # a second scheduler sees the same cache and does not ask either
    other = tushare_calendar(client, ts_settings, clock)
    assert await other.refresh() == "tushare"
    assert len(trade_cal_calls(fake)) == 1
    assert await calendar.refresh(force=True) == "tushare"
    assert len(trade_cal_calls(fake)) == 2
    assert float(await client.hget(KEY, "fetched_at_epoch")) == clock.now
    clock.advance(REFRESH_SECONDS)  # a day after the forced fetch: due again
    assert await calendar.refresh() == "tushare"
    assert len(trade_cal_calls(fake)) == 3


async def test_tushare_unreachable_with_nothing_cached_falls_back(
        client: aioredis.Redis, settings: Settings, clock: FakeClock) -> None:
    down = replace(settings, tushare_url=closed_port_url(), tushare_token=TOKEN,
                   tushare_timeout=5)
    calendar = tushare_calendar(client, down, clock)
    with capture_logs() as logs:
        assert await calendar.refresh() == "offline"
    [event] = events(logs, "calendar.fallback")
    assert "TushareNetworkError" in str(event["reason"])
    assert TOKEN not in repr(logs)
    assert await client.exists(KEY) == 0
    assert (await calendar.day(date(2026, 10, 1))).reason == "holiday: National Day"


async def test_tushare_failing_after_a_success_keeps_the_cache(
        client: aioredis.Redis, ts_settings: Settings, clock: FakeClock,
        fake: FakeTushare) -> None:
    calendar = tushare_calendar(client, ts_settings, clock)
    assert await calendar.refresh() == "tushare"
    before = await client.hgetall(KEY)
    clock.advance(REFRESH_SECONDS + 1)  # due for a refresh
    fake.fail_next(1, 502, body="Bad Gateway")
    with capture_logs() as logs:
        assert await calendar.refresh() == "tushare"
    assert len(trade_cal_calls(fake)) == 2
    [event] = events(logs, "calendar.stale")
    assert "502" in str(event["reason"])
    assert event["fetched_at"] == before["fetched_at"]
    assert not events(logs, "calendar.fallback")
    assert await client.hgetall(KEY) == before
    assert (await calendar.day(date(2026, 10, 1))).source == "tushare"
    # the next refresh (TuShare back) replaces the cache
    assert await calendar.refresh() == "tushare"
    assert float(await client.hget(KEY, "fetched_at_epoch")) == clock.now


async def test_a_bad_token_falls_back_without_showing_the_token(
        client: aioredis.Redis, settings: Settings, clock: FakeClock,
        fake: FakeTushare) -> None:
    wrong = "wrong-t0ken-1234567890abcdef"
    bad = replace(settings, tushare_url=fake.url, tushare_token=wrong, tushare_timeout=5)
    calendar = tushare_calendar(client, bad, clock)
    with capture_logs() as logs:
        assert await calendar.refresh() == "offline"
    assert len(trade_cal_calls(fake)) == 1  # it did ask
    [event] = events(logs, "calendar.fallback")
    reason = str(event["reason"])
    assert "TushareTokenError" in reason and "TUSHARE_TOKEN" in reason
    assert wrong not in reason and wrong not in repr(logs)
    assert await client.exists(KEY) == 0


async def test_no_open_days_is_a_fallback(
        client: aioredis.Redis, settings: Settings, clock: FakeClock) -> None:
    calendar = TradingCalendar(client, settings, fetch=lambda *_: [], clock=clock)
    with capture_logs() as logs:
        assert await calendar.refresh() == "offline"
    [event] = events(logs, "calendar.fallback")
    assert "no open days" in str(event["reason"])
    assert await client.exists(KEY) == 0


# ------------------------------------------------------------------ latest trading day
async def test_latest_trading_day_walks_back_over_a_holiday_offline(
        client: aioredis.Redis, settings: Settings, clock: FakeClock) -> None:
    calendar = TradingCalendar(client, settings, clock=clock)
    assert await calendar.latest_trading_day(date(2026, 10, 7)) == date(2026, 9, 30)
    assert await calendar.latest_trading_day(date(2026, 10, 11)) == date(2026, 10, 9)
    assert await calendar.latest_trading_day(date(2026, 9, 30)) == date(2026, 9, 30)
    assert await calendar.latest_trading_day(date(2026, 11, 29)) == date(2026, 11, 27)


async def test_latest_trading_day_walks_back_over_a_holiday_with_tushare(
        client: aioredis.Redis, ts_settings: Settings, clock: FakeClock) -> None:
    calendar = tushare_calendar(client, ts_settings, clock)
    assert await calendar.refresh() == "tushare"
    assert await calendar.latest_trading_day(date(2026, 10, 5)) == date(2026, 9, 30)
    assert await calendar.latest_trading_day(date(2026, 10, 10)) == date(2026, 10, 9)


async def test_the_cache_decides_over_the_offline_calendar(
        client: aioredis.Redis, settings: Settings, clock: FakeClock) -> None:
    """A cached TuShare calendar that closes an ordinary weekday is obeyed."""
    await client.hset(KEY, mapping={
        "exchange": "SSE", "source": "tushare", "start": "2026-01-01", "end": "2026-12-31",
        "open_days": "20260928,20260929", "fetched_at": "x",
        "fetched_at_epoch": str(clock.now)})
    calendar = TradingCalendar(client, settings, clock=clock)
    assert await calendar.latest_trading_day(date(2026, 9, 30)) == date(2026, 9, 29)
