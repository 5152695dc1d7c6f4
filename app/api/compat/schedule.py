"""``/api/datamanage/schedule/...`` and ``/scheduler/...``: stock_datasource's schedule
and execution routes over stockq's scheduler (its jobs and the schedule edits kept in
Redis) and its executions (live in Redis)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from app import queries
from app.api.app import REGISTRY, jsonable, queue_of
from app.api.compat.requests import (
    PARTIAL_RETRY,
    PLUGIN_SCHEDULE,
    SCHEDULE_CONFIG,
    SCHEDULER_CONFIG,
    CompatError,
    body_of,
    query_int,
    query_text,
)
from app.api.compat.shapes import (
    CATEGORY_LABELS,
    EXECUTION_STATUSES,
    TRIGGERS,
    batch_task,
    current,
    error_summary,
    execution_record,
    range_of,
    skipped_record,
)
from app.api.compat.sync import clock_of
from app.errors import ExecutionNotFound, IllegalTransition, NothingToRun, StockqError
from app.executions import cancel_execution, delete_execution, retry_execution
from app.models import Execution, Task, TaskStatus
from app.plugin_data import meta_of
from app.queue import TaskQueue
from app.redis_client import redis_errors
from app.scheduler import overrides
from app.scheduler.jobs import DAILY_SYNC
from app.scheduler.service import schedule_service
from plugins_bridge.registry import PluginRegistry

ROLE_ORDER = {"basic": 0, "primary": 1, "derived": 2, "auxiliary": 3}
WEEKDAYS = frozenset({"1-5", "mon-fri", "mon,tue,wed,thu,fri", "1,2,3,4,5"})


# ------------------------------------------------------------------ executions
async def _record(queue: TaskQueue, request: web.Request, execution: Execution, *,
                  status: str | None = None) -> dict[str, Any]:
    ids = await queries.execution_task_ids(queue, execution)
    return execution_record(execution, ids, clock_of(request), status=status)


async def _execution(queue: TaskQueue, execution_id: str, status: int = 400) -> Execution:
    try:
        return await queries.get_execution(queue, execution_id)
    except ExecutionNotFound:
        raise CompatError(status, f"Execution {execution_id} not found") from None


async def history(request: web.Request) -> web.Response:
    """Executions of the last ``days``, newest first, live from Redis (the original kept
    its execution records in a file; stockq's executions are in Redis, as long as
    retention keeps them)."""
    days = query_int(request, "days", 7, low=1, high=30)
    limit = query_int(request, "limit", 50, low=1, high=200)
    status, trigger = query_text(request, "status"), query_text(request, "trigger_type")
    statuses = EXECUTION_STATUSES.get(status, ()) if status else ()
    if status and not statuses:  # skipped, interrupted, stopping or unknown: none here
        return jsonable({"items": [], "total": 0})
    queue = queue_of(request)
    page = await queries.list_executions(
        queue, status=statuses or None, trigger_types=TRIGGERS.get(trigger, (trigger,))
        if trigger else (), since_ms=int((time.time() - days * 86400) * 1000), limit=limit)
    with redis_errors(queue.settings):
        async with queue.client.pipeline(transaction=False) as pipe:
            for execution in page.items:
                pipe.lrange(queue.keys.execution_tasks(execution.execution_id), 0, -1)
            lists = await pipe.execute()
    clock = clock_of(request)
    items = [execution_record(e, [str(i) for i in (ids or e.legacy_task_ids)], clock)
             for e, ids in zip(page.items, lists, strict=True)]
    return jsonable({"items": items, "total": len(items)})


async def detail(request: web.Request) -> web.Response:
    queue = queue_of(request)
    execution = await _execution(queue, request.match_info["execution_id"], 404)
    ids = await queries.execution_task_ids(queue, execution)
    tasks: list[Task] = current(t for t in await queries.get_many(queue, ids) if t)
    clock = clock_of(request)
    record = execution_record(execution, [t.task_id for t in tasks], clock)
    record.pop("skip_reason")
    record.pop("can_retry")
    record.pop("task_ids")
    if record["date_range"] is None:
        record["date_range"] = range_of([d for t in tasks for d in t.trade_dates])
    return jsonable({**record, "tasks": [batch_task(t, clock) for t in tasks],
                     "error_summary": error_summary(tasks)})


async def retry(request: web.Request) -> web.Response:
    """Retry a failed or interrupted execution in place: its failed tasks (and what
    waited on them); for one that was stopped, its cancelled tasks."""
    queue, execution_id = queue_of(request), request.match_info["execution_id"]
    execution = await _execution(queue, execution_id)
    shown = execution_record(execution, [], clock_of(request))["status"]
    refused = CompatError(400, f"Execution {execution_id} cannot be retried (status: "
                               f"{shown})")
    if shown not in ("failed", "interrupted"):
        raise refused
    try:
        await retry_execution(queue, execution_id)
    except IllegalTransition:  # no failed task: the ones the stop cancelled
        ids = await queries.execution_task_ids(queue, execution)
        cancelled = [t.task_id for t in current(t for t in await queries.get_many(queue, ids)
                                               if t) if t.status == TaskStatus.CANCELLED]
        if not cancelled:
            raise refused from None
        await queue.retry_many(cancelled)
    return jsonable(await _record(queue, request, await _execution(queue, execution_id)))


async def partial_retry(request: web.Request) -> web.Response:
    """Retry the failed tasks of an execution (only those in ``task_ids`` when given)."""
    body = await body_of(request, PARTIAL_RETRY, optional=True)
    queue, execution_id = queue_of(request), request.match_info["execution_id"]
    execution = await _execution(queue, execution_id)
    no_failed = CompatError(400, f"No failed tasks to retry in execution {execution_id}")
    if body.get("task_ids") is None:
        try:
            await retry_execution(queue, execution_id)
        except IllegalTransition:
            raise no_failed from None
    else:
        ids = await queries.execution_task_ids(queue, execution)
        wanted = set(body["task_ids"])
        failed = [t.task_id for t in await queries.get_many(queue, ids)
                  if t and t.status == TaskStatus.FAILED and not t.retried_by
                  and t.task_id in wanted]
        if not failed:
            raise no_failed
        await queue.retry_many(failed)
    return jsonable(await _record(queue, request, await _execution(queue, execution_id)))


async def stop(request: web.Request) -> web.Response:
    """Cancel the execution's active tasks (running ones through their workers)."""
    queue, execution_id = queue_of(request), request.match_info["execution_id"]
    await _execution(queue, execution_id)
    try:
        await cancel_execution(queue, execution_id)
    except IllegalTransition:
        raise CompatError(400, f"Execution {execution_id} is not running") from None
    return jsonable(await _record(queue, request, await _execution(queue, execution_id)))


