"""The five built-in TuShare plugins: each one TuShare API into one ClickHouse table.

| plugin | API | parameter style | table |
|---|---|---|---|
| ``tushare_trade_calendar`` | ``trade_cal`` | date range (by year) | ``ods_trade_calendar`` |
| ``tushare_stock_basic`` | ``stock_basic`` | none (every listing status) | ``ods_stock_basic`` |
| ``tushare_daily`` | ``daily`` | by trade date | ``ods_daily`` |
| ``tushare_adj_factor`` | ``adj_factor`` | by trade date | ``ods_adj_factor`` |
| ``tushare_daily_basic`` | ``daily_basic`` | by trade date | ``ods_daily_basic`` |

Task types (the ``task_type`` of the task):

* ``incremental`` — for a by-trade-date plugin, every trading day after the last one in
  its table up to the target day (the task's date, else the latest trading day whose
  data is published: ``STOCKQ_DATA_READY_TIME``), at most :data:`MAX_INCREMENTAL_DAYS`;
  the target day itself always (a task that names a date loads that date, also when the
  table holds later days); when there is nothing to load the result says why in words
  (``ods_daily already holds 2026-12-04, the latest trading day``).  The calendar loads
  the years of the task's dates (this year without dates) and the next; the stock list
  loads all of it, once per task whatever its dates;
* ``backfill`` — the task's dates or its ``start_date``–``end_date`` range, trading days
  only, one date at a time with progress and a checkpoint (a retry resumes after it);
* ``full`` — everything the API has: by-trade-date plugins from the dataset's first day
  (``history_start``, or the task's ``start_date``) to the latest trading day, chunked
  by day; the calendar from 1990 by year.

Trading days come from TuShare ``trade_cal`` (SSE), fetched once per year per child.
Every TuShare call first waits for the shared per-token, per-API quota
(``rate_limit_per_minute``), which the supervisor keeps in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from plugins_bridge import progress, services
from plugins_bridge.contract import Plugin, success
from plugins_bridge.errors import BadParameters
from plugins_bridge.tushare.client import TushareClient
from plugins_bridge.warehouse import Column, TableSpec, parse_day

MAX_INCREMENTAL_DAYS = 60
CALENDAR_START = date(1990, 12, 19)  # the first SSE trading day
F, NF, S, NS, D, ND = "Float64", "Nullable(Float64)", "String", "Nullable(String)", "Date", \
    "Nullable(Date)"


def _table(name: str, cols: Sequence[tuple[str, str]], order_by: Sequence[str],
           date_column: str = "", comment: str = "") -> TableSpec:
    return TableSpec(name, tuple(Column(n, t) for n, t in cols), tuple(order_by),
                     f"toYYYYMM({date_column})" if date_column else "", date_column, comment)


TRADE_CALENDAR = _table("ods_trade_calendar", [
    ("exchange", S), ("cal_date", D), ("is_open", "UInt8"), ("pretrade_date", ND),
], ("exchange", "cal_date"), "cal_date", "TuShare trade_cal")
STOCK_BASIC = _table("ods_stock_basic", [
    ("ts_code", S), ("symbol", S), ("name", S), ("area", NS), ("industry", NS),
    ("market", NS), ("list_date", ND), ("list_status", S),
], ("ts_code",), comment="TuShare stock_basic")
DAILY = _table("ods_daily", [
    ("ts_code", S), ("trade_date", D), ("open", F), ("high", F), ("low", F), ("close", F),
    ("pre_close", NF), ("change", NF), ("pct_chg", NF), ("vol", NF), ("amount", NF),
], ("ts_code", "trade_date"), "trade_date", "TuShare daily (unadjusted bars)")
ADJ_FACTOR = _table("ods_adj_factor", [
    ("ts_code", S), ("trade_date", D), ("adj_factor", F),
], ("ts_code", "trade_date"), "trade_date", "TuShare adj_factor")
DAILY_BASIC = _table("ods_daily_basic", [
    ("ts_code", S), ("trade_date", D), ("close", NF), ("turnover_rate", NF),
    ("volume_ratio", NF), ("pe", NF), ("pb", NF), ("total_mv", NF), ("circ_mv", NF),
], ("ts_code", "trade_date"), "trade_date", "TuShare daily_basic")


def _ymd(day: date) -> str:
    return day.strftime("%Y%m%d")


@dataclass(slots=True)
class _Calendar:
    """Open SSE days by year, fetched through the task's client (one call a year)."""

    years: dict[int, frozenset[date]] = field(default_factory=dict)

    def open_days(self, client: TushareClient, start: date, end: date) -> list[date]:
        out: list[date] = []
        for year in range(start.year, end.year + 1):
            if year not in self.years:
                rows = client.query("trade_cal", {"exchange": "SSE", "start_date": f"{year}0101",
                                                  "end_date": f"{year}1231"},
                                    "cal_date,is_open")
                self.years[year] = frozenset(parse_day(r["cal_date"]) for r in rows
                                             if str(r.get("is_open")) == "1")
            out += [d for d in self.years[year] if start <= d <= end]
        return sorted(out)


