"""The sidecar's request and response models (validation and OpenAPI from one place)."""

from __future__ import annotations

from app.api.schema import Field, Model

MAX_DATES = 10_000
DATE = "YYYYMMDD or YYYY-MM-DD (a real calendar date)"

_TASK_FIELDS = (
    Field("task_type", ("string",), enum=("incremental", "full", "backfill"),
          description="default incremental"),
    Field("trade_dates", ("array",), items="string", max_items=MAX_DATES,
          description=f"non-empty list of trade dates, {DATE}"),
    Field("start_date", ("string",), max_length=10, description=DATE),
    Field("end_date", ("string",), max_length=10, description=DATE),
    Field("priority", ("string", "integer"), enum=("high", "normal", "low"), minimum=0,
          maximum=2, description="high|normal|low or 0-2 (0 is high); default normal"),
    Field("timeout_seconds", ("integer",), minimum=1, maximum=7 * 24 * 3600,
          description="wall-clock limit per attempt; default from the plugin"),
    Field("max_attempts", ("integer",), minimum=1, maximum=20,
          description="attempts before the task fails for good"),
    Field("memory_limit_mb", ("integer",), minimum=1, maximum=1024 * 1024,
          description="memory limit of the worker child running it, MB; default from "
                      "the plugin, then STOCKQ_MEMORY_LIMIT_MB (docs/worker.md)"),
    Field("params", ("object",), description="keyword arguments passed to the plugin"),
    Field("queue", ("string",), max_length=64,
          description="the named queue it waits in (default: the plugin's, else 'default'):"
                      " only workers started with --queue NAME take it (docs/worker.md)"),
    Field("user_id", ("string",), max_length=200),
    Field("username", ("string",), max_length=200),
)

TASK_SUBMIT = Model(
    "TaskSubmit",
    (Field("plugin_name", ("string",), required=True, max_length=200), *_TASK_FIELDS),
    description="A plugin run to queue.",
    example={"plugin_name": "daily", "task_type": "backfill",
             "trade_dates": ["20240102", "20240103"], "priority": "high"},
)

EXECUTION_SUBMIT = Model(
    "ExecutionSubmit",
    (
        Field("plugins", ("array",), items="string", max_items=1000,
              description="plugins to run (with their dependencies); or give group"),
        Field("group", ("string",), max_length=200, description="a plugin group"),
        Field("include_optional", ("boolean",),
              description="also run optional dependencies (default false)"),
        *_TASK_FIELDS,
    ),
    description="A batch of plugin runs, dependency-ordered; `plugins` or `group`.",
    example={"plugins": ["daily"], "task_type": "incremental"},
)

ERROR = Model("Error", (Field("error", ("object",), required=True,
                              description="{code, message}"),),
              description='Every error: {"error": {"code": ..., "message": ...}}')

TASK = Model(
    "Task",
    (
        Field("task_id", ("string",), required=True),
        Field("plugin_name", ("string",), required=True),
        Field("task_type", ("string",)),
        Field("status", ("string",), required=True,
              enum=("pending", "running", "retrying", "completed", "failed", "cancelled")),
        Field("trade_dates", ("array",), items="string"),
        Field("start_date", ("string",)),
        Field("end_date", ("string",)),
        Field("params", ("object",)),
        Field("priority", ("integer",)),
        Field("priority_name", ("string",)),
        Field("progress", ("number",)),
        Field("records_processed", ("integer",)),
        Field("error_message", ("string",)),
        Field("last_error_type", ("string",)),
        Field("attempt", ("integer",)),
        Field("max_attempts", ("integer",)),
        Field("timeout_seconds", ("integer",)),
        Field("created_at", ("string",), nullable=True),
        Field("updated_at", ("string",), nullable=True),
        Field("started_at", ("string",), nullable=True),
        Field("completed_at", ("string",), nullable=True),
        Field("next_run_at", ("string",), nullable=True),
        Field("deadline_at", ("string",), nullable=True),
        Field("execution_id", ("string",)),
        Field("trigger", ("string",)),
        Field("retry_of", ("string",)),
        Field("retried_by", ("string",)),
        Field("depends_on", ("array",), items="string"),
        Field("worker", ("string",)),
        Field("checkpoint", ("string",)),
        Field("memory_limit_mb", ("integer",), description="the task's own; 0: none set"),
        Field("queue", ("string",), description="the named queue it waits in"),
        Field("output", ("string",),
              description="the last bytes the last ended attempt printed, masked"),
        Field("output_bytes", ("integer",), description="how much that attempt printed"),
        Field("output_attempt", ("integer",), description="which attempt that was"),
        Field("ts_code", ("string",), description="a per-task stock code handed to every "
              "call of the plugin (the original producer's field)"),
        Field("data_source", ("string",), description="a per-task data source handed to "
              "every call of the plugin (the original producer's field)"),
        Field("created", ("boolean",), description="on submit: false when deduplicated"),
    ),
    extra=True,
)

