"""Which ``run()`` calls a task makes of a stock_datasource plugin, and how a failed
result is classified: the rules of that project's own worker (``services/task_worker.py``),
so its plugins run under stockq as they run there.

**Argument styles** (:func:`detect_style`, from the plugin's name and the
``parameters_schema`` of its config.json, as that worker decides them):

==================  =============================================  ====================
style               incremental / backfill call for trading day D  full
==================  =============================================  ====================
``trade_date``      ``trade_date=D``                               every trading day of
                                                                   the range, one call
                                                                   each (default: the
                                                                   last
                                                                   ``full_sync_days``,
                                                                   500)
``date_range``      ``start_date=D, end_date=D``                   one call over two
                                                                   years
``hk_daily``        ``start_date=D, end_date=D``                   one call over a year
``month_range``     ``month=YYYYMM``                               ``start_month``,
                                                                   ``end_month`` (three
                                                                   years)
``period``          ``period=YYYY1231``                            one call per year-end
``no_params``       no arguments                                   no arguments
``entity_code``,    nothing to run (they need a stock or index     nothing to run
``skip_scheduled``  code); with the task's ``ts_code``:
                    ``trade_date=D``
==================  =============================================  ====================

A plugin whose name ends in ``_vip`` takes ``period=YYYY1231`` by day, as there.  D is
the task's trade dates (dashes removed: ``2026-01-08`` -> ``20260108``); without them
``incremental`` takes the latest trading day of the plugin's market (today when it is
one) and ``backfill`` every trading day from ``start_date`` to ``end_date``; the task's
``start_date``/``end_date`` also bound ``full``.  The trading days come from
stock_datasource's own calendar (``core.trade_calendar``), weekdays when it is missing.
Calls whose arguments repeat (a ``period`` plugin over many days) run once.  Every call
also gets the task's ``ts_code`` and ``data_source`` (the original producer's fields).

Where stockq differs from that worker: a backfill passes each style its own per-day
arguments (there every style got ``trade_date``); ``full`` stops at the first failed day
and its retry resumes there (there failed days were skipped and the task succeeded);
``period`` plugins get year-ends in ``full`` (there they fell through to 500 days of
``trade_date``).

**Failures** (:func:`classify_failure`): an ``error_type`` the result states; else the
TuShare error the run's last TuShare call raised (network, rate limit, token, ...: the
structured cause behind a tenacity ``RetryError``); else a failed ``validate`` step
(``schema_error``: the same data fails again); else the message, read as that worker
reads it — IP limit and token configuration: ``config_error``; "... is required",
unexpected arguments, batch mode: ``bad_params``; ``KeyError``: ``schema_error``;
``TypeError``: ``plugin_error`` (none retried); quota messages: ``rate_limit`` (retried
after the quota window, where that worker gave up, having no delayed retry); network
words: ``network``; anything else: ``error``, retried like there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from plugins_bridge.contract import RunCall, RunPlan
from plugins_bridge.errors import BadParameters, PluginError
from plugins_bridge.progress import TaskContext


class Style(StrEnum):
    TRADE_DATE = "trade_date"
    DATE_RANGE = "date_range"
    HK_DAILY = "hk_daily"
    MONTH_RANGE = "month_range"
    PERIOD = "period"
    NO_PARAMS = "no_params"
    ENTITY_CODE = "entity_code"
    SKIP_SCHEDULED = "skip_scheduled"


#: plugins whose config.json does not describe their parameters (as that worker has them)
NAMED_STYLES = {
    "tushare_ggt_monthly": Style.MONTH_RANGE,
    "tushare_hk_daily": Style.HK_DAILY,
    "tushare_stock_company": Style.NO_PARAMS,
    "tushare_forecast": Style.DATE_RANGE,
    "tushare_index_e": Style.DATE_RANGE,
}
_ENTITY_KEYS = ("index_code", "ts_code", "code")
FULL_SYNC_DAYS = 500
FULL_RANGE_DAYS = {Style.DATE_RANGE: 730, Style.HK_DAILY: 365, Style.MONTH_RANGE: 1095,
                   Style.PERIOD: 730}
NEEDS_CODE = "Skipped: requires entity code parameter"
MARKET_CN = "cn"
MARKET_HK = "hk"


def _required(spec: Any) -> bool:
    return not isinstance(spec, Mapping) or bool(spec.get("required", False))


def detect_style(name: str, config: Mapping[str, Any]) -> Style:
    """The argument style of plugin ``name`` with config.json ``config``."""
    if name in NAMED_STYLES:
        return NAMED_STYLES[name]
    schema = config.get("parameters_schema")
    schema = schema if isinstance(schema, Mapping) else {}
    if "start_date" in schema and "end_date" in schema:
        return Style.DATE_RANGE
    if any(key in schema and _required(schema[key]) for key in _ENTITY_KEYS):
        return Style.SKIP_SCHEDULED if "trade_date" in schema else Style.ENTITY_CODE
    if "month" in schema or "start_month" in schema:
        return Style.MONTH_RANGE
    if "period" in schema and "trade_date" not in schema:
        return Style.PERIOD
    if schema and "trade_date" not in schema and not any(
            isinstance(spec, Mapping) and spec.get("required", False)
            for spec in schema.values()):
        return Style.NO_PARAMS
    return Style.TRADE_DATE


def plain_date(text: str) -> str:
    """``YYYYMMDD`` from ``YYYYMMDD`` or ``YYYY-MM-DD``; BadParameters otherwise."""
    value = str(text).strip().replace("-", "")
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise BadParameters(f"{text!r} is not a date (YYYYMMDD or YYYY-MM-DD)") from None
    return value


def _ymd(day: date) -> str:
    return day.strftime("%Y%m%d")


class Calendar:
    """Trading days from stock_datasource's own calendar service (its bundled CSVs);
    weekdays when the service cannot be loaded."""

    def __init__(self, service: Any = None, today: Callable[[], date] = date.today) -> None:
        self._service = service
        self.today = today

    def _calendar(self) -> Any:
        if self._service is None:
            try:
                from stock_datasource.core.trade_calendar import (  # type: ignore[import-not-found]
                    trade_calendar_service,
                )
                self._service = trade_calendar_service
            except Exception:
                self._service = False
        return self._service or None

    def latest(self, market: str) -> str:
        """Today when it is a trading day, else the one before (as that worker does)."""
        today = _ymd(self.today())
        service = self._calendar()
        if service is not None:
            try:
                if service.is_trading_day(today, market=market):
                    return today
                before = service.get_prev_trading_day(today, market=market)
                if before:
                    return plain_date(str(before))
            except Exception:  # a broken calendar: the weekday rule below
                pass
        day = self.today()
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        return _ymd(day)

    def between(self, start: str, end: str, market: str) -> list[str]:
        """Trading days from ``start`` to ``end`` (inclusive, ``YYYYMMDD``), oldest first."""
        service = self._calendar()
        if service is not None:
            try:
                days = service.get_trading_days_between(start, end, market=market)
                if days:
                    return sorted(plain_date(str(d)) for d in days)
            except Exception:
                pass
        first = datetime.strptime(start, "%Y%m%d").date()
        last = datetime.strptime(end, "%Y%m%d").date()
        return [_ymd(first + timedelta(days=n)) for n in range((last - first).days + 1)
                if (first + timedelta(days=n)).weekday() < 5]


def _day_kwargs(style: Style, name: str, day: str, has_code: bool) -> dict[str, Any] | None:
    """The call for trading day ``day``; None when the style cannot run by day."""
    if name.endswith("_vip") or style is Style.PERIOD:
        return {"period": f"{day[:4]}1231"}
    if style in (Style.DATE_RANGE, Style.HK_DAILY):
        return {"start_date": day, "end_date": day}
    if style is Style.MONTH_RANGE:
        return {"month": day[:6]}
    if style is Style.NO_PARAMS:
        return {}
    if style in (Style.ENTITY_CODE, Style.SKIP_SCHEDULED) and not has_code:
        return None
    return {"trade_date": day}


def _unique(calls: Iterable[RunCall]) -> tuple[RunCall, ...]:
    seen: list[dict[str, Any]] = []
    out: list[RunCall] = []
    for call in calls:
        if call.kwargs not in seen:
            seen.append(call.kwargs)
            out.append(call)
    return tuple(out)


class Planner:
    """The calls of one plugin's tasks (see the module docstring)."""

    def __init__(self, name: str, style: Style, market: str, full_sync_days: int,
                 calendar: Calendar) -> None:
        self.name = name
        self.style = style
        self.market = market
        self.full_sync_days = full_sync_days
        self.calendar = calendar

    def plan(self, task: TaskContext) -> RunPlan:
        extra = {**task.params}
        if task.ts_code:
            extra.setdefault("ts_code", task.ts_code)
        if task.data_source:
            extra["data_source"] = task.data_source
        start = plain_date(task.start_date) if task.start_date else ""
        end = plain_date(task.end_date) if task.end_date else ""
        if task.task_type == "full" and not task.trade_dates:
            return self._full(start, end, extra, bool(task.ts_code))
        if task.trade_dates:
            days = sorted({plain_date(d) for d in task.trade_dates})
        elif task.task_type == "backfill":
            if not start:
                raise BadParameters("a backfill needs trade_dates or start_date/end_date")
            days = self.calendar.between(start, end or _ymd(self.calendar.today()),
                                         self.market)
        else:
            days = [self.calendar.latest(self.market)]
        return self._by_day(days, extra, bool(task.ts_code))

    def _by_day(self, days: list[str], extra: dict[str, Any], has_code: bool) -> RunPlan:
        calls = []
        for day in days:
            kwargs = _day_kwargs(self.style, self.name, day, has_code)
            if kwargs is None:
                return RunPlan((), NEEDS_CODE)
            calls.append(RunCall(day, {**kwargs, **extra}))
        return RunPlan(_unique(calls))

    def _full(self, start: str, end: str, extra: dict[str, Any], has_code: bool) -> RunPlan:
        today = self.calendar.today()
        last = end or _ymd(today)
        if self.style in (Style.ENTITY_CODE, Style.SKIP_SCHEDULED):
            return RunPlan((), NEEDS_CODE)
        if self.style is Style.NO_PARAMS:
            return RunPlan((RunCall("", dict(extra)),))
        span = FULL_RANGE_DAYS.get(self.style)
        if span is not None:
            first = start or _ymd(today - timedelta(days=span))
            if self.style is Style.MONTH_RANGE:
                kwargs: dict[str, Any] = {"start_month": first[:6], "end_month": last[:6]}
            elif self.style is Style.PERIOD:
                years = range(int(first[:4]), int(last[:4]) + 1)
                return RunPlan(tuple(RunCall(f"{y}1231", {"period": f"{y}1231", **extra})
                                     for y in years))
            else:
                kwargs = {"start_date": first, "end_date": last}
            return RunPlan((RunCall("", {**kwargs, **extra}),))
        if start:
            days = self.calendar.between(start, last, self.market)
        else:
            first = _ymd(today - timedelta(days=self.full_sync_days + 200))
            days = self.calendar.between(first, last, self.market)[-self.full_sync_days:]
        return self._by_day(days, extra, has_code)


