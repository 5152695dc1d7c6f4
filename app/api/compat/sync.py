"""``/api/datamanage/sync/...``: stock_datasource's sync-task routes over stockq's queue
(live state in Redis) and its audit (history in ClickHouse)."""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from app.api.app import REGISTRY, SETTINGS, WAREHOUSE, jsonable, queue_of
from app.api.compat.requests import (
    BATCH_SYNC,
    SYNC_CONFIG,
    TRIGGER_SYNC,
    CompatError,
    body_of,
    query_int,
    query_text,
)
from app.api.compat.shapes import TASK_STATUSES, Clock, history_row, sync_task
from app.audit import history
from app.errors import IllegalTransition, InvalidInput, TaskNotFound, UnknownPlugin
from app.executions import BatchTask, create_execution
from app.models import TaskStatus
from app.plugin_data import TableReader, meta_of
from app.queue import TaskQueue
from app.redis_client import redis_errors
from app.scheduler import overrides
from app.submission import build_spec, plan_execution
from app.task_pages import SORTS, task_page

LIVE_WINDOW_MS = 15_000  # a worker is live with a heartbeat this recent (as /health)


def clock_of(request: web.Request) -> Clock:
    return Clock(request.app[SETTINGS].timezone)


def spec_fields(body: dict[str, Any], data_source: str = "") -> dict[str, Any]:
    """A sync request's task fields as stockq's specs take them (an incremental sync is
    high priority, as the original queued it)."""
    fields: dict[str, Any] = {"task_type": body.get("task_type") or "incremental"}
    fields["priority"] = "high" if fields["task_type"] == "incremental" else "normal"
    if body.get("trade_dates"):
        fields["trade_dates"] = body["trade_dates"]
    if (body.get("ts_code") or "").strip():
        fields["ts_code"] = body["ts_code"]
    if data_source:
        fields["data_source"] = data_source
    return fields


def stored_range(dates: list[str] | None) -> str:
    """The execution's ``date_range`` as stockq stores it (``YYYYMMDD-YYYYMMDD``)."""
    if not dates:
        return ""
    clean = sorted(d.replace("-", "") for d in dates)
    return f"{clean[0]}-{clean[-1]}"


async def trigger(request: web.Request) -> web.Response:
    body = await body_of(request, TRIGGER_SYNC)
    registry, queue = request.app[REGISTRY], queue_of(request)
    name = body["plugin_name"]
    if name not in registry:
        raise CompatError(404, f"Plugin {name} not found")
    asked = body.get("data_source") or ""
    if asked:
        available = list(meta_of(registry, name).config.get("available_data_sources") or [])
        if asked not in available:
            raise CompatError(400, {"message": f"Unsupported data_source '{asked}' for "
                                               f"{name}", "available_data_sources": available})
        if asked == "qmt" and not (body.get("ts_code") or "").strip():
            raise CompatError(400, {"message": "data_source='qmt' requires a ts_code "
                                               "parameter; QMT does not support date-only "
                                               "batch sync.", "plugin_name": name})
    check = await TableReader(request.app.get(WAREHOUSE)).check_dependencies(registry, name)
    if not check.satisfied:
        message = "Plugin dependencies not satisfied."
        if check.missing_plugins:
            message += f" Missing plugins: {', '.join(check.missing_plugins)}."
        if check.missing_data:
            message += " Missing data: " + ", ".join(
                f"{k} ({v})" for k, v in check.missing_data.items()) + "."
        raise CompatError(400, {"message": message + " Please run the dependent plugins "
                                "first.", "missing_plugins": check.missing_plugins,
                                "missing_data": check.missing_data})
    data_source = asked or (await overrides.load(queue)).plugin(name).data_source
    spec = build_spec(registry, request.app[SETTINGS], name, trigger="manual",
                      **spec_fields(body, data_source))
    _, (task_id,) = await create_execution(queue, [BatchTask(spec)], trigger_type="manual",
                                           group_name=name,
                                           date_range=stored_range(body.get("trade_dates")))
    return jsonable(sync_task(await queue.get(task_id), clock_of(request)))


async def tasks(request: web.Request) -> web.Response:
    page = query_int(request, "page", 1, low=1)
    size = query_int(request, "page_size", 20, low=1, high=100)
    status = query_text(request, "status")
    sort_by = query_text(request, "sort_by") or "created_at"
    found = await task_page(
        queue_of(request), page=page, page_size=size,
        status=status if status in TASK_STATUSES else None,  # the original ignored others
        plugin_contains=query_text(request, "plugin_name"),
        sort_by=sort_by if sort_by in SORTS else "created_at",
        descending=(query_text(request, "sort_order") or "desc").lower() == "desc")
    clock = clock_of(request)
    return jsonable({"items": [sync_task(t, clock) for t in found.items], "total": found.total,
                     "page": page, "page_size": size,
                     "total_pages": math.ceil(found.total / size) if found.total else 1})