EXECUTION = Model(
    "Execution",
    (
        Field("execution_id", ("string",), required=True),
        Field("status", ("string",), required=True,
              enum=("pending", "running", "completed", "failed", "cancelled")),
        Field("trigger_type", ("string",)),
        Field("group_name", ("string",)),
        Field("plugins", ("array",), items="string"),
        Field("total", ("integer",)),
        Field("completed", ("integer",)),
        Field("failed", ("integer",)),
        Field("cancelled", ("integer",)),
        Field("pending", ("integer",)),
        Field("task_ids", ("array",), items="string"),
        Field("tasks", ("array",), items="object"),
        Field("errors", ("array",), items="object",
              description="failed or cancelled tasks: task_id, plugin, error type, message"),
    ),
    extra=True,
)

EXECUTION_LIST = Model(
    "ExecutionList",
    (
        Field("items", ("array",), items="object", required=True,
              description="executions as GET /executions/{id} has them, without tasks: "
                          "execution_id, status, trigger_type, group_name, date_range, "
                          "plugins, total, completed, failed, cancelled, pending, "
                          "created_at, started_at, completed_at"),
        Field("next_cursor", ("string",), nullable=True,
              description="pass back as cursor for the next page; null at the end"),
    ),
)

SCHEDULES = Model(
    "ScheduleList",
    (
        Field("items", ("array",), items="object", required=True,
              description="one per job: name (daily_sync, or plugin:{name} for a plugin "
                          "with its own trigger), trigger (crontab; day of week 0/7 = "
                          "Sunday), timezone, description, plugins, next_run_at (ISO 8601 "
                          "with the zone's offset, e.g. +08:00), enabled (false while "
                          "the schedule is disabled), last_fire (null, or "
                          "slot_at, fired_at, trigger scheduled|catch_up|manual, outcome "
                          "fired|skipped|missed|failed, reason, execution_id)"),
        Field("calendar", ("object",),
              description="the trading calendar in use: exchange, source tushare|offline"),
        Field("settings", ("object",),
              description="the schedule edits in effect (made through /api/datamanage/"
                          "schedule/...): version, enabled, daily_sync_cron (null: "
                          "STOCKQ_DAILY_SYNC_CRON), include_optional, "
                          "skip_non_trading_days, plugins (name -> schedule_enabled, "
                          "full_scan_enabled), updated_at"),
    ),
)

FIRE = Model(
    "Fire",
    (
        Field("job", ("string",), required=True),
        Field("slot_at", ("string",)),
        Field("trigger", ("string",)),
        Field("outcome", ("string",), required=True),
        Field("reason", ("string",)),
        Field("execution_id", ("string",)),
        Field("trade_date", ("string",)),
        Field("tasks", ("integer",)),
    ),
    extra=True,
)

QUERY = Model(
    "Query",
    (
        Field("sql", ("string",), required=True, max_length=100_000,
              description="one SELECT, WITH, SHOW, DESCRIBE TABLE, EXISTS TABLE or "
                          "EXPLAIN statement over the warehouse's tables"),
        Field("max_rows", ("integer",), minimum=1, maximum=1_000_000,
              description="fewer rows than STOCKQ_QUERY_MAX_ROWS (the cap)"),
    ),
    description="A read-only ClickHouse query: no table functions, INTO OUTFILE, FORMAT or "
                "SETTINGS; readonly=1 with row, byte and time limits set by the server.",
    example={"sql": "SELECT trade_date, count() FROM ods_daily FINAL GROUP BY trade_date "
                    "ORDER BY trade_date DESC LIMIT 5"},
)

QUERY_RESULT = Model(
    "QueryResult",
    (
        Field("columns", ("array",), items="string", required=True),
        Field("types", ("array",), items="string", description="ClickHouse column types"),
        Field("rows", ("array",), items="array", required=True,
              description="dates as ISO 8601 strings"),
    ),
)
