"""The built-in datasets' task types, run in this process over the embedded ClickHouse
(LocalServices) against the fake TuShare: incremental catch-up, resumable backfill,
full history, per-date progress."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from plugins_bridge import progress, services
from plugins_bridge.tushare import datasets
from plugins_bridge.tushare.datasets import Daily, StockBasic, TradeCalendar
from plugins_bridge.tushare.fake_server import FakeTushare
from plugins_bridge.warehouse import Warehouse


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeTushare,
                                                                          Warehouse]]:
    with FakeTushare(token="t") as fake:
        monkeypatch.setenv("STOCKQ_TUSHARE_URL", fake.url)
        monkeypatch.setenv("TUSHARE_TOKEN", "t")
        monkeypatch.setattr(datasets, "_calendar", datasets._Calendar())  # fresh per test
        warehouse = Warehouse(f"chdb://{tmp_path / 'ch'}")
        services.bind(services.LocalServices(warehouse))
        try:
            yield fake, warehouse
        finally:
            services.bind(None)
            progress.bind(None, None)
            warehouse.close()


def run(plugin: Any, task_type: str, checkpoint: str = "", **params: Any
        ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    progress.bind(progress.TaskContext("t1", plugin.name, task_type, 1,
                                       checkpoint=checkpoint), sent.append)
    try:
        return plugin.run(**params), sent
    finally:
        progress.bind(None, None)


def daily_dates(fake: FakeTushare) -> list[str]:
    return [str(p["trade_date"]) for api, p in fake.calls if api == "daily"]


def loaded(wh: Warehouse) -> list[str]:
    rows = wh.fetch("SELECT DISTINCT toString(trade_date) FROM ods_daily FINAL ORDER BY 1")
    return [r[0] for r in rows["rows"]]


def test_incremental_fills_every_trading_day_since_the_last_loaded(env: tuple[FakeTushare,
                                                                              Warehouse]
                                                                   ) -> None:
    fake, wh = env
    result, _ = run(Daily(), "incremental", trade_date="20261120")  # empty table: that day
    assert result["steps"]["load"]["total_records"] == 20
    result, sent = run(Daily(), "incremental", trade_date="20261127")
    assert daily_dates(fake) == ["20261120", "20261123", "20261124", "20261125",
                                 "20261126", "20261127"]  # the weekend is skipped
    assert result["steps"]["load"]["total_records"] == 100
    assert loaded(wh) == ["2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25",
                          "2026-11-26", "2026-11-27"]
    assert [m["checkpoint"] for m in sent] == ["20261123", "20261124", "20261125",
                                               "20261126", "20261127"]
    fake.calls.clear()
    result, _ = run(Daily(), "incremental", trade_date="20261127")  # named: loaded again
    assert daily_dates(fake) == ["20261127"] and result["steps"]["load"]["total_records"] == 20
    assert wh.fetch("SELECT count() FROM ods_daily FINAL")["rows"] == [[120]]  # no duplicate


def test_a_task_that_names_a_date_loads_it_though_later_days_are_loaded(
        env: tuple[FakeTushare, Warehouse]) -> None:
    """`stockq submit tushare_daily --date 20261120` after 20261127 was loaded: that day
    is loaded (it used to complete with 0 records)."""
    fake, wh = env
    run(Daily(), "incremental", trade_date="20261127")
    fake.calls.clear()
    result, _ = run(Daily(), "incremental", trade_date="20261120")
    assert daily_dates(fake) == ["20261120"]
    assert result["steps"]["load"]["total_records"] == 20
    assert loaded(wh) == ["2026-11-20", "2026-11-27"]


def test_nothing_to_do_is_said_in_words(env: tuple[FakeTushare, Warehouse],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, wh = env
    result, _ = run(Daily(), "incremental", trade_date="20261128")  # a Saturday
    assert result["steps"]["load"]["total_records"] == 0
    assert result["message"] == "2026-11-28 is not a trading day (SSE)"
    # a dateless incremental task when the table is up to date: the latest trading day
    # whose data is out (a Monday before 17:00 Asia/Shanghai: the Friday before)
    monday_morning = datetime(2026, 11, 30, 2, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
    monkeypatch.setattr(datasets, "clock", monday_morning.timestamp)
    result, _ = run(Daily(), "incremental")
    assert daily_dates(fake) == ["20261127"]  # the Friday, not the Monday
    fake.calls.clear()
    result, _ = run(Daily(), "incremental")
    assert daily_dates(fake) == []
    assert result["steps"]["load"]["total_records"] == 0
    assert result["message"] == ("ods_daily already holds 2026-11-27; the latest trading "
                                 "day whose data is out is 2026-11-27")
    result, _ = run(Daily(), "backfill", start_date="20261128", end_date="20261129")
    assert result["message"] == "no trading day (SSE) from 2026-11-28 to 2026-11-29"


def test_a_range_backfill_reports_per_date_and_resumes_after_its_checkpoint(
        env: tuple[FakeTushare, Warehouse]) -> None:
    fake, wh = env
    result, sent = run(Daily(), "backfill", checkpoint="20261124",
                       start_date="20261123", end_date="20261201")
    # trading days only, after the checkpoint of an earlier attempt
    assert daily_dates(fake) == ["20261125", "20261126", "20261127", "20261130", "20261201"]
    assert result["steps"]["load"]["total_records"] == 100
    assert [round(m["percent"]) for m in sent] == [20, 40, 60, 80, 100]
    assert loaded(wh)[0] == "2026-11-25"


def test_full_loads_the_history_by_day(env: tuple[FakeTushare, Warehouse]) -> None:
    fake, wh = env
    result, _ = run(Daily(), "full", start_date="20261125")  # from a given first day
    assert daily_dates(fake)[0] == "20261125" and len(daily_dates(fake)) >= 3
    assert result["steps"]["load"]["total_records"] == 20 * len(daily_dates(fake))
    result, _ = run(TradeCalendar(), "full")
    calendar = wh.fetch("SELECT min(cal_date), count() FROM ods_trade_calendar FINAL")
    assert calendar["rows"][0][0] == "1990-12-19" and calendar["rows"][0][1] > 12_000


def test_the_stock_list_loads_once_whatever_the_dates(env: tuple[FakeTushare, Warehouse]
                                                      ) -> None:
    fake, wh = env
    result, _ = run(StockBasic(), "backfill", trade_dates=["20261126", "20261127"])
    assert result["steps"]["load"]["total_records"] == 20
    assert [p["list_status"] for api, p in fake.calls if api == "stock_basic"] == \
        ["L", "D", "P"]
    assert wh.fetch("SELECT count() FROM ods_stock_basic FINAL")["rows"] == [[20]]
