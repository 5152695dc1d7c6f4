"""The audit history: the Redis outbox the transition scripts write, the one flusher
that moves it to ClickHouse, and the history it answers from.

Every attempt end (completed, failed, retrying — a retry scheduled, also after a timeout
or a lost worker — and cancelled) and every execution end appends a row to a Redis list
(``stock:audit:tasks``, ``stock:audit:executions``) inside the Lua script that makes the
change, so Redis state and history cannot drift.  Rows are JSON arrays in the order of
:data:`TASK_ROW` and :data:`EXECUTION_ROW` (lib.lua ``audit_task`` and
``count_in_execution`` write them).

One flusher is active at a time (``stock:audit:flusher``, ``SET NX`` with a TTL it
renews): it reads the oldest rows, inserts them into ``stockq_task_audit`` /
``stockq_execution_audit`` and only then removes them from Redis — at least once.  A
row sent twice (the flusher died between the insert and the removal) carries the same
version (its event time), so ``ReplacingMergeTree`` keeps one row per ``(task_id,
attempt)`` / ``execution_id``.  While ClickHouse is down rows wait in Redis, up to
``STOCKQ_AUDIT_MAX_ROWS`` per list; beyond that the oldest are dropped, counted in
``stock:stats`` (``audit_dropped``) and logged as ``audit.dropped``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.errors import InvalidInput, RedisUnavailable
from app.failures import redact
from app.logs import get_logger
from app.models import parse_date
from app.queue import TaskQueue, new_id
from app.redaction import Redactor
from app.redis_client import redis_errors
from plugins_bridge.warehouse import (
    Column,
    TableSpec,
    Warehouse,
    WarehouseError,
    WarehouseUnavailable,
    parse_time,
)

log = get_logger("stockq.audit")

TASK_ROW = ("task_id", "attempt", "execution_id", "plugin", "task_type", "status",
            "error_type", "error_message", "records", "trade_dates", "priority", "trigger",
            "worker", "created_at", "started_at", "finished_at", "duration_ms", "version")
EXECUTION_ROW = ("execution_id", "status", "trigger_type", "group_name", "plugins", "total",
                 "completed", "failed", "cancelled", "created_at", "started_at",
                 "finished_at", "version")

S, T, NT = "String", "DateTime64(3)", "Nullable(DateTime64(3))"
TASK_AUDIT = TableSpec("stockq_task_audit", tuple(Column(n, t) for n, t in (
    ("task_id", S), ("attempt", "UInt32"), ("execution_id", S), ("plugin", S),
    ("task_type", S), ("status", S), ("error_type", S), ("error_message", S),
    ("records", "Int64"), ("trade_dates", S), ("priority", "UInt8"), ("trigger", S),
    ("worker", S), ("created_at", NT), ("started_at", NT), ("finished_at", T),
    ("duration_ms", "Nullable(Int64)"),
)), ("task_id", "attempt"), comment="stockq: one row per attempt end")
EXECUTION_AUDIT = TableSpec("stockq_execution_audit", tuple(Column(n, t) for n, t in (
    ("execution_id", S), ("status", S), ("trigger_type", S), ("group_name", S),
    ("plugins", S), ("total", "UInt32"), ("completed", "UInt32"), ("failed", "UInt32"),
    ("cancelled", "UInt32"), ("created_at", NT), ("started_at", NT), ("finished_at", T),
)), ("execution_id",), comment="stockq: one row per execution end")

BATCH = 2_000
LOCK_SECONDS = 30
BACKLOG_WARN_SECONDS = 60.0  # /health warns when the oldest waiting row is older


def _blank_none(value: Any) -> Any:
    return None if value in ("", None) else value


def task_values(raw: str, secrets: Redactor | None = None) -> tuple[list[Any], int]:
    """One outbox row -> (values in TASK_AUDIT column order, version).  The error
    message is redacted again (``secrets``: the flusher's stored secrets), for rows
    written by a worker whose settings differ from the flusher's."""
    v = json.loads(raw)
    if not isinstance(v, list) or len(v) != len(TASK_ROW):
        raise ValueError(f"malformed task audit row: {raw[:200]}")
    row = dict(zip(TASK_ROW, v, strict=True))
    message = str(row["error_message"])
    row["error_message"] = redact(secrets(message) if secrets else message)[:2000]
    for name in ("created_at", "started_at", "duration_ms"):
        row[name] = _blank_none(row[name])
    row["priority"] = row["priority"] or 1
    return [row[c.name] for c in TASK_AUDIT.columns], int(row["version"])


def execution_values(raw: str) -> tuple[list[Any], int]:
    v = json.loads(raw)
    if not isinstance(v, list) or len(v) != len(EXECUTION_ROW):
        raise ValueError(f"malformed execution audit row: {raw[:200]}")
    row = dict(zip(EXECUTION_ROW, v, strict=True))
    for name in ("created_at", "started_at"):
        row[name] = _blank_none(row[name])
    return [row[c.name] for c in EXECUTION_AUDIT.columns], int(row["version"])


class AuditFlusher:
    """Moves the outbox to ClickHouse; at most one is active per Redis."""

    def __init__(self, queue: TaskQueue, warehouse: Warehouse, *, interval: float = 1.0,
                 batch: int = BATCH, clock: Callable[[], float] = time.time) -> None:
        self.queue = queue
        self.warehouse = warehouse
        self.settings = queue.settings
        self.keys = queue.keys
        self.interval = interval
        self.batch = batch
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:6]}"
        self.active = False
        self._down_since: float | None = None
        self.flushed = 0

    @property
    def _outboxes(self) -> tuple[tuple[str, TableSpec, Callable[[str],
                                                            tuple[list[Any], int]]], ...]:
        return ((self.keys.audit_tasks, TASK_AUDIT,
                 lambda raw: task_values(raw, self.queue.redact)),
                (self.keys.audit_executions, EXECUTION_AUDIT, execution_values))

    async def hold_lock(self) -> bool:
        """Take or renew the flusher lock; True while this process is the flusher."""
        r = self.queue.client
        key = self.keys.audit_flusher
        with redis_errors(self.settings):
            if await r.set(key, self.owner, nx=True, ex=LOCK_SECONDS):
                got = True
            else:
                got = await r.get(key) == self.owner
                if got:
                    await r.expire(key, LOCK_SECONDS)
        if got and not self.active:
            log.info("audit.flusher_active", owner=self.owner)
        self.active = got
        return got

    async def release(self) -> None:
        r = self.queue.client
        with redis_errors(self.settings):
            if await r.get(self.keys.audit_flusher) == self.owner:
                await r.delete(self.keys.audit_flusher)
        self.active = False

    async def flush_once(self) -> int:
        """Move up to one batch per outbox; returns the rows moved."""
        moved = 0
        r = self.queue.client
        for key, spec, parse in self._outboxes:
            with redis_errors(self.settings):
                raw = await r.lrange(key, -self.batch, -1)  # type: ignore[misc]
            if not raw:
                continue
            raw.reverse()  # oldest first
            rows, versions, bad = [], [], 0
            for item in raw:
                try:
                    values, version = parse(item)
                except (ValueError, TypeError) as exc:
                    bad += 1
                    log.error("audit.bad_row", outbox=key, error=str(exc))
                    continue
                rows.append(values)
                versions.append(version)
            if rows:
                await self.warehouse.run(self.warehouse.insert, spec, rows, versions)
            with redis_errors(self.settings):  # acknowledged: leave Redis only now
                await r.ltrim(key, 0, -(len(raw) + 1))  # type: ignore[misc]
            moved += len(rows)
        self.flushed += moved
        return moved

    async def enforce_cap(self) -> int:
        """Drop the oldest rows beyond STOCKQ_AUDIT_MAX_ROWS (ClickHouse down for long)."""
        cap = self.settings.audit_max_rows
        r = self.queue.client
        dropped = 0
        for key, _, _ in self._outboxes:
            with redis_errors(self.settings):
                n = int(await r.llen(key))  # type: ignore[misc]
                if n > cap:
                    await r.ltrim(key, 0, cap - 1)  # type: ignore[misc]
                    await r.hincrby(self.keys.stats, "audit_dropped", n - cap)  # type: ignore[misc]
                    dropped += n - cap
        if dropped:
            log.error("audit.dropped", rows=dropped, cap=cap,
                      hint="ClickHouse has been unreachable too long; raise "
                           "STOCKQ_AUDIT_MAX_ROWS or bring ClickHouse back")
        return dropped

    async def step(self) -> int:
        """One round: lock, cap, flush until the outboxes are empty."""
        if not await self.hold_lock():
            return 0
        await self.enforce_cap()
        moved = 0
        try:
            while True:
                n = await self.flush_once()
                moved += n
                if n < self.batch:
                    break
        except (WarehouseError, WarehouseUnavailable) as exc:
            if self._down_since is None:
                self._down_since = self.clock()
                log.error("audit.clickhouse_down", error=exc.message,
                          hint="audit rows wait in Redis and flow when ClickHouse is back")
            return moved
        if self._down_since is not None:
            log.info("audit.clickhouse_back", down_seconds=round(
                self.clock() - self._down_since, 1))
            self._down_since = None
        return moved

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``interval`` until ``stop`` is set (a last flush first)."""
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except RedisUnavailable as exc:
                    log.warning("audit.redis_unavailable", error=exc.message)
                try:
                    await asyncio.wait_for(stop.wait(), self.interval)
                except TimeoutError:
                    pass
            try:
                await self.step()
            except (RedisUnavailable, WarehouseError, WarehouseUnavailable):
                pass
        finally:
            try:
                await self.release()
            except RedisUnavailable:
                pass


async def outbox_report(queue: TaskQueue) -> dict[str, Any]:
    """Backlog, its age and the active flusher (for /health)."""
    k = queue.keys
    async with queue.client.pipeline(transaction=False) as pipe:
        pipe.llen(k.audit_tasks)
        pipe.llen(k.audit_executions)
        pipe.lindex(k.audit_tasks, -1)
        pipe.lindex(k.audit_executions, -1)
        pipe.get(k.audit_flusher)
        pipe.hget(k.stats, "audit_dropped")
        tasks, execs, oldest_t, oldest_e, flusher, dropped = await pipe.execute()
    ages = []
    for raw in (oldest_t, oldest_e):
        try:
            ages.append(max(0.0, queue.clock() - int(json.loads(raw)[-1]) / 1000))
        except (TypeError, ValueError, IndexError):
            pass
    return {"backlog": int(tasks) + int(execs), "oldest_seconds": round(max(ages), 1)
            if ages else 0.0, "flusher": flusher or None, "dropped": int(dropped or 0)}


def _when(text: str, what: str) -> datetime:
    text = text.strip()
    try:
        if len(text) in (8, 10) and text.replace("-", "").isdigit():
            day = parse_date(text, what)
            return datetime(int(day[:4]), int(day[4:6]), int(day[6:]))
        return parse_time(text)
    except (ValueError, InvalidInput):
        raise InvalidInput(f"{what} {text!r} must be a date (YYYY-MM-DD) or an ISO 8601 "
                           "time") from None


async def history(warehouse: Warehouse, *, plugin: str = "", status: str = "",
                  execution_id: str = "", since: str = "", until: str = "",
                  limit: int = 100, task_id: str = "") -> list[dict[str, Any]]:
    """Attempt ends from ClickHouse, newest first."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("plugin", plugin), ("status", status),
                        ("execution_id", execution_id), ("task_id", task_id)):
        if value:
            where.append(f"{name} = {{{name}:String}}")
            params[name] = value
    if since:
        where.append("finished_at >= {since:DateTime64(3)}")
        params["since"] = _when(since, "since")
    if until:
        where.append("finished_at < {until:DateTime64(3)}")
        params["until"] = _when(until, "until")
    sql = ("SELECT * EXCEPT (version, _ingested_at) FROM stockq_task_audit FINAL"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY finished_at DESC, task_id, attempt DESC LIMIT {limit:UInt32}")

    def read() -> list[dict[str, Any]]:
        warehouse.ensure_table(TASK_AUDIT)
        rows = warehouse.select(sql, params)
        for row in rows:
            try:
                row["trade_dates"] = json.loads(row["trade_dates"] or "[]")
            except ValueError:
                pass
            for name in ("created_at", "started_at", "finished_at"):
                # the columns hold UTC without a zone: say so (ISO 8601 with the offset)
                value = row.get(name)
                if isinstance(value, str) and value and "+" not in value[10:]:
                    row[name] = value + "+00:00"
        return rows

    return await warehouse.run(read)


DAILY_STATUSES = ("completed", "failed")
MAX_DAILY_DAYS = 90


async def daily_outcomes(warehouse: Warehouse, *, days: int, timezone: str,
                         plugin: str = "", now: datetime | None = None) -> dict[str, Any]:
    """Attempts that ended completed or failed, per plugin and per day (in ``timezone``)
    over the last ``days`` days, today included: ``{"days": [...], "plugins": {name:
    {"completed": [...], "failed": [...]}}}``, one number per day.  ClickHouse counts
    by hour (the audit's times are UTC); the hours are put into local days here."""
    zone = ZoneInfo(timezone)
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time(), zone).astimezone(UTC)
    where = ["finished_at >= {since:DateTime64(3)}", "status IN ('completed', 'failed')"]
    params: dict[str, Any] = {"since": since.replace(tzinfo=None)}
    if plugin:
        where.append("plugin = {plugin:String}")
        params["plugin"] = plugin
    sql = ("SELECT toStartOfHour(finished_at) AS hour, plugin, status, count() AS n "
           "FROM stockq_task_audit FINAL WHERE " + " AND ".join(where)
           + " GROUP BY hour, plugin, status")

    def read() -> list[dict[str, Any]]:
        warehouse.ensure_table(TASK_AUDIT)
        return warehouse.select(sql, params)

    names = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    position = {day: i for i, day in enumerate(names)}
    plugins: dict[str, dict[str, list[int]]] = {}
    for row in await warehouse.run(read):
        hour = parse_time(row["hour"]).replace(tzinfo=UTC)
        i = position.get(hour.astimezone(zone).date().isoformat())
        if i is None:
            continue
        series = plugins.setdefault(row["plugin"], {s: [0] * days for s in DAILY_STATUSES})
        series[row["status"]][i] += int(row["n"])
    return {"days": names, "timezone": timezone, "plugins": dict(sorted(plugins.items()))}


class FlusherHandle:
    """A flusher running in the background of a daemon (``stockq run``, ``stockq
    scheduler``): :meth:`stop` flushes what is left, then releases the lock."""

    def __init__(self, queue: TaskQueue, warehouse: Warehouse) -> None:
        self.flusher = AuditFlusher(queue, warehouse)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.flusher.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(self._task, return_exceptions=True)


async def run_flusher(queue: TaskQueue, warehouse: Warehouse) -> int:
    """``stockq audit-flush``: flush until SIGTERM/SIGINT (exit 0)."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    flusher = AuditFlusher(queue, warehouse)
    log.info("audit.started", owner=flusher.owner, clickhouse=warehouse.url_redacted)
    try:
        await flusher.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("audit.stopped", owner=flusher.owner, flushed=flusher.flushed)
    return 0
