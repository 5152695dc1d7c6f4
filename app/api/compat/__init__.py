"""stock_datasource's data-management routes (``/api/datamanage``), served by stockq so
that its frontend works unchanged.

A room of its own: these modules translate the original's requests and responses and
call the services ``/api/v1`` calls (the queue, executions, schedule, groups, audit);
they hold no queue logic.  :data:`ROUTES` is their table (registered by
:func:`app.api.app.create_app` and described in ``/openapi.json`` with the native
routes); everything else under the prefix is :func:`not_served` (``501``: it belongs to
another part of stock_datasource).  Errors are FastAPI's shape, which the frontend
reads: ``{"detail": ...}`` (:func:`detail_errors`), validation errors ``422`` with
FastAPI's list.  Authentication: stockq's bearer token, as on ``/api/v1``
(:mod:`app.api.security`).  docs/migration.md maps every route.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from app.api.app import SETTINGS, Handler
from app.api.compat import groups, plugins, schedule, sync
from app.api.compat.requests import (
    BATCH_SYNC,
    CHECK_DATES,
    GROUP_CHECK_DATES,
    GROUP_CREATE,
    GROUP_TRIGGER,
    GROUP_UPDATE,
    PARTIAL_RETRY,
    PLUGIN_DATA_SOURCE,
    PLUGIN_SCHEDULE,
    SCHEDULE_CONFIG,
    SCHEDULER_CONFIG,
    SYNC_CONFIG,
    TRIGGER_SYNC,
    CompatError,
)
from app.api.routes import Param, Route
from app.errors import StockqError
from app.logs import get_logger
from app.redaction import redactor_for

log = get_logger("stockq.api")

PREFIX = "/api/datamanage"
_UNDER = PREFIX + "/"
TAG = "datamanage"
P = PREFIX
TASK_ID = Param("task_id", "path", required=True)
EXECUTION_ID = Param("execution_id", "path", required=True)
NAME = Param("name", "path", required=True)
GROUP_ID = Param("group_id", "path", required=True)
DAYS = Param("days", "query", "integer", "1-30, default 7")


def _q(name: str, kind: str = "string", text: str = "") -> Param:
    return Param(name, "query", kind, text)


def _r(method: str, path: str, handler: Handler, summary: str, *, body: Any = None,
       params: tuple[Param, ...] = (), errors: tuple[int, ...] = (401, 422, 503)) -> Route:
    return Route(method, f"{P}{path}", handler, summary,
                 request=body.model if body is not None else None, params=params,
                 errors=errors, tag=TAG)


ROUTES: tuple[Route, ...] = (
    # sync tasks
    _r("POST", "/sync/trigger", sync.trigger, "Sync one plugin (SyncTask; 400 when a "
       "dependency has no data)", body=TRIGGER_SYNC, errors=(400, 401, 404, 422, 503)),
    _r("GET", "/sync/tasks", sync.tasks, "Tasks, paged with totals (SyncTaskListResponse)",
       params=(_q("page", "integer"), _q("page_size", "integer", "1-100"), _q("status"),
               _q("plugin_name", text="part of the name, any case"),
               _q("sort_by", text="created_at|started_at|completed_at"),
               _q("sort_order", text="asc|desc"))),
    _r("GET", "/sync/status/{task_id}", sync.status, "A task, live (SyncTask)",
       params=(TASK_ID,), errors=(401, 404, 503)),
    _r("POST", "/sync/cancel/{task_id}", sync.cancel, "Cancel a task", params=(TASK_ID,),
       errors=(400, 401, 503)),
    _r("POST", "/sync/retry/{task_id}", sync.retry, "Retry a failed or cancelled task "
       "as a new one (SyncTask)", params=(TASK_ID,), errors=(400, 401, 503)),
    _r("DELETE", "/sync/tasks/{task_id}", sync.delete, "Delete a task that is not running",
       params=(TASK_ID,), errors=(400, 401, 503)),
    _r("GET", "/sync/config", sync.get_config, "Parallelism (SyncConfig)",
       errors=(401, 503)),
    _r("PUT", "/sync/config", sync.put_config, "Parallelism: the workers' (409 for a "
       "change)", body=SYNC_CONFIG, errors=(401, 409, 422, 503)),
    _r("GET", "/sync/history", sync.sync_history, "Attempt ends from the ClickHouse audit "
       "(SyncHistory list)", params=(DAYS, _q("limit", "integer", "1-200, default 50"),
                                     _q("plugin_name"))),
    _r("POST", "/sync/batch", sync.batch, "Sync several plugins in dependency order "
       "(BatchSyncResponse)", body=BATCH_SYNC, errors=(400, 401, 422, 503)),
    # plugins
    _r("GET", "/plugins", plugins.list_plugins, "Plugins (PluginInfo list)",
       params=(_q("category"), _q("role")), errors=(400, 401, 503)),
    _r("GET", "/plugins/dependency-graph", plugins.dependency_graph,
       "Dependencies and dependents of every plugin", errors=(401,)),
    _r("GET", "/plugins/{name}/detail", plugins.detail, "A plugin's config, table and "
       "status (PluginDetail)", params=(NAME,), errors=(401, 404, 503)),
    _r("PUT", "/plugins/{name}/data-source", plugins.set_data_source, "A plugin's default "
       "data source (PluginDetail)", body=PLUGIN_DATA_SOURCE, params=(NAME,),
       errors=(400, 401, 422, 503)),
    _r("GET", "/plugins/{name}/status", plugins.status, "A plugin's data (PluginStatus)",
       params=(NAME,), errors=(401, 404, 503)),
    _r("GET", "/plugins/{name}/data", plugins.data, "Rows of a plugin's table "
       "(PluginDataPreview)", params=(NAME, _q("trade_date"), _q("page", "integer"),
                                      _q("page_size", "integer", "1-1000")),
       errors=(401, 404, 422, 503)),
    _r("POST", "/plugins/{name}/check-exists", plugins.check_exists, "Which dates a "
       "plugin's table holds (DataExistsCheckResult)", body=CHECK_DATES, params=(NAME,)),
    _r("POST", "/plugins/{name}/enable", plugins.enable, "Enable a plugin (scheduled "
       "again)", params=(NAME,), errors=(401, 404, 503)),
    _r("POST", "/plugins/{name}/disable", plugins.enable, "Disable a plugin (not "
       "scheduled)", params=(NAME,), errors=(401, 404, 503)),
    _r("GET", "/plugins/{name}/dependencies", plugins.dependencies, "A plugin's "
       "dependencies and whether they have data (DependencyCheckResponse)",
       params=(NAME,), errors=(401, 404, 503)),
    _r("GET", "/plugins/{name}/check-dependencies", plugins.dependencies, "The same",
       params=(NAME,), errors=(401, 404, 503)),
    # schedule and executions
    _r("GET", "/schedule/config", schedule.get_config, "The daily sync's schedule "
       "(ScheduleConfig)", errors=(401, 503)),
    _r("PUT", "/schedule/config", schedule.put_config, "Edit the schedule (kept in Redis, "
       "picked up by running schedulers)", body=SCHEDULE_CONFIG,
       errors=(400, 401, 422, 503)),
    _r("GET", "/schedule/plugins", schedule.plugin_configs, "Scheduled plugins "
       "(PluginScheduleConfig list)", params=(_q("category"),), errors=(401, 503)),
    _r("PUT", "/schedule/plugins/{name}", schedule.put_plugin_config, "A plugin in or "
       "out of the schedule, full scan or not", body=PLUGIN_SCHEDULE, params=(NAME,),
       errors=(401, 404, 422, 503)),
    _r("POST", "/schedule/trigger", schedule.trigger, "Run the daily sync now "
       "(ScheduleExecutionRecord)", errors=(401, 503)),
    _r("GET", "/schedule/history", schedule.history, "Executions, newest first "
       "(ScheduleHistoryResponse)", params=(DAYS, _q("limit", "integer", "1-200"),
                                           _q("status"), _q("trigger_type"))),
    _r("GET", "/schedule/execution/{execution_id}", schedule.detail, "An execution with "
       "its tasks (BatchExecutionDetail)", params=(EXECUTION_ID,), errors=(401, 404, 503)),
    _r("POST", "/schedule/retry/{execution_id}", schedule.retry, "Retry a failed "
       "execution in place", params=(EXECUTION_ID,), errors=(400, 401, 503)),
    _r("POST", "/schedule/partial-retry/{execution_id}", schedule.partial_retry,
       "Retry an execution's failed tasks (task_ids: only those)", body=PARTIAL_RETRY,
       params=(EXECUTION_ID,), errors=(400, 401, 422, 503)),
    _r("POST", "/schedule/stop/{execution_id}", schedule.stop, "Cancel an execution's "
       "active tasks", params=(EXECUTION_ID,), errors=(400, 401, 503)),
    _r("DELETE", "/schedule/execution/{execution_id}", schedule.delete, "Delete an ended "
       "execution", params=(EXECUTION_ID,), errors=(400, 401, 503)),
    _r("GET", "/scheduler/status", schedule.scheduler_status, "Deprecated there: the "
       "scheduler's status (SchedulerStatus)", errors=(401, 503)),
    _r("PUT", "/scheduler/config", schedule.scheduler_config, "Deprecated there: answers "
       "the status, changes nothing", body=SCHEDULER_CONFIG, errors=(401, 422, 503)),
    _r("POST", "/scheduler/start", schedule.scheduler_deprecated, "Deprecated there",
       errors=(401,)),
    _r("POST", "/scheduler/stop", schedule.scheduler_deprecated, "Deprecated there",
       errors=(401,)),
    _r("POST", "/scheduler/run", schedule.scheduler_run, "Deprecated there: run the "
       "daily sync now (task_type=data_sync)", params=(_q("task_type"),),
       errors=(400, 401, 422, 503)),
    # groups
    _r("GET", "/groups", groups.list_groups, "Plugin groups (PluginGroupListResponse)",
       params=(_q("category"),), errors=(401, 503)),
    _r("GET", "/groups/predefined", groups.predefined, "The plugins' declared groups "
       "(PredefinedGroupsResponse)", errors=(401,)),
    _r("POST", "/groups", groups.create, "Make a group (kept in Redis)", body=GROUP_CREATE,
       errors=(400, 401, 422, 503)),
    _r("GET", "/groups/{group_id}", groups.detail, "A group with its plugins' state and "
       "order (PluginGroupDetail)", params=(GROUP_ID,), errors=(401, 404, 503)),
    _r("PUT", "/groups/{group_id}", groups.update, "Change a group", body=GROUP_UPDATE,
       params=(GROUP_ID,), errors=(400, 401, 403, 404, 422, 503)),
    _r("DELETE", "/groups/{group_id}", groups.delete, "Delete a group", params=(GROUP_ID,),
       errors=(401, 403, 404, 503)),
    _r("POST", "/groups/{group_id}/check-exists", groups.check_exists, "Which dates the "
       "group's tables hold", body=GROUP_CHECK_DATES, params=(GROUP_ID,),
       errors=(401, 404, 422, 503)),
    _r("POST", "/groups/{group_id}/trigger", groups.trigger, "Sync a group (one "
       "execution, trigger group)", body=GROUP_TRIGGER, params=(GROUP_ID,),
       errors=(400, 401, 404, 422, 503)),
)

#: first path segment -> what of stock_datasource it is (for the 501 answer)
ELSEWHERE = {
    "datasources": "its data-source list", "missing-data": "missing-data scans",
    "quality": "data quality", "metadata": "table metadata", "diagnosis": "log diagnosis",
    "proxy": "proxy settings", "explorer": "the data explorer",
    "knowledge": "the knowledge base", "realtime": "realtime data",
}
_PATTERNS = [(r.method, re.compile(re.sub(r"\{[^}]+\}", "[^/]+", r.path) + "$"))
             for r in ROUTES]


async def not_served(request: web.Request) -> web.Response:
    """Everything under the prefix that is not a route of this room: 405 for another
    method of a route, else 501 naming stockq (never an HTML 404)."""
    allowed = sorted({m for m, p in _PATTERNS if p.match(request.path)})
    if allowed:
        raise CompatError(405, "Method Not Allowed")
    part = request.path[len(PREFIX):].strip("/").split("/")[0]
    what = ELSEWHERE.get(part, "a part of stock_datasource")
    raise CompatError(501, f"not served by stockq: {request.method} {request.path} is "
                           f"{what}, which stockq (the task queue behind these routes) does "
                           "not provide; keep serving it from stock_datasource")


def _detail(status: int, detail: Any, **headers: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers or None,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))


@web.middleware
async def detail_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under the prefix, every error is FastAPI's ``{"detail": ...}``: the room's own
    answers, stockq's errors (e.g. 503 ``redis_unavailable``), and the guard's refusals
    (401, 403, 415) reshaped."""
    if not request.path.startswith(_UNDER):
        return await handler(request)
    try:
        response = await handler(request)
    except CompatError as exc:
        return _detail(exc.http_status, exc.detail)
    except StockqError as exc:  # a message may echo what the client sent
        return _detail(exc.http_status, redactor_for(request.app[SETTINGS])(exc.message))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _detail(exc.status, exc.reason)
    except Exception:
        log.exception("api.internal_error", method=request.method, path=request.path)
        return _detail(500, "internal error (see the sidecar's log)")
    if response.status >= 400 and isinstance(response, web.Response) \
            and response.content_type == "application/json" and response.body is not None:
        try:
            body = json.loads(bytes(response.body))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            return response
        if isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict):
            kept = {k: v for k, v in response.headers.items() if k == "WWW-Authenticate"}
            return _detail(response.status, body["error"].get("message", ""), **kept)
    return response


__all__ = ["PREFIX", "ROUTES", "detail_errors", "not_served"]
