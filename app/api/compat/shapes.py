"""stockq's records in the shapes stock_datasource's frontend reads (its ``SyncTask``,
``SyncHistory``, ``ScheduleExecutionRecord``, ``BatchExecutionDetail`` ...).

* Times are ISO 8601 in ``STOCKQ_TIMEZONE`` with its offset
  (``2026-01-05T18:00:00.123+08:00``; the original wrote naive local times, which read
  the same in a browser); dates are ``YYYY-MM-DD``, a date range
  ``YYYY-MM-DD ~ YYYY-MM-DD``.
* A task's status is one of the original five: ``retrying`` (waiting out a backoff)
  shows as ``pending``.
* An execution's status: ``pending``/``running`` -> ``running``, ``cancelled`` ->
  ``interrupted`` (stopped before its end; it can be retried); its trigger:
  ``scheduled``/``catch_up`` -> ``scheduled``, ``manual``/``api``/``cli`` -> ``manual``,
  ``group`` and ``retry`` as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from app.models import Execution, Task, TaskStatus

TASK_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
#: the original's trigger type -> stockq's trigger types it covers
TRIGGERS: dict[str, tuple[str, ...]] = {
    "scheduled": ("scheduled", "catch_up"), "manual": ("manual", "api", "cli"),
    "group": ("group",), "retry": ("retry",)}
_TRIGGER_OF = {ours: theirs for theirs, ourselves in TRIGGERS.items() for ours in ourselves}
#: the original's execution status -> stockq's
EXECUTION_STATUSES: dict[str, tuple[str, ...]] = {
    "running": ("pending", "running"), "completed": ("completed",), "failed": ("failed",),
    "interrupted": ("cancelled",), "stopped": ("cancelled",), "skipped": (),
    "stopping": ()}
_STATUS_OF = {"pending": "running", "running": "running", "completed": "completed",
              "failed": "failed", "cancelled": "interrupted"}
#: the group categories the frontend knows (its GroupCategory type), with their labels
GROUP_CATEGORIES = (("daily", "每日更新"), ("cn_stock", "A股"), ("index", "指数"),
                    ("etf_fund", "ETF基金"), ("custom", "自定义"))
CATEGORY_LABELS = {"cn_stock": "A股", "hk_stock": "港股", "index": "指数",
                   "etf_fund": "ETF基金", "system": "系统", "market": "市场统计",
                   "reference": "参考数据", "fundamental": "基本面", "stock": "A股"}


class Clock:
    """Renders times in the schedule's time zone."""

    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)

    def time(self, value: datetime | str | None) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
        if value.tzinfo is None:  # ClickHouse DateTime64 columns: naive UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(self.zone).isoformat(timespec="milliseconds")

    def now(self, epoch: float) -> str:
        return datetime.fromtimestamp(epoch, self.zone).isoformat(timespec="milliseconds")


def day(value: str) -> str:
    """``YYYYMMDD`` -> ``YYYY-MM-DD`` (anything else as it is)."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() \
        else value


def days(values: Iterable[str]) -> list[str]:
    return [day(v) for v in values]


def date_range(stored: str) -> str | None:
    """stockq's ``YYYYMMDD-YYYYMMDD`` as the original's ``YYYY-MM-DD ~ YYYY-MM-DD`` (one
    date when both ends are equal); None when there is none."""
    start, _, end = stored.partition("-")
    start, end = start.strip(), end.strip()
    if not start and not end:
        return None
    if not start or not end or start == end:
        return day(start or end)
    return f"{day(start)} ~ {day(end)}"


def range_of(dates: Sequence[str]) -> str | None:
    ordered = sorted(day(d) for d in dates)
    if not ordered:
        return None
    return ordered[0] if ordered[0] == ordered[-1] else f"{ordered[0]} ~ {ordered[-1]}"


def task_status(status: TaskStatus) -> str:
    return "pending" if status == TaskStatus.RETRYING else status.value


def trigger_type(stored: str) -> str:
    return _TRIGGER_OF.get(stored, stored or "manual")


def execution_status(execution: Execution) -> str:
    return _STATUS_OF.get(execution.status.value, execution.status.value)


def sync_task(task: Task, clock: Clock) -> dict[str, Any]:
    """A task as the original's ``SyncTask``."""
    return {
        "task_id": task.task_id, "plugin_name": task.plugin_name,
        "task_type": task.task_type, "status": task_status(task.status),
        "progress": float(task.progress), "records_processed": task.records_processed,
        "total_records": task.records_processed,
        "error_message": task.error_message or None,
        "trade_dates": days(task.trade_dates), "data_source": task.data_source or None,
        "created_at": clock.time(task.created_at), "started_at": clock.time(task.started_at),
        "completed_at": clock.time(task.completed_at),
        "user_id": task.user_id or None, "username": task.username or None,
    }