_calendar = _Calendar()
clock: Callable[[], float] = time.time  # "now" for the latest trading day (tests step it)


def _settings() -> Any:
    from app.settings import load_settings

    return load_settings()


class TushareDataset(Plugin):
    """One TuShare API into one table.  Subclasses set the class attributes."""

    api = ""
    table: TableSpec
    style = "trade_date"  # trade_date | range | none
    history_start = date(1990, 12, 19)
    params: dict[str, Any] = {}
    rate_limit_per_minute: int | None = 500
    default_timeout_seconds = 3600
    groups = ("tushare",)
    schedule = "daily"
    requires = ("tushare_token", "warehouse")

    # ------------------------------------------------------------ plumbing
    def client(self) -> TushareClient:
        limit = self.rate_limit_per_minute

        def acquire(api: str) -> None:
            services.current().acquire(api, limit)

        settings = _settings()
        return TushareClient(settings.tushare_url, settings.tushare_token,
                             timeout=settings.tushare_timeout, acquire=acquire)

    def fetch(self, client: TushareClient, **params: Any) -> list[list[Any]]:
        rows = client.query(self.api, {**self.params, **params}, self.table.column_names)
        names = self.table.column_names
        return [[r.get(n) for n in names] for r in rows]

    def load(self, rows: list[list[Any]]) -> int:
        return services.current().load(self.table, rows) if rows else 0

    # ------------------------------------------------------------ run
    def run(self, **params: Any) -> dict[str, Any]:
        ctx = progress.current_task()
        task_type = ctx.task_type if ctx else str(params.get("task_type") or "incremental")
        with self.client() as client:
            if self.style == "none":
                return success(self._load_all(client))
            if self.style == "range":
                return success(self._load_range(client, task_type, params))
            days, why = self._days(client, task_type, params)
            if not days:
                return success(0, message=why)
            return success(self._load_days(client, days, params, ctx))

    def _load_all(self, client: TushareClient) -> int:
        return sum(self.load(self.fetch(client, list_status=status)) for status in "LDP")

    def _load_range(self, client: TushareClient, task_type: str, params: dict[str, Any]
                    ) -> int:
        if params.get("trade_dates"):
            days = [parse_day(d) for d in params["trade_dates"]]
            start, end = date(min(days).year, 1, 1), date(max(days).year + 1, 12, 31)
        elif params.get("start_date") or params.get("end_date"):
            start = parse_day(params.get("start_date") or params["end_date"])
            end = parse_day(params.get("end_date") or params["start_date"])
        elif task_type == "full":
            start, end = self.history_start, date(date.today().year + 1, 12, 31)
        else:
            start, end = date(date.today().year, 1, 1), date(date.today().year + 1, 12, 31)
        years = list(range(start.year, end.year + 1))
        loaded = 0
        for i, year in enumerate(years, 1):
            lo, hi = max(start, date(year, 1, 1)), min(end, date(year, 12, 31))
            loaded += self.load(self.fetch(client, start_date=_ymd(lo), end_date=_ymd(hi)))
            progress.report_progress(100.0 * i / len(years), loaded, str(year))
        return loaded

    def _load_days(self, client: TushareClient, days: list[date], params: dict[str, Any],
                    ctx: progress.TaskContext | None) -> int:
        checkpoint = ctx.checkpoint if ctx and not params.get("trade_date") else ""
        todo = [d for d in days if not checkpoint or _ymd(d) > checkpoint]
        loaded = 0
        for i, day in enumerate(todo, 1):
            loaded += self.load(self.fetch(client, trade_date=_ymd(day)))
            if len(todo) > 1:
                progress.report_progress(100.0 * i / len(todo), loaded, _ymd(day),
                                         checkpoint=_ymd(day), force=True)
        return loaded

    def _days(self, client: TushareClient, task_type: str, params: dict[str, Any]
              ) -> tuple[list[date], str]:
        """The trading days to load, or none and why, in words."""
        today = _settings().data_day(clock())
        if params.get("trade_date"):
            target = parse_day(params["trade_date"])
            named = _calendar.open_days(client, target, target)
            if not named:
                return [], f"{target:%Y-%m-%d} is not a trading day (SSE)"
            if task_type != "incremental":
                return named, ""
            last = services.current().last_loaded(self.table)
            if not last or parse_day(last) >= target:
                return named, ""  # the date named, even when later days are loaded
            gap = _calendar.open_days(client, parse_day(last) + timedelta(days=1), target)
            return gap[-MAX_INCREMENTAL_DAYS:], ""
        if task_type == "backfill":
            if not params.get("start_date") and not params.get("end_date"):
                raise BadParameters("a backfill needs trade_dates or start_date/end_date")
            start = parse_day(params.get("start_date") or params["end_date"])
            end = parse_day(params.get("end_date") or params["start_date"])
            days = _calendar.open_days(client, start, end)
            return days, "" if days else \
                f"no trading day (SSE) from {start:%Y-%m-%d} to {end:%Y-%m-%d}"
        if task_type == "full":
            start = parse_day(params["start_date"]) if params.get("start_date") \
                else self.history_start
            days = _calendar.open_days(client, start, today)
            return days, "" if days else \
                f"no trading day (SSE) from {start:%Y-%m-%d} to {today:%Y-%m-%d}"
        recent = _calendar.open_days(client, today - timedelta(days=40), today)
        if not recent:
            return [], f"no trading day (SSE) in the 40 days to {today:%Y-%m-%d}"
        target = recent[-1]
        last = services.current().last_loaded(self.table)
        if not last:
            return [target], ""
        after = parse_day(last) + timedelta(days=1)
        if after > target:
            return [], (f"{self.table.name} already holds {parse_day(last):%Y-%m-%d}; the "
                        f"latest trading day whose data is out is {target:%Y-%m-%d}")
        return _calendar.open_days(client, after, target)[-MAX_INCREMENTAL_DAYS:], ""


