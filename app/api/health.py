"""``/health`` and ``/metrics``: what an operator or Prometheus sees, all read from Redis.

Both read the shared Redis state (queues, running set, worker heartbeats, the
``stock:stats`` counters written by the Lua transitions), so any sidecar on any host
reports the same numbers for every worker on every host.

``/health`` answers 200 when Redis answers and 503 with ``reasons`` otherwise.  No live
worker (or scheduler), an unreachable ClickHouse or an audit backlog is a *warning*,
not a failure: a sidecar may start before the workers, and restarting it (what an
orchestrator does on 503) would bring neither a worker nor ClickHouse back.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import weakref
from collections.abc import Awaitable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from aiohttp import web

from app.api.app import QUEUE, REGISTRY, SANDBOX, SETTINGS, STARTED, WAREHOUSE
from app.api.security import BIND_HOST, exposed
from app.errors import RedisUnavailable, StockqError
from app.keys import DEFAULT_QUEUE, PRIORITIES
from app.logs import get_logger
from app.queue import TaskQueue
from app.redis_client import redis_errors
from app.settings import Settings

log = get_logger("stockq.api")

PING_TIMEOUT = 1.0  # seconds Redis has to answer the health check's PING
READ_TIMEOUT = 3.0  # seconds for the reads after it (health and metrics)
LIVE_WINDOW_SECONDS = 15.0  # a worker is live with a heartbeat this recent (3 x 5 s)
MAX_WORKERS_LISTED = 50
# Upper bounds (seconds) of the task duration histogram; lib.lua's DURATION_BUCKETS
# (milliseconds) must match.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
OUTCOMES = ("completed", "failed", "cancelled")

T = TypeVar("T")

_last_healthy: weakref.WeakKeyDictionary[web.Application, bool] = weakref.WeakKeyDictionary()


def _disabled() -> RedisUnavailable:
    return RedisUnavailable(
        "Redis is disabled (STOCKQ_REDIS_ENABLED or REDIS_ENABLED is false); "
        "stockq needs Redis to queue tasks"
    )


def _scrub(settings: Settings, text: str) -> str:
    """Belt and braces: no error text from a driver may carry the Redis password."""
    try:
        password = urlsplit(settings.redis_url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password)} if password else ():
        text = text.replace(secret, "***")
    return text


async def _bounded(settings: Settings, seconds: float, what: str, reads: Awaitable[T]) -> T:
    """Await ``reads`` (Redis calls) for at most ``seconds``; RedisUnavailable otherwise."""
    try:
        async with asyncio.timeout(seconds):  # outside: redis_errors maps OSError
            with redis_errors(settings):
                return await reads
    except RedisUnavailable as exc:
        raise RedisUnavailable(_scrub(settings, exc.message)) from None
    except TimeoutError:
        raise RedisUnavailable(
            f"Redis at {settings.redis_url_redacted} did not answer {what} "
            f"within {seconds:g} s"
        ) from None


# ------------------------------------------------------------------ /health
async def _ping(queue: TaskQueue) -> float:
    """Milliseconds Redis took to answer a PING."""
    started = time.perf_counter()
    await queue.client.ping()  # type: ignore[misc]
    return round((time.perf_counter() - started) * 1000, 2)


async def _beats(queue: TaskQueue, now_ms: int, ids: list[tuple[str, float]], *,
                 scheduler: bool = False) -> list[dict[str, Any]]:
    """The heartbeat hashes of live workers (or schedulers)."""
    key = queue.keys.scheduler if scheduler else queue.keys.worker
    async with queue.client.pipeline(transaction=False) as pipe:
        for wid, _ in ids:
            pipe.hgetall(key(wid))
        hashes = await pipe.execute()
    out = []
    for (wid, score), h in zip(ids, hashes, strict=True):
        item: dict[str, Any] = {
            "scheduler_id" if scheduler else "worker_id": wid,
            "host": h.get("host", ""),
            "pid": _int(h.get("pid")),
            "started_at": h.get("started_at", ""),
            "seconds_since_heartbeat": round(max(0.0, now_ms - score) / 1000, 1),
        }
        if scheduler:
            item.update(jobs=_int(h.get("jobs")), timezone=h.get("timezone", ""))
        else:
            item.update(concurrency=_int(h.get("concurrency")), running=_int(h.get("running")),
                        processed=_int(h.get("processed")),
                        plugins=_json_list(h.get("plugins")),
                        queues=_json_list(h.get("queues")) or [DEFAULT_QUEUE])
        out.append(item)
    return out


def _json_list(raw: str | None) -> list[str]:
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


async def _read_health(queue: TaskQueue) -> tuple[dict[str, Any], dict[str, Any],
                                                 dict[str, Any]]:
    """Queue depths, live workers and live schedulers: two pipelined round trips."""
    k = queue.keys
    now_ms = queue.now_ms()
    since = now_ms - int(LIVE_WINDOW_SECONDS * 1000)
    async with queue.client.pipeline(transaction=False) as pipe:
        for p in PRIORITIES:
            pipe.llen(k.queue(p))
        pipe.zcard(k.delayed)
        pipe.scard(k.running)
        for registry in (k.workers, k.schedulers):
            pipe.zcount(registry, since, "+inf")
            pipe.zrevrangebyscore(registry, "+inf", since, start=0, num=MAX_WORKERS_LISTED,
                                  withscores=True)
        res = await pipe.execute()
    n = len(PRIORITIES)
    ready = {str(p): int(res[i]) for i, p in enumerate(PRIORITIES)}
    depths = {"ready": ready, "ready_total": sum(ready.values()), "delayed": int(res[n]),
              "running": int(res[n + 1])}
    parts = []
    for i, scheduler in ((n + 2, False), (n + 4, True)):
        listed = await _beats(queue, now_ms, [(str(w), float(s)) for w, s in res[i + 1]],
                              scheduler=scheduler)
        live = int(res[i])
        parts.append({"live": live, "window_seconds": LIVE_WINDOW_SECONDS, "items": listed,
                      "truncated": live > len(listed)})
    workers, schedulers = parts
    schedulers["status"] = "ok" if schedulers["live"] else "none"
    return depths, workers, schedulers


async def _clickhouse(app: web.Application, warnings: list[str]) -> dict[str, Any]:
    """The sidecar's ClickHouse, if it has one: a failure is a warning (the queue works
    without it; audit rows wait in Redis)."""
    warehouse = app.get(WAREHOUSE)
    if warehouse is None:
        return {"status": "not_configured"}
    out: dict[str, Any] = {"url": warehouse.url_redacted, "embedded": warehouse.embedded}
    sandbox = app.get(SANDBOX)
    if sandbox is not None:  # operators' queries run in sessions of their own
        out["queries_running"] = sandbox.running
    try:
        await asyncio.wait_for(warehouse.run(warehouse.ping), READ_TIMEOUT)
    except (StockqError, TimeoutError) as exc:
        message = exc.message if isinstance(exc, StockqError) else "no answer in time"
        warnings.append(f"ClickHouse is unavailable: {message}")
        return {**out, "status": "unavailable", "error": message}
    return {**out, "status": "ok"}


async def _outbox(queue: TaskQueue, settings: Settings, warnings: list[str]
                  ) -> dict[str, Any] | None:
    from app.audit import BACKLOG_WARN_SECONDS, outbox_report

    try:
        report = await _bounded(settings, READ_TIMEOUT, "the outbox reads",
                                outbox_report(queue))
    except RedisUnavailable:
        return None
    status = "ok"
    if report["backlog"] and report["oldest_seconds"] > BACKLOG_WARN_SECONDS:
        status = "backlog"
        who = f"the flusher {report['flusher']}" if report["flusher"] else "no flusher runs"
        warnings.append(f"{report['backlog']} audit rows wait in Redis, the oldest for "
                        f"{report['oldest_seconds']:g} s ({who}); history is behind until "
                        "ClickHouse takes them")
    if report["dropped"]:
        status = "dropped"
        warnings.append(f"{report['dropped']} audit rows were dropped over "
                        f"STOCKQ_AUDIT_MAX_ROWS while ClickHouse was unreachable")
    return {"status": status, **report}


async def health_report(app: web.Application) -> tuple[dict[str, Any], bool]:
    """The ``/health`` body and whether it is healthy (200) or not (503)."""
    settings = app[SETTINGS]
    reasons: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {"status": "ok", "reasons": reasons, "warnings": warnings,
                              "redis": {"status": "disabled"}, "queue": None, "workers": None,
                              "scheduler": None}
    queue = app.get(QUEUE)
    if queue is None:
        reasons.append(_disabled().message)
    else:
        url = settings.redis_url_redacted
        try:
            latency = await _bounded(settings, PING_TIMEOUT, "PING", _ping(queue))
            report["queue"], report["workers"], report["scheduler"] = await _bounded(
                settings, READ_TIMEOUT, "the health reads", _read_health(queue))
            report["redis"] = {"status": "ok", "url": url, "latency_ms": latency}
        except RedisUnavailable as exc:
            reasons.append(exc.message)
            report["redis"] = {"status": "unavailable", "url": url, "error": exc.message}
    if queue is not None and report["workers"] is not None and report["workers"]["live"] == 0:
        warnings.append(
            f"no live workers: no heartbeat in {queue.keys.workers} within the last "
            f"{LIVE_WINDOW_SECONDS:g} s; queued tasks wait until a worker starts"
        )
    if report["scheduler"] is not None and not report["scheduler"]["live"]:
        warnings.append(
            f"no live scheduler: no heartbeat in {queue.keys.schedulers if queue else ''} "
            f"within the last {LIVE_WINDOW_SECONDS:g} s; scheduled syncs do not fire until "
            "`stockq scheduler` (or `stockq run`) runs"
        )
    if queue is not None and report["redis"]["status"] == "ok":
        await _routing(queue, settings, report, warnings)
    host = app.get(BIND_HOST)
    if host is not None and exposed(host, settings.api_token):
        warnings.append(
            f"the API listens on {host or 'every interface'} (beyond loopback) without "
            "STOCKQ_API_TOKEN (--insecure-no-auth): anyone who reaches the port can submit, "
            "cancel and retry tasks; set STOCKQ_API_TOKEN or bind 127.0.0.1")
    report["clickhouse"] = await _clickhouse(app, warnings)
    report["outbox"] = await _outbox(queue, settings, warnings) \
        if queue is not None and report["redis"]["status"] == "ok" else None
    ok = not reasons
    report["status"] = "unhealthy" if not ok else "degraded" if warnings else "ok"
    report["checked_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    if STARTED in app:
        report["uptime_seconds"] = round(time.time() - app[STARTED], 1)
    _log_change(app, ok, reasons)
    return report, ok


async def _routing(queue: TaskQueue, settings: Settings, report: dict[str, Any],
                   warnings: list[str]) -> None:
    """Tasks set aside because no live worker can run them (capability routing): how
    many wait for each plugin, and a warning saying why for those nobody can take."""
    from app.liveness import live, parked, stuck

    try:
        routes, workers = await _bounded(settings, READ_TIMEOUT, "the routing reads",
                                         asyncio.gather(parked(queue), live(queue)))
        waiting = await _bounded(settings, READ_TIMEOUT, "the routing reads",
                                 stuck(queue, workers))
    except RedisUnavailable:
        return
    if report.get("queue") is not None:
        report["queue"]["parked"] = routes
    for plugin, _, count, reason in waiting:
        warnings.append(f"{count} pending task{'s' if count != 1 else ''} of {plugin} "
                        f"wait{'s' if count == 1 else ''}: {reason}")


def _log_change(app: web.Application, ok: bool, reasons: list[str]) -> None:
    """Log when the health flips (not on every probe)."""
    before = _last_healthy.get(app, True)
    _last_healthy[app] = ok
    if before and not ok:
        log.warning("api.unhealthy", reasons=reasons)
    elif ok and not before:
        log.info("api.healthy_again")


# ------------------------------------------------------------------ /metrics
def escape_label(value: str) -> str:
    """A label value as the text exposition format 0.0.4 wants it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
        return str(int(value))
    return format(value, ".15g")


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def by_plugin(stats: Mapping[str, int], field: str, known: Iterable[str] = ()
              ) -> dict[str, int]:
    """Per-plugin counts of ``field`` (stats fields ``<field>:<plugin>``), 0 for each
    ``known`` plugin that has none (a series exists before its first event, so rates and
    alerts see it).  What the total counted beyond them (tasks without a recorded plugin)
    is reported as plugin ``""``, so the series always add up to the total; with no
    plugin at all the family still has that one series, 0."""
    head = field + ":"
    counts = dict.fromkeys(known, 0)
    counts.update({key[len(head):]: n for key, n in stats.items() if key.startswith(head)})
    rest = stats.get(field, 0) - sum(counts.values())
    if rest > 0 or not counts:
        counts[""] = counts.get("", 0) + max(rest, 0)
    return dict(sorted(counts.items()))


