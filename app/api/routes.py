"""The sidecar's routes: one table that registers the handlers and describes them for
``/openapi.json``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from app import queries
from app.api.app import (
    REGISTRY,
    ROUTE_TABLE,
    SANDBOX,
    SETTINGS,
    WAREHOUSE,
    jsonable,
    queue_of,
)
from app.api.dashboard import dashboard_file, dashboard_page
from app.api.events import event_stream
from app.api.models import (
    EXECUTION,
    EXECUTION_LIST,
    EXECUTION_SUBMIT,
    FIRE,
    QUERY,
    QUERY_RESULT,
    SCHEDULES,
    TASK,
    TASK_SUBMIT,
)
from app.api.schema import Model
from app.api.views import data_coverage, history_daily, session, stats
from app.errors import InvalidInput, ReadOnlyViolation, TaskNotFound
from app.executions import cancel_execution, create_execution, retry_execution
from app.logs import get_logger
from app.models import TaskSpec, TaskStatus, parse_date
from app.scheduler.service import schedule_service
from app.submission import build_spec, plan_execution
from plugins_bridge.warehouse import WarehouseUnavailable, parse_time

log = get_logger("stockq.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # path | query
    type: str = "string"
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    status: int = 200
    request: Model | None = None
    response: Model | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    tag: str = "tasks"
    content_type: str = "application/json"


async def read_json(request: web.Request, model: Model) -> dict[str, Any]:
    """The validated JSON body (400 for non-JSON, 413 past the size limit)."""
    raw = await request.read()
    if not raw:
        raise InvalidInput("the request body is empty; send a JSON object")
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise InvalidInput("the request body is nested too deeply") from None
    except ValueError:  # UnicodeDecodeError too
        raise InvalidInput("the request body is not valid JSON") from None
    _check_values(body)
    return model.validate(body)


MAX_DEPTH = 64  # nesting of objects and arrays in a body (params travel on to plugins)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _check_values(body: Any) -> None:
    """Reject what json.loads accepts but Redis and the JSON encoders later cannot take
    (an error there would be a 500): deep nesting and lone surrogate escapes."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidInput(f"the request body is nested more than {MAX_DEPTH} "
                                   "levels deep")
            stack += ((v, depth + 1) for v in (value.values() if isinstance(value, dict)
                                               else value))
        texts = value.keys() if isinstance(value, dict) else (
            (value,) if isinstance(value, str) else ())
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput("the request body holds a lone surrogate escape "
                                   "(\\ud800-\\udfff); strings must be valid Unicode") from None


def _spec_fields(body: dict[str, Any]) -> dict[str, Any]:
    keys = ("task_type", "trade_dates", "start_date", "end_date", "params", "priority",
            "timeout_seconds", "max_attempts", "memory_limit_mb", "queue", "user_id",
            "username")
    return {k: body[k] for k in keys if k in body}


# ------------------------------------------------------------------ tasks
async def submit_task(request: web.Request) -> web.Response:
    body = await read_json(request, TASK_SUBMIT)
    spec = build_spec(request.app[REGISTRY], request.app[SETTINGS], body["plugin_name"],
                      trigger="api", **_spec_fields(body))
    queue = queue_of(request)
    task_id, created = await queue.enqueue(spec)
    task = await queue.get(task_id)
    return jsonable({**task.to_dict(), "created": created}, status=202)


async def get_task(request: web.Request) -> web.Response:
    return jsonable((await queue_of(request).get(request.match_info["task_id"])).to_dict())


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "50")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:  # not "²", not 10**5000
        raise InvalidInput("limit must be a whole number between 1 and 500")
    return int(raw)


async def list_tasks(request: web.Request) -> web.Response:
    q = request.query
    execution_id, cursor = q.get("execution_id") or None, q.get("cursor") or None
    if execution_id and cursor and not (cursor.isascii() and cursor.isdigit()
                                        and len(cursor) <= 12):  # a position in the list
        raise InvalidInput(f"cursor {cursor!r} is malformed")
    page = await queries.list_tasks(
        queue_of(request), status=q.get("status") or None, plugin=q.get("plugin") or None,
        execution_id=execution_id, limit=_limit(request), cursor=cursor,
        since_ms=epoch_ms(q["since"], "since") if q.get("since") else None,
        until_ms=epoch_ms(q["until"], "until") if q.get("until") else None,
    )
    return jsonable({"items": [t.to_dict() for t in page.items],
                     "next_cursor": page.next_cursor})


async def cancel_task(request: web.Request) -> web.Response:
    queue = queue_of(request)
    task_id = request.match_info["task_id"]
    try:
        outcome = await queue.cancel(task_id, "cancelled through the API")
    except TaskNotFound:  # named here: a script's message ends at a NUL in the id
        raise TaskNotFound(task_id) from None
    return jsonable({"task_id": task_id, "outcome": outcome,
                     "task": (await queue.get(task_id)).to_dict()})