# --------------------------------------------------------------------- failures
_IP_LIMIT = ("IP数量超限", "最大数量为2个")
_RATE = re.compile(r"每分钟最多|访问频次|频率限制|rate limit", re.IGNORECASE)
_NETWORK = re.compile(
    r"(?i)(connection (refused|reset|aborted|error)|timed? ?out|temporarily unavailable|"
    r"name or service not known|max retries exceeded|remote end closed|50[234] )")
RATE_LIMIT_WAIT = 60.0


def classify_text(message: str) -> tuple[str, float | None]:
    """``(error_type, retry_after)`` of a failure message, read as that worker reads it."""
    text = (message or "").strip()
    lowered = text.lower()
    if any(word in text for word in _IP_LIMIT):
        return "config_error", None
    if _RATE.search(text):
        return "rate_limit", RATE_LIMIT_WAIT
    if "TUSHARE_TOKEN" in text and ("not configured" in text or "not set" in text):
        return "config_error", None
    if " is required" in text or "unexpected keyword argument" in text:
        return "bad_params", None
    if "KeyError" in text or (len(text) > 1 and text.startswith("'") and text.endswith("'")):
        return "schema_error", None
    if "TypeError" in text and "RetryError" not in text:
        return "plugin_error", None
    if "batch mode" in lowered or ("start_date" in text and "end_date" in text
                                   and "required" in lowered):
        return "bad_params", None
    if _NETWORK.search(text):
        return "network", None
    return "error", None


def classify_failure(result: Mapping[str, Any], text: str,
                     tushare_errors: Iterable[PluginError] = ()) -> tuple[str, float | None]:
    """``(error_type, retry_after)`` of a failed result (see the module docstring)."""
    stated = result.get("error_type")
    if stated:
        return str(stated), None
    errors = list(tushare_errors)
    if errors:
        return errors[-1].error_type, errors[-1].retry_after
    steps = result.get("steps")
    validate = steps.get("validate") if isinstance(steps, Mapping) else None
    if isinstance(validate, Mapping) and validate.get("status") == "failed":
        return "schema_error", None
    return classify_text(text)