def duration_histogram(stats: Mapping[str, int]) -> tuple[list[tuple[str, int]], float, int]:
    """Cumulative ``(le, count)`` pairs (``+Inf`` last), the sum in seconds and the count,
    from the non-cumulative ``duration_bucket:<le>`` fields lib.lua writes."""
    observed: list[tuple[float, int]] = []
    for key, n in stats.items():
        if key.startswith("duration_bucket:"):
            try:
                observed.append((float(key.partition(":")[2]), n))
            except ValueError:
                continue
    bounds: Iterable[float] = (*DURATION_BUCKETS, math.inf)
    buckets = [("+Inf" if math.isinf(b) else _num(b),
                sum(n for le, n in observed if le <= b)) for b in bounds]
    # the count is the +Inf bucket: every attempt counts in exactly one bucket
    return buckets, stats.get("duration_sum_ms", 0) / 1000, buckets[-1][1]


async def _read_metrics(queue: TaskQueue) -> tuple[list[int], dict[str, int]]:
    """Every number ``/metrics`` shows, in one pipelined round trip."""
    k = queue.keys
    since = queue.now_ms() - int(LIVE_WINDOW_SECONDS * 1000)
    async with queue.client.pipeline(transaction=False) as pipe:
        for p in PRIORITIES:
            pipe.llen(k.queue(p))
        pipe.zcard(k.delayed)
        pipe.scard(k.running)
        pipe.zcount(k.workers, since, "+inf")
        pipe.hgetall(k.stats)
        res = await pipe.execute()
    stats: dict[str, int] = {}
    for key, raw in (res[-1] or {}).items():
        try:
            stats[str(key)] = int(raw)
        except ValueError:
            continue
    return [int(x) for x in res[:-1]], stats