async def retry_task(request: web.Request) -> web.Response:
    queue = queue_of(request)
    task_id = request.match_info["task_id"]
    try:
        new_id = await queue.retry(task_id, trigger="retry")
    except TaskNotFound:
        raise TaskNotFound(task_id) from None
    return jsonable((await queue.get(new_id)).to_dict(), status=202)


# ------------------------------------------------------------------ executions
async def submit_execution(request: web.Request) -> web.Response:
    body = await read_json(request, EXECUTION_SUBMIT)
    registry = request.app[REGISTRY]
    if ("plugins" in body) == ("group" in body):
        raise InvalidInput("give exactly one of plugins (a list) or group (a name)")
    names = registry.group(body["group"]) if "group" in body else body["plugins"]
    if not names:
        raise InvalidInput("plugins must not be empty")
    ordered, tasks = plan_execution(registry, request.app[SETTINGS], names,
                                    include_optional=bool(body.get("include_optional")),
                                    trigger="api", **_spec_fields(body))
    execution_id, task_ids = await create_execution(
        queue_of(request), tasks, trigger_type="api", group_name=body.get("group", ""),
        date_range=_date_range(tasks[0].spec),
    )
    return jsonable({"execution_id": execution_id, "task_ids": task_ids, "plugins": ordered},
                    status=202)


async def list_executions(request: web.Request) -> web.Response:
    q = request.query
    triggers = [t for t in (q.get("trigger_type") or "").split(",") if t.strip()]
    page = await queries.list_executions(
        queue_of(request), status=q.get("status") or None,
        trigger_types=[t.strip() for t in triggers], group=q.get("group"),
        since_ms=epoch_ms(q["since"], "since") if q.get("since") else None,
        until_ms=epoch_ms(q["until"], "until") if q.get("until") else None,
        limit=_limit(request), cursor=q.get("cursor") or None)
    return jsonable({"items": [e.to_dict() for e in page.items],
                     "next_cursor": page.next_cursor})


def epoch_ms(text: str, what: str) -> int:
    """A date (YYYY-MM-DD or YYYYMMDD: its midnight, UTC) or an ISO 8601 time (UTC
    when it names no offset) as epoch milliseconds, as GET /history reads them."""
    text = text.strip()
    try:
        if len(text) in (8, 10) and text.replace("-", "").isdigit():
            day = parse_date(text, what)
            moment = datetime(int(day[:4]), int(day[4:6]), int(day[6:]), tzinfo=UTC)
        else:
            moment = parse_time(text).replace(tzinfo=UTC)
    except (ValueError, InvalidInput):
        raise InvalidInput(f"{what} {text!r} must be a date (YYYY-MM-DD) or an ISO 8601 "
                           "time") from None
    return int(moment.timestamp() * 1000)


def _date_range(spec: TaskSpec) -> str:
    """``start-end`` of the (normalised) dates the execution covers, or ''."""
    if spec.start_date or spec.end_date:
        return f"{spec.start_date}-{spec.end_date}"
    return f"{spec.trade_dates[0]}-{spec.trade_dates[-1]}" if spec.trade_dates else ""


async def get_execution(request: web.Request) -> web.Response:
    queue = queue_of(request)
    execution = await queries.get_execution(queue, request.match_info["execution_id"])
    ids = await queries.execution_task_ids(queue, execution)
    tasks = [t for t in await queries.get_many(queue, ids) if t is not None]
    errors = [
        {"task_id": t.task_id, "plugin_name": t.plugin_name, "status": t.status.value,
         "last_error_type": t.last_error_type, "error_message": t.error_message,
         "retried_by": t.retried_by}
        for t in tasks if t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
    ]
    return jsonable({**execution.to_dict(), "task_ids": ids,
                     "tasks": [t.to_dict() for t in tasks], "errors": errors})


async def retry_execution_route(request: web.Request) -> web.Response:
    execution_id = request.match_info["execution_id"]
    new_ids = await retry_execution(queue_of(request), execution_id)
    return jsonable({"execution_id": execution_id, "task_ids": new_ids}, status=202)


async def cancel_execution_route(request: web.Request) -> web.Response:
    execution_id = request.match_info["execution_id"]
    counts = await cancel_execution(queue_of(request), execution_id)
    return jsonable({"execution_id": execution_id, **counts})


