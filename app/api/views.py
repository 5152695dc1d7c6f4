"""Read-only summaries for the dashboard (and for anyone with curl): recent activity,
the warehouse's coverage of trading days, and the audit's outcomes per day."""

from __future__ import annotations

from aiohttp import web

from app.activity import recent_activity
from app.api.app import REGISTRY, SETTINGS, WAREHOUSE, jsonable, queue_of
from app.api.security import access_of
from app.audit import MAX_DAILY_DAYS, daily_outcomes
from app.coverage import coverage, parse_days
from app.errors import InvalidInput
from plugins_bridge.warehouse import Warehouse, WarehouseUnavailable


def warehouse_of(request: web.Request) -> Warehouse:
    warehouse = request.app.get(WAREHOUSE)
    if warehouse is None:
        raise WarehouseUnavailable(
            "this sidecar has no ClickHouse: set STOCKQ_CLICKHOUSE_URL to a ClickHouse "
            "server, or ask the sidecar of `stockq run`, which holds the embedded one")
    return warehouse


async def session(request: web.Request) -> web.Response:
    """What the caller's token may do, whether this sidecar reads ClickHouse (the
    history and the data coverage), and what the dashboard shows times in."""
    settings = request.app[SETTINGS]
    return jsonable({"access": access_of(request), "auth": bool(settings.api_token),
                     "clickhouse": WAREHOUSE in request.app,
                     "timezone": settings.timezone, "namespace": settings.key_prefix})


async def stats(request: web.Request) -> web.Response:
    return jsonable(await recent_activity(queue_of(request)))


async def data_coverage(request: web.Request) -> web.Response:
    days = parse_days(request.query.get("days", "30"))
    return jsonable(await coverage(queue_of(request), warehouse_of(request),
                                   request.app[REGISTRY], days))


async def history_daily(request: web.Request) -> web.Response:
    raw = request.query.get("days", "14")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) \
            or not 1 <= int(raw) <= MAX_DAILY_DAYS:
        raise InvalidInput(f"days must be a whole number between 1 and {MAX_DAILY_DAYS}")
    return jsonable(await daily_outcomes(
        warehouse_of(request), days=int(raw), timezone=request.app[SETTINGS].timezone,
        plugin=request.query.get("plugin", "")))