class TradeCalendar(TushareDataset):
    name = "tushare_trade_calendar"
    per_trade_date = False  # a task's dates say which years to load
    description = "SSE trading calendar (TuShare trade_cal) into ods_trade_calendar"
    api = "trade_cal"
    table = TRADE_CALENDAR
    style = "range"
    params = {"exchange": "SSE"}
    default_timeout_seconds = 600


class StockBasic(TushareDataset):
    name = "tushare_stock_basic"
    per_trade_date = False  # not queried by date: one load whatever the dates
    description = "Stock list, every listing status (TuShare stock_basic) into ods_stock_basic"
    api = "stock_basic"
    table = STOCK_BASIC
    style = "none"
    default_timeout_seconds = 600


class Daily(TushareDataset):
    name = "tushare_daily"
    description = "Daily bars (TuShare daily) into ods_daily"
    api = "daily"
    table = DAILY
    dependencies = ("tushare_trade_calendar", "tushare_stock_basic")


class AdjFactor(TushareDataset):
    name = "tushare_adj_factor"
    description = "Adjustment factors (TuShare adj_factor) into ods_adj_factor"
    api = "adj_factor"
    table = ADJ_FACTOR
    history_start = date(2006, 1, 4)
    dependencies = ("tushare_trade_calendar", "tushare_stock_basic")


class DailyBasic(TushareDataset):
    name = "tushare_daily_basic"
    description = "Daily indicators (TuShare daily_basic) into ods_daily_basic"
    api = "daily_basic"
    table = DAILY_BASIC
    history_start = date(2004, 1, 2)
    dependencies = ("tushare_trade_calendar", "tushare_stock_basic")


BUILTINS: tuple[Callable[[], TushareDataset], ...] = (TradeCalendar, StockBasic, Daily,
                                                      AdjFactor, DailyBasic)