async def list_plugins(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    return jsonable({"plugins": [registry.describe(n) for n in registry.names()],
                     "groups": registry.groups(), "unavailable": registry.unavailable})


# ------------------------------------------------------------------ schedules
async def list_schedules(request: web.Request) -> web.Response:
    service = schedule_service(queue_of(request), request.app[REGISTRY])
    return jsonable({"items": await service.describe(),
                     "calendar": await service.calendar.describe(),
                     "settings": service.overrides.to_dict()})


async def run_schedule(request: web.Request) -> web.Response:
    service = schedule_service(queue_of(request), request.app[REGISTRY])
    fire = await service.run_now(request.match_info["name"])
    return jsonable(fire.to_dict(), status=202)


# ------------------------------------------------------------------ warehouse
async def query(request: web.Request) -> web.Response:
    body = await read_json(request, QUERY)
    warehouse = request.app.get(WAREHOUSE)
    if warehouse is None:
        raise WarehouseUnavailable(
            "this sidecar has no ClickHouse: set STOCKQ_CLICKHOUSE_URL to a ClickHouse "
            "server, or ask the sidecar of `stockq run`, which holds the embedded one")
    try:
        result = await request.app[SANDBOX].run(body["sql"], max_rows=body.get("max_rows"))
    except ReadOnlyViolation as exc:  # worth a look: who sends these?
        log.warning("query.refused", reason=exc.message, length=len(body["sql"]))
        raise
    return jsonable(result)


async def history(request: web.Request) -> web.Response:
    from app.audit import history as read_history

    warehouse = request.app.get(WAREHOUSE)
    if warehouse is None:
        raise WarehouseUnavailable(
            "this sidecar has no ClickHouse: set STOCKQ_CLICKHOUSE_URL to a ClickHouse "
            "server, or ask the sidecar of `stockq run`, which holds the embedded one")
    q = request.query
    items = await read_history(
        warehouse, plugin=q.get("plugin", ""), status=q.get("status", ""),
        execution_id=q.get("execution_id", ""), since=q.get("since", ""),
        until=q.get("until", ""), limit=_limit(request), task_id=q.get("task_id", ""))
    return jsonable({"items": items})


async def openapi(request: web.Request) -> web.Response:
    from app.api.openapi import document

    return jsonable(document(request.app[ROUTE_TABLE]))


async def health(request: web.Request) -> web.Response:
    from app.api.health import health_report

    report, ok = await health_report(request.app)
    return jsonable(report, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    from app.api.health import metrics_text

    return web.Response(body=(await metrics_text(request.app)).encode("utf-8"),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


# ------------------------------------------------------------------ the table
TASK_ID = Param("task_id", "path", required=True)
EXECUTION_ID = Param("execution_id", "path", required=True)
V1 = "/api/v1"

ROUTES: tuple[Route, ...] = (
    Route("POST", f"{V1}/tasks", submit_task, "Queue a plugin run (202; a duplicate of "
          "active work returns that task with created=false)", 202, TASK_SUBMIT, TASK,
          errors=(400, 401, 403, 413, 415, 503)),
    Route("GET", f"{V1}/tasks", list_tasks, "List tasks, newest first, paged",
          response=None, params=(
              Param("status", "query", description="pending|running|retrying|completed|"
                    "failed|cancelled"),
              Param("plugin", "query"), Param("execution_id", "query"),
              Param("limit", "query", "integer", "1-500, default 50"),
              Param("cursor", "query", description="next_cursor of the previous page"),
              Param("since", "query", description="created (with status: entered it) at "
                    "or after: date (UTC midnight) or ISO 8601 time"),
              Param("until", "query", description="created (with status: entered it) "
                    "before: date or ISO 8601 time")),
          errors=(400, 401, 404, 503)),
    Route("GET", f"{V1}/tasks/{{task_id}}", get_task, "A task (live state from Redis)",
          response=TASK, params=(TASK_ID,), errors=(401, 404, 503)),
    Route("POST", f"{V1}/tasks/{{task_id}}/cancel", cancel_task,
          "Cancel a task: pending/retrying at once, running through its worker",
          params=(TASK_ID,), errors=(401, 403, 404, 409, 415, 503)),
    Route("POST", f"{V1}/tasks/{{task_id}}/retry", retry_task,
          "Retry a failed or cancelled task as a new task (retry_of link)", 202,
          response=TASK, params=(TASK_ID,), errors=(401, 403, 404, 409, 415, 503)),
    Route("POST", f"{V1}/executions", submit_execution,
          "Queue a dependency-ordered batch of plugin runs", 202, EXECUTION_SUBMIT,
          errors=(400, 401, 403, 413, 415, 503), tag="executions"),
    Route("GET", f"{V1}/executions", list_executions,
          "List executions, newest first (by creation), paged", response=EXECUTION_LIST,
          params=(
              Param("status", "query", description="pending|running|completed|failed|"
                    "cancelled"),
              Param("trigger_type", "query", description="one or more, comma-separated: "
                    "api|cli|manual|scheduled|catch_up|group|retry|..."),
              Param("group", "query", description="the group (or schedule job) name"),
              Param("since", "query", description="created at or after: date (UTC "
                    "midnight) or ISO 8601 time"),
              Param("until", "query", description="created before: date or ISO 8601 time"),
              Param("limit", "query", "integer", "1-500, default 50"),
              Param("cursor", "query", description="next_cursor of the previous page")),
          errors=(400, 401, 503), tag="executions"),
    Route("GET", f"{V1}/executions/{{execution_id}}", get_execution,
          "An execution with its tasks and an error summary", response=EXECUTION,
          params=(EXECUTION_ID,), errors=(401, 404, 503), tag="executions"),
    Route("POST", f"{V1}/executions/{{execution_id}}/retry", retry_execution_route,
          "Retry an execution's failed tasks", 202, params=(EXECUTION_ID,),
          errors=(401, 403, 404, 409, 415, 503), tag="executions"),
    Route("POST", f"{V1}/executions/{{execution_id}}/cancel", cancel_execution_route,
          "Cancel an execution's active tasks", params=(EXECUTION_ID,),
          errors=(401, 403, 404, 409, 415, 503), tag="executions"),
    Route("GET", f"{V1}/schedules", list_schedules,
          "Schedule jobs: trigger, next run (+08:00) and last fire", response=SCHEDULES,
          errors=(401, 503), tag="schedules"),
    Route("POST", f"{V1}/schedules/{{name}}/run", run_schedule,
          "Run a schedule job now, for the latest trading day (trigger manual)", 202,
          response=FIRE, params=(Param("name", "path", required=True),),
          errors=(401, 403, 404, 409, 415, 503), tag="schedules"),
    Route("POST", f"{V1}/query", query,
          "A read-only ClickHouse query over the warehouse's tables (checked on "
          "ClickHouse's own parse; readonly=1 session, row, byte and time limits)",
          request=QUERY, response=QUERY_RESULT, errors=(400, 401, 403, 413, 415, 502, 503, 504),
          tag="warehouse"),
    Route("GET", f"{V1}/history", history,
          "Attempt ends from the ClickHouse audit, newest first", response=None,
          params=(Param("plugin", "query"), Param("status", "query",
                                                  description="completed|failed|retrying|"
                                                              "cancelled"),
                  Param("execution_id", "query"), Param("task_id", "query"),
                  Param("since", "query", description="date or ISO 8601 time"),
                  Param("until", "query", description="date or ISO 8601 time (exclusive)"),
                  Param("limit", "query", "integer", "1-500, default 50")),
          errors=(400, 401, 502, 503), tag="warehouse"),
    Route("GET", f"{V1}/plugins", list_plugins,
          "Registered plugins and groups, and plugins found but not loaded (with why)",
          errors=(401,), tag="plugins"),
    Route("GET", f"{V1}/history/daily", history_daily,
          "Completed and failed attempts per plugin and day (the scheduler's time zone), "
          "from the ClickHouse audit", params=(
              Param("days", "query", "integer", "1-90, default 14 (today included)"),
              Param("plugin", "query")),
          errors=(400, 401, 502, 503), tag="warehouse"),
    Route("GET", f"{V1}/data/coverage", data_coverage,
          "Per warehouse table: the latest day loaded and the trading days of the last "
          "days without data", params=(
              Param("days", "query", "integer", "1-366, default 30 (today included)"),),
          errors=(400, 401, 502, 503), tag="warehouse"),
    Route("GET", f"{V1}/stats", stats,
          "Queue depths, tasks ended in the last hour and day, completed and failed per "
          "minute over the last hour", errors=(401, 503), tag="operations"),
    Route("GET", f"{V1}/session", session,
          "What the caller's token may do (full or read), whether this sidecar reads "
          "ClickHouse, the time zone and namespace",
          errors=(401,), tag="operations"),
    Route("GET", f"{V1}/events", event_stream,
          "Live task events as Server-Sent Events (task, progress, execution, resync, "
          "redis); send Last-Event-ID to resume", params=(
              Param("Last-Event-ID", "header", description="the id of the last event "
                    "received, to resume after it"),),
          errors=(401, 503), tag="events", content_type="text/event-stream"),
    Route("GET", "/health", health, "Health: 200 when Redis answers, 503 with reasons",
          errors=(503,), tag="operations"),
    Route("GET", "/metrics", metrics, "Prometheus metrics, derived from Redis",
          tag="operations", content_type="text/plain"),
    Route("GET", "/openapi.json", openapi, "This document", tag="operations"),
    Route("GET", "/", dashboard_page, "The dashboard (docs/dashboard.md)", tag="dashboard",
          content_type="text/html"),
    Route("GET", "/dashboard/{name}", dashboard_file,
          "The dashboard's scripts, styles and icon (package data, no build step)",
          params=(Param("name", "path", required=True),), errors=(404,), tag="dashboard",
          content_type="text/javascript"),
)
