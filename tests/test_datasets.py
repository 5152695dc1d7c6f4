"""The built-in datasets' task types, run in this process over the embedded ClickHouse
(LocalServices) against the fake TuShare: incremental catch-up, resumable backfill,
full history, per-date progress."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    result, _ = run(Daily(), "incremental", trade_date="20261127")  # nothing new
    assert result["steps"]["load"]["total_records"] == 0


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