async def status(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    try:
        task = await queue_of(request).get(task_id)
    except TaskNotFound:
        raise CompatError(404, f"Task {task_id} not found") from None
    return jsonable(sync_task(task, clock_of(request)))


async def cancel(request: web.Request) -> web.Response:
    try:
        outcome = await queue_of(request).cancel(request.match_info["task_id"],
                                                 "cancelled through the API")
    except (TaskNotFound, IllegalTransition):
        raise CompatError(400, "Cannot cancel task (not pending or not found)") from None
    return jsonable({"success": True, "message": "Task cancelled" if outcome == "cancelled"
                     else "Cancel requested: the worker stops the running task"})


async def delete(request: web.Request) -> web.Response:
    """Any task but a running one, as the original: a pending or retrying task is
    cancelled first."""
    queue, task_id = queue_of(request), request.match_info["task_id"]
    refused = CompatError(400, "Cannot delete task (running or not found)")
    try:
        task = await queue.get(task_id)
        if task.status == TaskStatus.RUNNING:
            raise refused
        if not task.status.terminal:
            await queue.cancel(task_id, "deleted through the API")
        await queue.delete(task_id)
    except (TaskNotFound, IllegalTransition):
        raise refused from None
    return jsonable({"success": True, "message": "Task deleted"})


async def retry(request: web.Request) -> web.Response:
    queue = queue_of(request)
    try:
        new_id = await queue.retry(request.match_info["task_id"], trigger="retry")
    except (TaskNotFound, IllegalTransition):
        raise CompatError(400, "Cannot retry task (not found or not in failed/cancelled "
                               "status)") from None
    return jsonable(sync_task(await queue.get(new_id), clock_of(request)))


async def _config(queue: TaskQueue) -> dict[str, Any]:
    """stockq's parallelism as the original's ``SyncConfig``: tasks run at once is what
    the live workers' slots add up to; a task runs its dates one after the other."""
    keys = queue.keys
    now_ms = int(time.time() * 1000)
    with redis_errors(queue.settings):
        live = await queue.client.zrangebyscore(keys.workers, now_ms - LIVE_WINDOW_MS, "+inf")
        running = sorted(await queue.client.smembers(keys.running))  # type: ignore[misc]
        async with queue.client.pipeline(transaction=False) as pipe:
            for worker in live:
                pipe.hget(keys.worker(worker), "concurrency")
            for task_id in running:
                pipe.hget(keys.task(task_id), "plugin_name")
            pipe.zcard(keys.status_index(TaskStatus.PENDING.value))
            answers = await pipe.execute()
    slots = sum(int(a) for a in answers[:len(live)] if str(a or "").isdigit())
    plugins = [str(p) for p in answers[len(live):-1] if p]
    return {"max_concurrent_tasks": slots, "max_date_threads": 1,
            "running_tasks_count": len(running), "pending_tasks_count": int(answers[-1]),
            "running_plugins": plugins}


async def get_config(request: web.Request) -> web.Response:
    return jsonable(await _config(queue_of(request)))


async def put_config(request: web.Request) -> web.Response:
    """Parallelism is the workers' (``stockq worker --concurrency N``) and a task's dates
    run one at a time: a change is refused (409) with how to make it; asking for what
    is in effect is answered as the original did."""
    body = await body_of(request, SYNC_CONFIG)
    config = await _config(queue_of(request))
    slots, threads = body.get("max_concurrent_tasks"), body.get("max_date_threads")
    if slots is not None and slots != config["max_concurrent_tasks"]:
        raise CompatError(409, f"stockq runs {config['max_concurrent_tasks']} tasks at once: "
                               "the slots of the live workers; start workers with `stockq "
                               f"worker --concurrency N` (or `stockq run --workers N`) to run "
                               f"{slots}")
    if threads is not None and threads != 1:
        raise CompatError(409, "stockq runs a task's dates one after the other (each with "
                               "a checkpoint); max_date_threads is always 1")
    return jsonable(config)


async def sync_history(request: web.Request) -> web.Response:
    """Attempt ends from the ClickHouse audit, newest first (the original read its
    ClickHouse table of task records)."""
    days = query_int(request, "days", 7, low=1, high=30)
    limit = query_int(request, "limit", 50, low=1, high=200)
    warehouse = request.app.get(WAREHOUSE)
    if warehouse is None:
        raise CompatError(503, "this sidecar has no ClickHouse (the history is the audit in "
                               "ClickHouse): set STOCKQ_CLICKHOUSE_URL, or ask the sidecar "
                               "of `stockq run`")
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - days * 86400))
    rows = await history(warehouse, plugin=query_text(request, "plugin_name") or "",
                         since=since, limit=limit)
    clock = clock_of(request)
    return jsonable([history_row(row, clock) for row in rows])


async def batch(request: web.Request) -> web.Response:
    body = await body_of(request, BATCH_SYNC)
    registry, queue = request.app[REGISTRY], queue_of(request)
    invalid = [n for n in body["plugin_names"] if n not in registry]
    if invalid:
        raise CompatError(400, f"Invalid plugins: {', '.join(invalid)}")
    try:
        ordered, planned = plan_execution(registry, request.app[SETTINGS], body["plugin_names"],
                                          include_optional=bool(body["include_optional"]),
                                          trigger="manual", **spec_fields(body))
    except (UnknownPlugin, InvalidInput) as exc:
        raise CompatError(400, exc.message) from None
    _, ids = await create_execution(queue, planned, trigger_type="manual",
                                    date_range=stored_range(body.get("trade_dates")))
    reader = TableReader(request.app.get(WAREHOUSE))
    out = []
    for order, (name, task_id) in enumerate(zip(ordered, ids, strict=True), start=1):
        check = await reader.check_dependencies(registry, name)
        out.append({"task_id": task_id, "plugin_name": name, "task_type": body["task_type"],
                    "status": "pending", "order": order,
                    "dependencies_satisfied": check.satisfied})
    return jsonable({"tasks": out, "total_plugins": len(out), "execution_order": ordered})
