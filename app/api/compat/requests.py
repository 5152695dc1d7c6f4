"""Request bodies and query parameters of the ``/api/datamanage`` routes, validated as
stock_datasource's FastAPI application validates them: its pydantic models (the same
field names, types, defaults and limits; unknown fields ignored) and ``Query`` limits;
what does not pass is ``422`` with FastAPI's list of errors::

    {"detail": [{"type": "missing", "loc": ["body", "plugin_name"],
                 "msg": "Field required", "input": {...}}]}

Every other error of these routes is ``{"detail": <text or object>}`` with the status
the original answered (:class:`CompatError`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from app.api.schema import Field, Model
from app.errors import InvalidInput, StockqError

TASK_TYPES = ("full", "incremental", "backfill")
MAX_LIST = 10_000


class CompatError(StockqError):
    """An answer of a ``/api/datamanage`` route: ``{"detail": detail}`` with ``status``."""

    code = "datamanage"

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail if isinstance(detail, str) else json.dumps(detail))
        self.http_status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Body:
    """A pydantic request model of the original: fields and their defaults."""

    model: Model
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model.name


def _text(name: str, **kw: Any) -> Field:
    return Field(name, ("string",), **kw)


def _flag(name: str, *, nullable: bool = False) -> Field:
    return Field(name, ("boolean",), nullable=nullable)


def _dates(name: str, *, required: bool = False, min_items: int | None = None,
           nullable: bool = True) -> Field:
    return Field(name, ("array",), items="string", max_items=MAX_LIST, required=required,
                 min_items=min_items, nullable=nullable,
                 description="dates, YYYY-MM-DD (YYYYMMDD accepted)")


def _task_type(name: str = "task_type", *, nullable: bool = False) -> Field:
    return Field(name, ("string",), enum=TASK_TYPES, nullable=nullable)


def _count(name: str, high: int) -> Field:
    return Field(name, ("integer",), minimum=1, maximum=high, nullable=True)


TRIGGER_SYNC = Body(Model("TriggerSyncRequest", (
    _text("plugin_name", required=True), _task_type(), _dates("trade_dates"),
    _flag("force_overwrite"), _flag("include_optional"),
    _text("data_source", nullable=True), _text("ts_code", nullable=True),
    _count("max_concurrent_tasks", 10), _count("max_date_threads", 20),
), extra=True, description="stock_datasource's TriggerSyncRequest"),
    {"task_type": "incremental", "trade_dates": None, "force_overwrite": False,
     "include_optional": True, "data_source": None, "ts_code": None,
     "max_concurrent_tasks": None, "max_date_threads": None})

SYNC_CONFIG = Body(Model("SyncConfigRequest", (
    _count("max_concurrent_tasks", 10), _count("max_date_threads", 20),
), extra=True), {"max_concurrent_tasks": None, "max_date_threads": None})

BATCH_SYNC = Body(Model("BatchSyncRequest", (
    Field("plugin_names", ("array",), items="string", required=True, min_items=1,
          max_items=1000), _task_type(), _flag("include_optional"), _dates("trade_dates"),
), extra=True), {"task_type": "incremental", "include_optional": True, "trade_dates": None})

CHECK_DATES = Body(Model("CheckDataExistsRequest", (
    _dates("dates", required=True, min_items=1, nullable=False),), extra=True))
GROUP_CHECK_DATES = Body(Model("GroupDataExistsCheckRequest", (
    _dates("dates", required=True, min_items=1, nullable=False),), extra=True))

PLUGIN_DATA_SOURCE = Body(Model("UpdatePluginDataSourceRequest", (
    _text("data_source", required=True),), extra=True))

SCHEDULE_CONFIG = Body(Model("ScheduleConfigRequest", (
    _flag("enabled", nullable=True),
    _text("execute_time", nullable=True, pattern=r"^\d{2}:\d{2}$", description="HH:MM"),
    Field("frequency", ("string",), enum=("daily", "weekday"), nullable=True),
    _flag("include_optional_deps", nullable=True),
    _flag("skip_non_trading_days", nullable=True),
), extra=True), {"enabled": None, "execute_time": None, "frequency": None,
                 "include_optional_deps": None, "skip_non_trading_days": None})

PLUGIN_SCHEDULE = Body(Model("PluginScheduleConfigRequest", (
    _flag("schedule_enabled", nullable=True), _flag("full_scan_enabled", nullable=True),
), extra=True), {"schedule_enabled": None, "full_scan_enabled": None})

PARTIAL_RETRY = Body(Model("PartialRetryRequest", (
    Field("task_ids", ("array",), items="string", max_items=MAX_LIST, nullable=True),
), extra=True), {"task_ids": None})

GROUP_CREATE = Body(Model("PluginGroupCreateRequest", (
    _text("name", required=True, min_length=1, max_length=50),
    _text("description", max_length=200),
    Field("plugin_names", ("array",), items="string", required=True, min_items=1,
          max_items=1000),
    _task_type("default_task_type"),
), extra=True), {"description": "", "default_task_type": "incremental"})

GROUP_UPDATE = Body(Model("PluginGroupUpdateRequest", (
    _text("name", nullable=True, min_length=1, max_length=50),
    _text("description", nullable=True, max_length=200),
    Field("plugin_names", ("array",), items="string", nullable=True, min_items=1,
          max_items=1000),
    _task_type("default_task_type", nullable=True),
), extra=True), {"name": None, "description": None, "plugin_names": None,
                 "default_task_type": None})

GROUP_TRIGGER = Body(Model("PluginGroupTriggerRequest", (
    _task_type(), _dates("trade_dates"),
), extra=True), {"task_type": "incremental", "trade_dates": None})

SCHEDULER_CONFIG = Body(Model("SchedulerConfigUpdate", (
    _flag("enabled", nullable=True),
    _text("data_sync_time", nullable=True, pattern=r"^\d{2}:\d{2}$"),
    _text("analysis_time", nullable=True, pattern=r"^\d{2}:\d{2}$"),
), extra=True), {"enabled": None, "data_sync_time": None, "analysis_time": None})

BODIES = (SCHEDULER_CONFIG, TRIGGER_SYNC, SYNC_CONFIG, BATCH_SYNC, CHECK_DATES, GROUP_CHECK_DATES,
          PLUGIN_DATA_SOURCE, SCHEDULE_CONFIG, PLUGIN_SCHEDULE, PARTIAL_RETRY, GROUP_CREATE,
          GROUP_UPDATE, GROUP_TRIGGER)


def _error(kind: str, loc: list[Any], msg: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def validation_error(errors: list[dict[str, Any]]) -> CompatError:
    return CompatError(422, errors)


async def body_of(request: web.Request, body: Body, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object validated by ``body`` with its defaults filled in.  An
    empty body is ``{}`` when ``optional`` (the original gave the route a default
    model), else 422 ``missing``."""
    raw = await request.read()
    if not raw.strip():
        if optional:
            return dict(body.defaults)
        raise validation_error([_error("missing", ["body"], "Field required", None)])
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise validation_error([_error("json_invalid", ["body", 0], "JSON decode error",
                                       {"error": str(exc)[:200]})]) from None
    if not isinstance(value, dict):
        raise validation_error([_error("model_attributes_type", ["body"],
                                       "Input should be a valid dictionary or object to "
                                       "extract fields from", value)])
    errors = []
    for f in body.model.fields:
        if f.name not in value:
            if f.required:
                errors.append(_error("missing", ["body", f.name], "Field required", value))
            continue
        try:
            f.check(value[f.name])
        except InvalidInput as exc:
            errors.append(_error("value_error", ["body", f.name], exc.message,
                                 value[f.name]))
    if errors:
        raise validation_error(errors)
    known = {f.name for f in body.model.fields}
    return {**body.defaults, **{k: v for k, v in value.items() if k in known}}


def query_int(request: web.Request, name: str, default: int, *, low: int,
              high: int | None = None) -> int:
    """An integer query parameter within [low, high] (FastAPI ``Query(ge, le)``)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not (text.lstrip("-").isdigit() and len(text) <= 12):
        raise validation_error([_error("int_parsing", ["query", name], "Input should be a "
                                       "valid integer, unable to parse string as an integer",
                                       raw)])
    value = int(text)
    if value < low:
        raise validation_error([_error("greater_than_equal", ["query", name],
                                       f"Input should be greater than or equal to {low}",
                                       raw)])
    if high is not None and value > high:
        raise validation_error([_error("less_than_equal", ["query", name],
                                       f"Input should be less than or equal to {high}", raw)])
    return value


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    raw = (request.query.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise validation_error([_error("bool_parsing", ["query", name],
                                   "Input should be a valid boolean", raw)])


def query_text(request: web.Request, name: str) -> str | None:
    return request.query.get(name) or None