async def delete(request: web.Request) -> web.Response:
    try:
        await delete_execution(queue_of(request), request.match_info["execution_id"])
    except (ExecutionNotFound, IllegalTransition):
        raise CompatError(400, "Cannot delete execution (not found or still running)") \
            from None
    return jsonable({"success": True, "message": "Execution deleted"})


# ------------------------------------------------------------------ schedule
def _time_and_frequency(expression: str) -> tuple[str, str]:
    """``execute_time`` and ``frequency`` of a daily_sync crontab (its 5 fields)."""
    fields = expression.split()
    if len(fields) == 6:
        fields = fields[1:]
    minute, hour, dow = fields[0], fields[1], fields[4]
    shown = f"{int(hour):02d}:{int(minute):02d}" if hour.isdigit() and minute.isdigit() \
        else expression
    return shown, "weekday" if dow.lower() in WEEKDAYS else "daily"


async def _schedule_config(request: web.Request) -> dict[str, Any]:
    service = schedule_service(queue_of(request), request.app[REGISTRY])
    jobs = {job["name"]: job for job in await service.describe()}
    daily = jobs[DAILY_SYNC]
    edits = service.overrides
    execute_time, frequency = _time_and_frequency(daily["trigger"])
    last = daily["last_fire"] or {}
    clock = clock_of(request)
    return {"enabled": edits.enabled, "cron_expression": daily["trigger"],
            "execute_time": execute_time, "frequency": frequency,
            "include_optional_deps": edits.include_optional,
            "skip_non_trading_days": edits.skip_non_trading_days,
            "last_run_at": clock.time(last.get("fired_at")),
            "next_run_at": clock.time(daily["next_run_at"]) if edits.enabled else None}


async def get_config(request: web.Request) -> web.Response:
    return jsonable(await _schedule_config(request))


async def put_config(request: web.Request) -> web.Response:
    body = await body_of(request, SCHEDULE_CONFIG)
    cron = None
    if body["execute_time"] is not None or body["frequency"] is not None:
        now = await _schedule_config(request)
        at = body["execute_time"] or now["execute_time"]
        hour, _, minute = at.partition(":")
        if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
            raise CompatError(400, f"execute_time {at!r} is not a time of day (HH:MM)")
        days = "1-5" if (body["frequency"] or now["frequency"]) == "weekday" else "*"
        cron = f"{int(minute)} {int(hour)} * * {days}"
    await overrides.update(queue_of(request), enabled=body["enabled"], daily_sync_cron=cron,
                           include_optional=body["include_optional_deps"],
                           skip_non_trading_days=body["skip_non_trading_days"])
    return jsonable(await _schedule_config(request))


def frequency_of(schedule: str) -> str:
    word = schedule.strip().lower().split(" ")[0]
    return word if word in ("daily", "weekly", "monthly") else "daily"


