"""Trading days.

The source of truth is TuShare ``trade_cal`` for one exchange (default SSE), fetched by
the scheduler, cached in Redis (``stock:calendar:{exchange}``) for every process to read,
and refreshed daily.  When TuShare cannot be asked (no token, unreachable, an error) the
scheduler logs ``calendar.fallback`` and every reader uses the offline calendar instead:
weekends, plus the public holidays of mainland China from the ``chinesecalendar``
package (the exchanges close on those and do not open on the weekend make-up working
days).  For a year the package does not cover yet, the offline calendar knows only
weekends and says so in its reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import chinese_calendar
import redis.asyncio as aioredis

from app.errors import StockqError
from app.keys import Keys
from app.logs import get_logger
from app.redis_client import redis_errors
from app.settings import Settings

log = get_logger("stockq.calendar")

REFRESH_SECONDS = 24 * 3600.0  # a TuShare calendar older than this is fetched again
MEMO_SECONDS = 60.0  # readers re-read the Redis cache at most this often
YEARS_AROUND = 1  # fetch from 1 January of last year to 31 December of next year

Fetch = Callable[[str, date, date], list[date]]


@dataclass(frozen=True, slots=True)
class DayInfo:
    day: date
    trading: bool
    reason: str  # why it is closed (or a caveat about the answer); '' for a plain trading day
    source: str  # tushare | offline


def offline_day(day: date) -> DayInfo:
    """Weekends and mainland China public holidays (``chinesecalendar``)."""
    if day.weekday() >= 5:
        return DayInfo(day, False, "weekend", "offline")
    try:
        holiday, name = chinese_calendar.get_holiday_detail(day)
    except NotImplementedError:
        return DayInfo(day, True, f"the offline calendar has no holidays for {day.year}: "
                                  "weekends only", "offline")
    if holiday:
        return DayInfo(day, False, f"holiday: {name}" if name else "public holiday", "offline")
    return DayInfo(day, True, "", "offline")


def tushare_fetch(settings: Settings) -> Fetch:
    """A fetcher that asks TuShare ``trade_cal`` (blocking; the scheduler runs it in a
    thread).  The proxy, when configured, is passed to this one request only."""

    def fetch(exchange: str, start: date, end: date) -> list[date]:
        from plugins_bridge.tushare.client import TushareClient

        client = TushareClient.from_settings(settings, proxies=settings.tushare_proxies)
        rows = client.query("trade_cal", {"exchange": exchange,
                                          "start_date": start.strftime("%Y%m%d"),
                                          "end_date": end.strftime("%Y%m%d")},
                            fields="cal_date,is_open")
        return sorted(datetime.strptime(str(r["cal_date"]), "%Y%m%d").date()
                      for r in rows if str(r.get("is_open")) == "1")

    return fetch


class TradingCalendar:
    """Answers "is this a trading day?" from the Redis cache, else offline."""

    def __init__(self, client: aioredis.Redis, settings: Settings, *,
                 fetch: Fetch | None = None, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.settings = settings
        self.exchange = settings.calendar_exchange
        self.key = Keys(settings.key_prefix).calendar(self.exchange)
        self._fetch = fetch
        self.clock = clock
        self._memo: tuple[float, dict[str, Any] | None] | None = None

    # ------------------------------------------------------------ refresh (scheduler)
    async def refresh(self, *, force: bool = False) -> str:
        """Fetch TuShare's calendar into Redis when the cache is missing or a day old.
        Returns the source now in effect: ``tushare`` or ``offline``."""
        cached = await self._read(fresh=True)
        now = self.clock()
        if (cached and not force
                and now - float(cached.get("fetched_at_epoch", 0)) < REFRESH_SECONDS):
            return "tushare"
        if self._fetch is None:
            reason = "no TuShare token (TUSHARE_TOKEN)" if not self.settings.tushare_token \
                else "no TuShare fetcher"
            return self._fallback(reason, cached)
        today = datetime.fromtimestamp(now, UTC).date()
        start = date(today.year - YEARS_AROUND, 1, 1)
        end = date(today.year + YEARS_AROUND, 12, 31)
        try:
            days = await asyncio.to_thread(self._fetch, self.exchange, start, end)
        except Exception as exc:  # any failure of the source means: use the fallback
            return self._fallback(f"{type(exc).__name__}: {exc}", cached)
        if not days:
            return self._fallback("TuShare returned no open days", cached)
        with redis_errors(self.settings):
            await self.client.hset(self.key, mapping={  # type: ignore[misc]
                "exchange": self.exchange, "source": "tushare",
                "start": start.isoformat(), "end": end.isoformat(),
                "open_days": ",".join(d.strftime("%Y%m%d") for d in days),
                "fetched_at": datetime.fromtimestamp(now, UTC).isoformat(),
                "fetched_at_epoch": f"{now:.3f}",
            })
        self._memo = None
        log.info("calendar.refreshed", exchange=self.exchange, source="tushare",
                 open_days=len(days), start=start.isoformat(), end=end.isoformat())
        return "tushare"

    def _fallback(self, reason: str, cached: dict[str, Any] | None) -> str:
        if cached:
            log.warning("calendar.stale", exchange=self.exchange, reason=reason,
                        fetched_at=cached.get("fetched_at"),
                        hint="keeping the cached TuShare calendar")
            return "tushare"
        log.warning("calendar.fallback", exchange=self.exchange, reason=reason,
                    source="offline", hint="weekends and public holidays (chinesecalendar)")
        return "offline"

    # ------------------------------------------------------------ reads (everyone)
    async def _read(self, *, fresh: bool = False) -> dict[str, Any] | None:
        now = self.clock()
        if not fresh and self._memo is not None and now - self._memo[0] < MEMO_SECONDS:
            return self._memo[1]
        with redis_errors(self.settings):
            raw = await self.client.hgetall(self.key)  # type: ignore[misc]
        cached: dict[str, Any] | None = None
        if raw and raw.get("open_days"):
            cached = dict(raw)
            cached["days"] = frozenset(raw["open_days"].split(","))
        self._memo = (now, cached)
        return cached

    async def day(self, day: date) -> DayInfo:
        cached = await self._read()
        if cached and cached["start"] <= day.isoformat() <= cached["end"]:
            if day.strftime("%Y%m%d") in cached["days"]:
                return DayInfo(day, True, "", "tushare")
            why = "weekend" if day.weekday() >= 5 else \
                f"closed ({self.exchange} trade_cal)"
            return DayInfo(day, False, why, "tushare")
        return offline_day(day)

    async def latest_trading_day(self, on_or_before: date) -> date:
        day = on_or_before
        for _ in range(60):
            if (await self.day(day)).trading:
                return day
            day -= timedelta(days=1)
        raise StockqError(f"no trading day in the 60 days before {on_or_before}")

    async def describe(self) -> dict[str, Any]:
        cached = await self._read()
        if not cached:
            return {"exchange": self.exchange, "source": "offline"}
        return {"exchange": self.exchange, "source": "tushare",
                "fetched_at": cached.get("fetched_at"), "start": cached.get("start"),
                "end": cached.get("end")}
