"""``/api/datamanage/plugins/...``: stock_datasource's plugin routes over stockq's
registry, the schedule edits (enabled, data source) and the plugins' tables in the
warehouse (:mod:`app.plugin_data`)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from app.api.app import REGISTRY, SETTINGS, WAREHOUSE, jsonable, queue_of
from app.api.compat.requests import (
    CHECK_DATES,
    PLUGIN_DATA_SOURCE,
    CompatError,
    body_of,
    query_int,
    query_text,
)
from app.api.compat.schedule import frequency_of
from app.api.compat.sync import clock_of
from app.plugin_data import PluginTable, TableReader, meta_of, table_of
from app.queue import TaskQueue
from app.redis_client import redis_errors
from app.scheduler import overrides
from app.scheduler.calendar import TradingCalendar
from app.scheduler.jobs import build_jobs
from plugins_bridge.registry import PluginRegistry

CATEGORIES = ("cn_stock", "hk_stock", "index", "etf_fund", "market", "reference",
              "fundamental", "system")
ALIASES = {"stock": "cn_stock"}
ROLES = ("primary", "basic", "derived", "auxiliary")
RECENT_DAYS = 30  # trading days a daily plugin's status looks back over


def _plugin(request: web.Request, status: int = 404) -> str:
    name = request.match_info["name"]
    if name not in request.app[REGISTRY]:
        raise CompatError(status, f"Plugin {name} not found")
    return name


async def recent_trading_days(queue: TaskQueue, zone: str) -> list[str]:
    """The last RECENT_DAYS trading days up to today (newest first), YYYY-MM-DD."""
    calendar = TradingCalendar(queue.client, queue.settings, clock=queue.clock)
    day: date = datetime.fromtimestamp(queue.clock(), ZoneInfo(zone)).date()
    out: list[str] = []
    for _ in range(RECENT_DAYS * 3):
        if len(out) == RECENT_DAYS:
            break
        if (await calendar.day(day)).trading:
            out.append(day.isoformat())
        day -= timedelta(days=1)
    return out


def _times(registry: PluginRegistry, request: web.Request,
           edits: overrides.ScheduleOverrides) -> dict[str, str]:
    """Plugin -> the HH:MM its schedule job fires at (when its trigger has one)."""
    out: dict[str, str] = {}
    for job in build_jobs(request.app[SETTINGS], registry, edits):
        fields = job.expression.split()[-5:]
        if fields[0].isdigit() and fields[1].isdigit():
            for name in job.plugins:
                out[name] = f"{int(fields[1]):02d}:{int(fields[0]):02d}"
    return out


async def _last_runs(queue: TaskQueue, names: list[str]) -> dict[str, tuple[str, str]]:
    """Plugin -> (when its newest task last changed, its status)."""
    keys = queue.keys
    with redis_errors(queue.settings):
        async with queue.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zrevrange(keys.plugin_index(name), 0, 0)
            newest = await pipe.execute()
        async with queue.client.pipeline(transaction=False) as pipe:
            for ids in newest:
                pipe.hmget(keys.task(ids[0]) if ids else keys.task(""), ["updated_at", "status"])
            rows = await pipe.execute()
    return {name: (row[0], row[1]) for name, row in zip(names, rows, strict=True)
            if row[0] and row[1]}


def _sources(meta_config: dict[str, Any], chosen: str) -> tuple[str | None, list[str]]:
    available = [str(s) for s in meta_config.get("available_data_sources") or []]
    return chosen or meta_config.get("data_source") or None, available


async def list_plugins(request: web.Request) -> web.Response:
    registry, queue = request.app[REGISTRY], queue_of(request)
    category, role = query_text(request, "category"), query_text(request, "role")
    wanted = ALIASES.get(category or "", category)
    if category and wanted not in CATEGORIES:
        raise CompatError(400, f"Invalid category: {category}. Valid values: "
                               f"{', '.join(CATEGORIES)}")
    if role and role not in ROLES:
        raise CompatError(400, f"Invalid role: {role}")
    edits = await overrides.load(queue)
    names = registry.names()
    tables = {n: table_of(registry.get(n)) for n in names}
    latest = await TableReader(request.app.get(WAREHOUSE)).latest_dates(
        t for t in tables.values() if t is not None)
    recent = await recent_trading_days(queue, request.app[SETTINGS].timezone)
    times, runs, clock = _times(registry, request, edits), await _last_runs(queue, names), \
        clock_of(request)
    out = []
    for name in names:
        plugin, meta, table = registry.get(name), meta_of(registry, name), tables[name]
        if (category and meta.category not in (wanted, category)) or (role and meta.role != role):
            continue
        schedule = str(getattr(plugin, "schedule", "") or "")
        newest = latest.get(table.name) if table else None
        frequency = frequency_of(schedule) if schedule else None
        data_source, available = _sources(meta.config, edits.plugin(name).data_source)
        run_at, run_status = runs.get(name, (None, None))
        out.append({
            "name": name, "version": meta.version,
            "description": str(getattr(plugin, "description", "") or ""),
            "type": "data_source", "category": meta.category, "role": meta.role,
            "is_enabled": edits.plugin(name).enabled, "schedule_frequency": frequency,
            "schedule_time": times.get(name), "latest_date": newest,
            "missing_count": sum(1 for d in recent if d > newest)
            if newest and frequency == "daily" else 0,
            "last_run_at": clock.time(run_at), "last_run_status": run_status,
            "data_source": data_source, "available_data_sources": available,
            "dependencies": list(getattr(plugin, "dependencies", ()) or ()),
            "optional_dependencies": list(getattr(plugin, "optional_dependencies", ()) or ()),
        })
    return jsonable(out)


async def _status(request: web.Request, name: str, table: PluginTable | None) -> dict[str, Any]:
    if table is None:
        return {"latest_date": None, "missing_count": 0, "missing_dates": [],
                "total_records": 0}
    reader = TableReader(request.app.get(WAREHOUSE))
    total, latest = await reader.status(table)
    missing: list[str] = []
    plugin = request.app[REGISTRY].get(name)
    if table.date_column and frequency_of(str(getattr(plugin, "schedule", "") or "")) == "daily" \
            and getattr(plugin, "schedule", None) and reader.warehouse is not None:
        recent = await recent_trading_days(queue_of(request), request.app[SETTINGS].timezone)
        present = await reader.dates_present(table, recent)
        missing = [d for d in recent if d not in present]
    return {"latest_date": latest, "missing_count": len(missing), "missing_dates": missing,
            "total_records": total}


async def _detail(request: web.Request, name: str) -> dict[str, Any]:
    registry = request.app[REGISTRY]
    plugin, meta = registry.get(name), meta_of(registry, name)
    edits = await overrides.load(queue_of(request))
    table = table_of(plugin)
    config = meta.config
    schedule = str(getattr(plugin, "schedule", "") or "")
    data_source, available = _sources(config, edits.plugin(name).data_source)
    status = await _status(request, name, table)
    status["missing_dates"] = status["missing_dates"][:10]
    description = str(getattr(plugin, "description", "") or "")
    return {
        "plugin_name": name, "version": meta.version, "description": description,
        "config": {
            "enabled": edits.plugin(name).enabled,
            "rate_limit": int(getattr(plugin, "rate_limit_per_minute", None) or 120),
            "timeout": int(config.get("timeout") or getattr(plugin, "default_timeout_seconds",
                                                            None) or 30),
            "retry_attempts": int(config.get("retry_attempts")
                                  or getattr(plugin, "default_max_attempts", None) or 3),
            "description": config.get("description") or description,
            "schedule": {"frequency": frequency_of(schedule),
                         "time": _times(registry, request, edits).get(name, "18:00"),
                         "day_of_week": None} if schedule else None,
            "data_source": data_source, "available_data_sources": available,
            "parameters_schema": dict(config.get("parameters_schema") or {}),
        },
        "table_schema": {
            "table_name": table.name if table else f"ods_{name}",
            "table_type": table.table_type if table else "ods",
            "columns": list(table.columns) if table else [],
            "partition_by": (table.partition_by or None) if table else None,
            "order_by": list(table.order_by) if table else [],
            "engine": table.engine if table else "ReplacingMergeTree",
            "engine_params": list(table.engine_params) if table else [],
            "comment": (table.comment or None) if table else None,
        },
        "status": status,
    }


async def detail(request: web.Request) -> web.Response:
    return jsonable(await _detail(request, _plugin(request)))


async def status(request: web.Request) -> web.Response:
    name = _plugin(request)
    return jsonable(await _status(request, name, table_of(request.app[REGISTRY].get(name))))


async def set_data_source(request: web.Request) -> web.Response:
    body = await body_of(request, PLUGIN_DATA_SOURCE)
    name = _plugin(request, 400)
    _, available = _sources(meta_of(request.app[REGISTRY], name).config, "")
    if body["data_source"] not in available:
        raise CompatError(400, f"Unsupported data_source '{body['data_source']}' for {name}. "
                               f"Available: {', '.join(available)}")
    await overrides.update(queue_of(request), plugins={name: {"data_source":
                                                              body["data_source"]}})
    return jsonable(await _detail(request, name))


async def data(request: web.Request) -> web.Response:
    name = _plugin(request)
    page = query_int(request, "page", 1, low=1)
    size = query_int(request, "page_size", 100, low=1, high=1000)
    table = table_of(request.app[REGISTRY].get(name))
    found = await TableReader(request.app.get(WAREHOUSE)).preview(
        table, query_text(request, "trade_date"), page, size) if table else None
    if table is None or found is None:
        raise CompatError(404, f"Plugin {name} not found or no data available")
    columns, rows, total = found
    return jsonable({"plugin_name": name, "table_name": table.name, "columns": columns,
                     "data": rows, "total_count": total, "page": page, "page_size": size})


async def check_exists(request: web.Request) -> web.Response:
    body = await body_of(request, CHECK_DATES)
    name = request.match_info["name"]
    dates = [str(d) for d in body["dates"]]
    table = table_of(request.app[REGISTRY].get(name)) if name in request.app[REGISTRY] \
        else None
    present = await TableReader(request.app.get(WAREHOUSE)).dates_present(table, dates) \
        if table else set()
    return jsonable({"plugin_name": name, "dates_checked": dates,
                     "existing_dates": [d for d in dates if d in present],
                     "non_existing_dates": [d for d in dates if d not in present],
                     "record_counts": {}})


async def enable(request: web.Request) -> web.Response:
    name = _plugin(request)
    on = request.path.endswith("/enable")
    await overrides.update(queue_of(request), plugins={name: {"enabled": on}})
    return jsonable({"success": True, "is_enabled": on})


async def dependencies(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    name = _plugin(request)
    check = await TableReader(request.app.get(WAREHOUSE)).check_dependencies(registry, name)
    return jsonable({"plugin_name": name, "dependencies": check.dependencies,
                     "optional_dependencies": check.optional_dependencies,
                     "satisfied": check.satisfied, "missing_plugins": check.missing_plugins,
                     "missing_data": check.missing_data,
                     "dependency_details": check.details})


async def dependency_graph(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    graph = {n: list(getattr(registry.get(n), "dependencies", ()) or ())
             for n in registry.names()}
    reverse = {n: [m for m in registry.names() if n in graph[m]] for n in registry.names()}
    return jsonable({"graph": graph, "reverse_graph": reverse})