async def metrics_text(app: web.Application) -> str:
    """Prometheus text exposition (format 0.0.4); RedisUnavailable when Redis is not there."""
    queue = app.get(QUEUE)
    if queue is None:
        raise _disabled()
    gauges, stats = await _bounded(app[SETTINGS], READ_TIMEOUT, "the metrics reads",
                                   _read_metrics(queue))
    registry = app.get(REGISTRY)
    known = registry.names() if registry is not None else []
    n = len(PRIORITIES)
    out = _Exposition()
    out.family("stockq_queue_ready", "gauge",
               "Tasks ready to be claimed, by priority (0 high, 1 normal, 2 low).")
    for i, p in enumerate(PRIORITIES):
        out.sample("stockq_queue_ready", gauges[i], priority=str(p))
    out.family("stockq_queue_delayed", "gauge", "Tasks waiting out a retry backoff.")
    out.sample("stockq_queue_delayed", gauges[n])
    out.family("stockq_tasks_running", "gauge", "Tasks being executed by a worker.")
    out.sample("stockq_tasks_running", gauges[n + 1])
    out.family("stockq_workers_live", "gauge",
               f"Worker pools with a heartbeat in the last {LIVE_WINDOW_SECONDS:g} s.")
    out.sample("stockq_workers_live", gauges[n + 2])
    out.family("stockq_tasks_enqueued_total", "counter", "Tasks created.")
    out.sample("stockq_tasks_enqueued_total", stats.get("enqueued", 0))
    out.family("stockq_tasks_ended_total", "counter",
               "Tasks that reached a terminal status, by plugin and outcome.")
    for outcome in OUTCOMES:
        for plugin, count in by_plugin(stats, outcome, known).items():
            out.sample("stockq_tasks_ended_total", count, plugin=plugin, outcome=outcome)
    for name, field, help_text in (
        ("stockq_task_retries_total", "retried",
         "Failed attempts scheduled for an automatic retry, by plugin."),
        ("stockq_task_timeouts_total", "timeouts", "Attempts killed at their deadline, by plugin."),
        ("stockq_task_worker_lost_total", "worker_lost",
         "Attempts whose worker was lost (lease expired), by plugin."),
    ):
        out.family(name, "counter", help_text)
        for plugin, count in by_plugin(stats, field, known).items():
            out.sample(name, count, plugin=plugin)
    buckets, total_seconds, count = duration_histogram(stats)
    out.family("stockq_task_duration_seconds", "histogram",
               "Duration of task attempts that ended through complete or fail.")
    for le, cumulative in buckets:
        out.sample("stockq_task_duration_seconds_bucket", cumulative, le=le)
    out.sample("stockq_task_duration_seconds_sum", total_seconds)
    out.sample("stockq_task_duration_seconds_count", count)
    return out.text()
