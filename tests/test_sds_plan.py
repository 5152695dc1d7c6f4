"""Which run() calls a task makes of a stock_datasource plugin, and how its failures are
classified (in-process; the real plugins run in tests/test_sds_real.py)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from plugins_bridge.adapters.sds_plan import (
    NEEDS_CODE,
    Calendar,
    Planner,
    Style,
    classify_failure,
    classify_text,
    detect_style,
)
from plugins_bridge.errors import BadParameters
from plugins_bridge.progress import TaskContext
from plugins_bridge.tushare.client import TushareNetworkError, TushareRateLimited


class Service:
    """A calendar service shaped like stock_datasource's: dashed dates out."""

    def __init__(self, open_days: list[str]) -> None:
        self.days = sorted(open_days)

    def is_trading_day(self, day: str, market: str) -> bool:
        return day in self.days

    def get_prev_trading_day(self, day: str, market: str) -> str | None:
        before = [d for d in self.days if d < day]
        return f"{before[-1][:4]}-{before[-1][4:6]}-{before[-1][6:]}" if before else None

    def get_trading_days_between(self, start: str, end: str, market: str) -> list[str]:
        return [f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in self.days if start <= d <= end]


DAYS = ["20240102", "20240103", "20240104", "20240105", "20240108", "20240109"]
TODAY = date(2024, 1, 7)  # a Sunday: the latest trading day is Friday the 5th


def planner(style: Style, name: str = "p", full_days: int = 500) -> Planner:
    return Planner(name, style, "cn", full_days, Calendar(Service(DAYS), lambda: TODAY))


def task(task_type: str = "incremental", **kw: Any) -> TaskContext:
    return TaskContext(task_id="t", plugin_name="p", task_type=task_type, attempt=1, **kw)


def calls(plan: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.key, c.kwargs) for c in plan.calls]


@pytest.mark.parametrize(
    ("name", "schema", "style"),
    [
        ("tushare_daily", {"trade_date": {"required": True}}, Style.TRADE_DATE),
        ("x", {}, Style.TRADE_DATE),
        ("x", {"start_date": {}, "end_date": {}, "trade_date": {}}, Style.DATE_RANGE),
        ("x", {"index_code": {"required": True}}, Style.ENTITY_CODE),
        ("x", {"ts_code": "str"}, Style.ENTITY_CODE),  # a flat schema entry is required
        ("x", {"ts_code": {"required": True}, "trade_date": {}}, Style.SKIP_SCHEDULED),
        ("x", {"month": {}}, Style.MONTH_RANGE),
        ("x", {"period": {}}, Style.PERIOD),
        ("x", {"list_status": {"required": False}}, Style.NO_PARAMS),
        ("x", {"exchange": {"required": True}}, Style.TRADE_DATE),
        ("tushare_hk_daily", {"trade_date": {}}, Style.HK_DAILY),
        ("tushare_ggt_monthly", {}, Style.MONTH_RANGE),
        ("tushare_stock_company", {"ts_code": {"required": True}}, Style.NO_PARAMS),
    ],
)
def test_styles(name: str, schema: dict[str, Any], style: Style) -> None:
    assert detect_style(name, {"parameters_schema": schema}) == style


def test_incremental_takes_the_latest_trading_day_or_the_tasks_dates() -> None:
    assert calls(planner(Style.TRADE_DATE).plan(task())) == \
        [("20240105", {"trade_date": "20240105"})]
    plan = planner(Style.DATE_RANGE).plan(task(trade_dates=["2024-01-09", "20240108"]))
    assert calls(plan) == [("20240108", {"start_date": "20240108", "end_date": "20240108"}),
                           ("20240109", {"start_date": "20240109", "end_date": "20240109"})]
    assert calls(planner(Style.MONTH_RANGE).plan(task())) == [("20240105", {"month": "202401"})]
    # the same arguments twice run once
    assert calls(planner(Style.TRADE_DATE, "x_vip").plan(task(trade_dates=DAYS[:3]))) == \
        [("20240102", {"period": "20241231"})]
    assert calls(planner(Style.NO_PARAMS).plan(task())) == [("20240105", {})]


def test_the_producers_fields_and_params_reach_every_call() -> None:
    plan = planner(Style.TRADE_DATE).plan(task(trade_dates=["20240102"], params={"x": 1},
                                               ts_code="000001.SZ", data_source="qmt"))
    assert calls(plan) == [("20240102", {"trade_date": "20240102", "x": 1,
                                         "ts_code": "000001.SZ", "data_source": "qmt"})]


