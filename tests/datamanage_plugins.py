"""Plugins for the tests of stock_datasource's data-management routes
(``tests.datamanage_plugins:PLUGINS``): two that load tables (a calendar, and daily
prices that need it), one that fails, one that sleeps until it is cancelled."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from plugins_bridge import services
from plugins_bridge.contract import Plugin, failure, success
from plugins_bridge.warehouse import Column, TableSpec

CALENDAR = TableSpec("dm_calendar", (Column("cal_date", "Date"), Column("is_open", "UInt8")),
                     ("cal_date",), "toYYYYMM(cal_date)", "cal_date", "test calendar")
PRICES = TableSpec("dm_prices", (Column("ts_code", "String"), Column("trade_date", "Date"),
                                 Column("close", "Float64")),
                   ("ts_code", "trade_date"), "toYYYYMM(trade_date)", "trade_date",
                   "test daily prices")


def _days(params: dict[str, Any]) -> list[str]:
    day = params.get("trade_date") or date.today().strftime("%Y%m%d")
    return [f"{day[:4]}-{day[4:6]}-{day[6:8]}"]


class Calendar(Plugin):
    name = "dm_calendar"
    description = "a trading calendar"
    table = CALENDAR
    category = "system"
    version = "1.2.0"
    default_timeout_seconds = 60

    def run(self, **params: Any) -> dict[str, Any]:
        return success(services.current().load(CALENDAR, [[d, 1] for d in _days(params)]))


class Prices(Plugin):
    name = "dm_prices"
    description = "daily prices"
    table = PRICES
    dependencies = ("dm_calendar",)
    schedule = "daily"
    groups = ("dm",)
    default_timeout_seconds = 60
    config = {"available_data_sources": ["tushare", "akshare"], "data_source": "tushare"}

    def run(self, **params: Any) -> dict[str, Any]:
        rows = [[code, d, 10.5] for d in _days(params) for code in ("600000.SH", "000001.SZ")]
        return success(services.current().load(PRICES, rows))


class Fails(Plugin):
    name = "dm_fails"
    description = "fails on purpose"
    default_max_attempts = 1

    def run(self, **params: Any) -> dict[str, Any]:
        return failure("the source refused the request")


class Slow(Plugin):
    name = "dm_slow"
    description = "sleeps until cancelled"
    default_timeout_seconds = 300

    def run(self, **params: Any) -> dict[str, Any]:
        time.sleep(float(params.get("seconds", 120)))
        return success(0)


PLUGINS = [Calendar(), Prices(), Fails(), Slow()]