def _plugin_config(registry: PluginRegistry, edits: overrides.ScheduleOverrides,
                   name: str) -> dict[str, Any]:
    plugin, meta, edit = registry.get(name), meta_of(registry, name), edits.plugin(name)
    return {"plugin_name": name, "schedule_enabled": edit.schedule_enabled,
            "full_scan_enabled": edit.full_scan_enabled, "category": meta.category,
            "category_label": CATEGORY_LABELS.get(meta.category, meta.category),
            "role": meta.role,
            "schedule_frequency": frequency_of(str(getattr(plugin, "schedule", "") or "")),
            "dependencies": list(getattr(plugin, "dependencies", ()) or ()),
            "optional_dependencies": list(getattr(plugin, "optional_dependencies", ()) or ())}


async def plugin_configs(request: web.Request) -> web.Response:
    """Every plugin with a schedule (an unscheduled one, like the original's realtime
    plugins, is not listed), basic ones first."""
    registry = request.app[REGISTRY]
    edits = await overrides.load(queue_of(request))
    category = query_text(request, "category")
    out = [_plugin_config(registry, edits, n) for n in registry.names()
           if getattr(registry.get(n), "schedule", None)]
    if category:
        out = [c for c in out if c["category"] == category]
    out.sort(key=lambda c: (ROLE_ORDER.get(c["role"], 4), c["plugin_name"]))
    return jsonable(out)


async def put_plugin_config(request: web.Request) -> web.Response:
    body = await body_of(request, PLUGIN_SCHEDULE)
    registry, name = request.app[REGISTRY], request.match_info["name"]
    if name not in registry:
        raise CompatError(404, f"Plugin {name} not found")
    changes = {k: body[k] for k in ("schedule_enabled", "full_scan_enabled")
               if body[k] is not None}
    edits = await overrides.update(queue_of(request), plugins={name: changes} if changes
                                   else None)
    return jsonable(_plugin_config(registry, edits, name))


async def _run_daily(request: web.Request) -> dict[str, Any]:
    """Run the daily sync now (trigger manual): its execution as a record, or a
    ``skipped`` record when it has nothing to run."""
    queue = queue_of(request)
    service = schedule_service(queue, request.app[REGISTRY])
    try:
        fire = await service.run_now(DAILY_SYNC)
    except NothingToRun as exc:
        return skipped_record(exc.message, clock_of(request).now(time.time()))
    return await _record(queue, request, await _execution(queue, fire.execution_id))


async def trigger(request: web.Request) -> web.Response:
    return jsonable(await _run_daily(request))


# ------------------------------------------------------------------ /scheduler (deprecated)
async def scheduler_status(request: web.Request) -> web.Response:
    return jsonable(await _scheduler_status(request))


async def scheduler_config(request: web.Request) -> web.Response:
    """Deprecated there, and a no-op: the body is checked, the status answered."""
    await body_of(request, SCHEDULER_CONFIG)
    return jsonable(await _scheduler_status(request))


async def _scheduler_status(request: web.Request) -> dict[str, Any]:
    """The original's deprecated scheduler status, from the daily sync and the live
    scheduler processes' heartbeats."""
    config = await _schedule_config(request)
    queue = queue_of(request)
    with redis_errors(queue.settings):
        live = await queue.client.zcount(queue.keys.schedulers,
                                         int((time.time() - 15) * 1000), "+inf")
    return {"enabled": config["enabled"], "is_running": bool(live),
            "data_sync_time": config["execute_time"], "analysis_time": "",
            "next_data_sync": config["next_run_at"], "next_analysis": None,
            "last_data_sync": config["last_run_at"], "last_analysis": None,
            "current_task": None, "thread_alive": bool(live)}


async def scheduler_deprecated(request: web.Request) -> web.Response:
    """The original's deprecation notice, with the status its frontend's type expects."""
    verb = "disable" if request.path.endswith("/stop") else "manage"
    return jsonable({**await _scheduler_status(request), "deprecated": True,
                     "message": f"Use PUT /api/datamanage/schedule/config to {verb} the "
                                "schedule; stockq's scheduler runs as its own process "
                                "(`stockq scheduler`, or inside `stockq run`)."})


async def scheduler_run(request: web.Request) -> web.Response:
    task_type = request.query.get("task_type")
    if task_type is None:
        raise CompatError(422, [{"type": "missing", "loc": ["query", "task_type"],
                                 "msg": "Field required", "input": None}])
    if task_type == "analysis":
        return jsonable({"success": True, "message": "stockq runs no analysis task",
                         "task_type": task_type})
    if task_type != "data_sync":
        raise CompatError(400, "task_type must be data_sync or analysis")
    try:
        record = await _run_daily(request)
    except StockqError as exc:
        raise CompatError(exc.http_status, exc.message) from None
    return jsonable({"success": record["status"] != "skipped",
                     "message": record.get("skip_reason") or
                     f"daily sync queued as execution {record['execution_id']}",
                     "task_type": task_type})

