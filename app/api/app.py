"""The HTTP sidecar: an aiohttp application factory.

``create_app(settings)`` builds the application used by ``stockq api`` (and later by
``stockq run``).  One route table (:data:`app.api.routes.ROUTES`, with the routes of
stock_datasource's data-management API that stockq serves, :data:`app.api.compat.ROUTES`)
registers the handlers and generates ``/openapi.json``.  Middlewares, outermost first:
access log with a request id, CORS when configured (so error responses carry its headers
too), JSON errors, FastAPI's error shape under ``/api/datamanage``, the guard
(cross-origin changes refused, bearer-token auth on ``/api/v1`` and ``/api/datamanage``,
JSON bodies only on changes).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from app.api.events import EVENT_HUB, EventHub
from app.api.security import check_read_token, check_token, guard
from app.errors import RedisUnavailable, StockqError
from app.logs import get_logger
from app.query_sandbox import QuerySandbox
from app.queue import TaskQueue
from app.redaction import redactor_for
from app.redis_client import create_client
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.warehouse import Warehouse

log = get_logger("stockq.api")

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", PluginRegistry)
QUEUE = web.AppKey("queue", TaskQueue)
CLIENT = web.AppKey("client", aioredis.Redis)
STARTED = web.AppKey("started", float)
WAREHOUSE = web.AppKey("warehouse", Warehouse)
SANDBOX = web.AppKey("sandbox", QuerySandbox)  # POST /api/v1/query, with a warehouse
ROUTE_TABLE = web.AppKey("route_table", tuple)  # every Route the app serves (/openapi.json)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIX = "/api/v1"
REQUEST_ID = "X-Request-ID"


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers or None)


def queue_of(request: web.Request) -> TaskQueue:
    """The app's TaskQueue, or RedisUnavailable (Mode A: there is no other path)."""
    queue = request.app.get(QUEUE)
    if queue is None:
        raise RedisUnavailable(
            "Redis is disabled (STOCKQ_REDIS_ENABLED or REDIS_ENABLED is false); "
            "stockq needs Redis to queue tasks"
        )
    return queue


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
               405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get(REQUEST_ID, "")[:64] or uuid.uuid4().hex
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID] = rid
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[REQUEST_ID] = rid
        raise
    finally:
        log.info("api.request", method=request.method, path=request.path, status=status,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2),
                 request_id=rid)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes ``{"error": {"code", "message"}}``; never a traceback."""
    try:
        return await handler(request)
    except StockqError as exc:  # a message may echo what the client sent (an id, SQL)
        return json_error(exc.http_status, exc.code,
                          redactor_for(request.app[SETTINGS])(exc.message))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else (
            f"request body larger than {request.app[SETTINGS].api_max_body} bytes")
        return json_error(exc.status, code, message)
    except Exception:
        log.exception("api.internal_error", method=request.method, path=request.path)
        return json_error(500, "internal_error", "internal error (see the sidecar's log)")


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    origins = request.app[SETTINGS].api_cors_origins
    origin = request.headers.get("Origin", "")
    allowed = bool(origins) and origin != "" and ("*" in origins or origin in origins)
    if allowed and request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
    else:
        response = await handler(request)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
    return response


async def _start(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[STARTED] = time.time()
    try:
        client = create_client(settings)
    except RedisUnavailable as exc:  # disabled: the app answers 503 on every change
        log.warning("api.redis_disabled", error=exc.message)
        return
    app[CLIENT] = client
    app[QUEUE] = TaskQueue(client, settings)


async def _stop(app: web.Application) -> None:
    if QUEUE in app:
        await app[QUEUE].aclose()
    if CLIENT in app:
        await app[CLIENT].aclose()


def create_app(settings: Settings, *, registry: PluginRegistry | None = None,
               warehouse: Warehouse | None = None) -> web.Application:
    """The sidecar application (routes, middlewares, Redis client on start-up).  The
    warehouse, when given, answers ``POST /api/v1/query``; its owner closes it."""
    from app.api import compat
    from app.api.routes import ROUTES

    check_token(settings.api_token)
    check_read_token(settings)
    app = web.Application(middlewares=[access_log, cors, errors, compat.detail_errors,
                                       guard(settings)],
                          client_max_size=settings.api_max_body)
    app[SETTINGS] = settings
    app[REGISTRY] = registry if registry is not None else PluginRegistry.from_settings(settings)
    app[EVENT_HUB] = EventHub(settings)
    app.on_shutdown.append(_close_events)  # streams end before in-flight requests are awaited
    if warehouse is not None:
        app[WAREHOUSE] = warehouse
        app[SANDBOX] = QuerySandbox(warehouse.url, settings)
        app.on_shutdown.append(_close_sandbox)  # before in-flight requests are awaited
    app[ROUTE_TABLE] = (*ROUTES, *compat.ROUTES)
    for route in app[ROUTE_TABLE]:
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_route("*", compat.PREFIX + "/{tail:.*}", compat.not_served)
    if settings.api_cors_origins:
        app.router.add_route("OPTIONS", "/{tail:.*}", _preflight)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


async def _close_events(app: web.Application) -> None:
    await app[EVENT_HUB].close()


async def _close_sandbox(app: web.Application) -> None:
    await app[SANDBOX].aclose()  # kills running queries: a shutdown never waits on one


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)


def jsonable(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