def test_plugins_that_need_a_code_run_only_with_one() -> None:
    plan = planner(Style.ENTITY_CODE).plan(task())
    assert plan.calls == () and plan.note == NEEDS_CODE
    plan = planner(Style.SKIP_SCHEDULED).plan(task(ts_code="000001.SZ"))
    assert calls(plan) == [("20240105", {"trade_date": "20240105", "ts_code": "000001.SZ"})]
    assert planner(Style.ENTITY_CODE).plan(task("full")).calls == ()


def test_backfill_expands_the_range_into_trading_days() -> None:
    plan = planner(Style.TRADE_DATE).plan(task("backfill", start_date="2024-01-04",
                                               end_date="20240108"))
    assert [k for k, _ in calls(plan)] == ["20240104", "20240105", "20240108"]
    with pytest.raises(BadParameters):
        planner(Style.TRADE_DATE).plan(task("backfill"))
    with pytest.raises(BadParameters):
        planner(Style.TRADE_DATE).plan(task("backfill", trade_dates=["Jan 4"]))


def test_full_by_style() -> None:
    # by day: the task's range, else the last full_sync_days trading days
    plan = planner(Style.TRADE_DATE).plan(task("full", start_date="20240103",
                                               end_date="20240105"))
    assert [k for k, _ in calls(plan)] == ["20240103", "20240104", "20240105"]
    assert [k for k, _ in calls(planner(Style.TRADE_DATE, full_days=2).plan(task("full")))] \
        == ["20240104", "20240105"]
    assert calls(planner(Style.DATE_RANGE).plan(task("full"))) == \
        [("", {"start_date": "20220107", "end_date": "20240107"})]
    assert calls(planner(Style.HK_DAILY).plan(task("full"))) == \
        [("", {"start_date": "20230107", "end_date": "20240107"})]
    assert calls(planner(Style.MONTH_RANGE).plan(task("full"))) == \
        [("", {"start_month": "202101", "end_month": "202401"})]
    assert calls(planner(Style.PERIOD).plan(task("full", start_date="20230101"))) == \
        [("20231231", {"period": "20231231"}), ("20241231", {"period": "20241231"})]
    assert calls(planner(Style.NO_PARAMS).plan(task("full"))) == [("", {})]


def test_without_its_calendar_weekdays_are_trading_days() -> None:
    calendar = Calendar(False, lambda: TODAY)
    assert calendar.latest("cn") == "20240105"
    assert calendar.between("20240105", "20240109", "cn") == ["20240105", "20240108",
                                                               "20240109"]


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("您的IP数量超限，最大数量为2个", "config_error"),
        ("抱歉，您每分钟最多访问该接口500次", "rate_limit"),
        ("TUSHARE_TOKEN not configured in settings", "config_error"),
        ("trade_date is required", "bad_params"),
        ("run() got an unexpected keyword argument 'x'", "bad_params"),
        ("'seat_type'", "schema_error"),
        ("KeyError: close", "schema_error"),
        ("TypeError: unsupported operand", "plugin_error"),
        ("RetryError[TypeError]", "error"),
        ("batch mode needs start_date", "bad_params"),
        ("HTTPConnectionPool: Max retries exceeded", "network"),
        ("插件执行失败", "error"),
        ("", "error"),
    ],
)
def test_failure_messages_are_read_as_their_worker_reads_them(message: str, kind: str) -> None:
    assert classify_text(message)[0] == kind


def test_the_structured_cause_comes_before_the_text() -> None:
    text = "RetryError[<Future at 0x1 state=finished raised TushareNetworkError>]"
    network = TushareNetworkError("TuShare daily: HTTP 502 Bad Gateway")
    assert classify_failure({"status": "failed"}, text, [network]) == ("network", None)
    limited = TushareRateLimited("quota", retry_after=60)
    assert classify_failure({"status": "failed"}, "x is required", [limited]) == \
        ("rate_limit", 60)
    stated = {"status": "failed", "error_type": "config_error"}
    assert classify_failure(stated, text, [network]) == ("config_error", None)
    invalid = {"status": "failed", "steps": {"validate": {"status": "failed"}}}
    assert classify_failure(invalid, "validate: failed") == ("schema_error", None)
    assert classify_failure({"status": "failed"}, text) == ("error", None)


def test_plugins_bridge_never_imports_the_daemons_internals() -> None:
    """DESIGN §10: the plugin side may use app's settings, logs and errors, never the
    scheduler, the sidecar or the worker (not even inside a function)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = []
    for path in sorted((root / "plugins_bridge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [(path.name, n) for n in names
                      if n.split(".")[:2] in (["app", "scheduler"], ["app", "api"],
                                              ["app", "worker"])]
    assert found == []