def batch_task(task: Task, clock: Clock) -> dict[str, Any]:
    """A task of an execution as the original's ``BatchTaskDetail``."""
    return {
        "task_id": task.task_id, "plugin_name": task.plugin_name,
        "status": task_status(task.status), "progress": float(task.progress),
        "records_processed": task.records_processed,
        "error_message": task.error_message or None,
        "created_at": clock.time(task.created_at),
        "completed_at": clock.time(task.completed_at),
        "trade_dates": days(task.trade_dates),
    }


def history_row(row: dict[str, Any], clock: Clock) -> dict[str, Any]:
    """An attempt end of the ClickHouse audit as the original's ``SyncHistory`` (with the
    ``SyncTask`` fields its frontend's type names)."""
    records = int(row.get("records") or 0)
    duration = row.get("duration_ms")
    dates = row.get("trade_dates")
    return {
        "task_id": row["task_id"], "plugin_name": row["plugin"],
        "task_type": row["task_type"],
        # an attempt that failed and is retried later ended "failed" (its retry shows next)
        "status": "failed" if row["status"] == "retrying" else row["status"],
        "records_processed": records, "total_records": records,
        "progress": 100.0 if row["status"] == "completed" else 0.0,
        "error_message": row.get("error_message") or None, "error_traceback": None,
        "trade_dates": days(dates) if isinstance(dates, list) else [],
        "started_at": clock.time(row.get("started_at") or row.get("finished_at")),
        "completed_at": clock.time(row.get("finished_at")),
        "duration_seconds": None if duration is None else round(int(duration) / 1000, 3),
        "user_id": None, "username": None, "attempt": row.get("attempt"),
    }


def execution_record(execution: Execution, task_ids: list[str], clock: Clock, *,
                     status: str | None = None) -> dict[str, Any]:
    """An execution as the original's ``ScheduleExecutionRecord``."""
    shown = status or execution_status(execution)
    return {
        "execution_id": execution.execution_id,
        "trigger_type": trigger_type(execution.trigger_type),
        "started_at": clock.time(execution.started_at or execution.created_at),
        "completed_at": clock.time(execution.completed_at) if shown != "running" else None,
        "status": shown, "skip_reason": None, "total_plugins": execution.total,
        "completed_plugins": execution.completed, "failed_plugins": execution.failed,
        "task_ids": task_ids, "can_retry": shown in ("failed", "interrupted"),
        "group_name": execution.group_name or None,
        "date_range": date_range(execution.date_range),
    }


def skipped_record(reason: str, started_at: str, trigger: str = "manual") -> dict[str, Any]:
    """A schedule trigger that created nothing (the original's ``skipped`` record)."""
    return {"execution_id": "", "trigger_type": trigger, "started_at": started_at,
            "completed_at": started_at, "status": "skipped", "skip_reason": reason,
            "total_plugins": 0, "completed_plugins": 0, "failed_plugins": 0, "task_ids": [],
            "can_retry": False, "group_name": None, "date_range": None}


def current(tasks: Iterable[Task]) -> list[Task]:
    """The tasks of an execution that were not retried: a manual retry's new task takes
    the place of its old one, as the original's in-place retry replaced the id."""
    return [t for t in tasks if not t.retried_by]


def error_summary(tasks: Iterable[Task]) -> str:
    return "\n\n".join(f"=== {t.plugin_name} ===\n{t.error_message}" for t in tasks
                       if t.error_message)
