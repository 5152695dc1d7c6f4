"""``/health`` and ``/metrics`` of the sidecar against real redis-server processes:
depths, live workers, Redis lost and back (same app), Redis disabled, and exact
Prometheus counters and histogram values after tasks ran through TaskQueue."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.api.app import create_app
from app.api.health import DURATION_BUCKETS, PING_TIMEOUT, escape_label
from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from tests.conftest import EXAMPLES, FakeClock
from tests.redis_server import RedisServer, free_port

Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def sidecar(settings: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings))) as http:
        yield http


def events(buffer: io.StringIO, prefix: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [e for e in lines if str(e.get("event", "")).startswith(prefix)]


async def get_health(http: Client) -> tuple[int, dict[str, Any]]:
    resp = await http.get("/health")
    return resp.status, await resp.json()


# ------------------------------------------------------------------ /metrics parsing
SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})?'
    r' (?P<value>-?[0-9.eE+-]+|\+Inf|NaN)$'
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value)


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample as {(name, labels): value}; asserts the 0.0.4 text format."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram"} and name in helped
            assert name not in types, f"{name} declared twice"
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or types.get(family) == "histogram", f"{name} has no TYPE"
        labels = frozenset((k, unescape(v)) for k, v in LABEL.findall(m["labels"] or ""))
        key = (name, labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m["value"])
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
           ) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


# ------------------------------------------------------------------ /health
async def test_health_is_200_with_queue_depths_and_warns_without_workers(
    settings: Settings, queue: TaskQueue
) -> None:
    for i, priority in enumerate((0, 1, 1, 2, 2, 2)):
        await queue.enqueue(TaskSpec.build("noop", priority=priority, params={"n": i},
                                           max_attempts=3))
    running = await queue.claim("w-1")  # priority 0
    assert running is not None and running.priority == 0
    retried = await queue.claim("w-1")  # the first priority 1
    assert retried is not None
    await queue.fail(retried, "network", "reset")  # -> stock:delayed

    async with sidecar(settings) as http:
        status, body = await get_health(http)
    assert status == 200
    assert body["status"] == "degraded"
    assert body["reasons"] == []
    assert body["queue"] == {"ready": {"0": 0, "1": 1, "2": 3}, "ready_total": 4,
                             "delayed": 1, "running": 1, "parked": {}}
    assert body["redis"]["status"] == "ok" and body["redis"]["url"] == settings.redis_url
    assert body["workers"] == {"live": 0, "window_seconds": 15.0, "items": [],
                               "truncated": False}
    workers_warning, scheduler_warning, outbox_warning = body["warnings"]
    assert "no live workers" in workers_warning
    assert "no live scheduler" in scheduler_warning
    # the failed attempt's audit row waits (written at the test clock's 2026-01-01)
    assert "1 audit rows wait in Redis" in outbox_warning and "no flusher" in outbox_warning
    assert body["scheduler"] == {"status": "none", "live": 0, "window_seconds": 15.0,
                                 "items": [], "truncated": False}
    assert body["clickhouse"] == {"status": "not_configured"}  # this sidecar has none
    outbox = body["outbox"]
    assert (outbox["status"], outbox["backlog"], outbox["flusher"], outbox["dropped"]) == (
        "backlog", 1, None, 0)
    assert body["uptime_seconds"] >= 0


async def test_health_counts_workers_from_recent_heartbeats(
    settings: Settings, client: aioredis.Redis
) -> None:
    now = TaskQueue(client, settings)  # the real clock, as the sidecar's
    stale = TaskQueue(client, settings, clock=lambda: time.time() - 60)
    try:
        await now.heartbeat("host-a:10:x", {"host": "host-a", "pid": 10, "concurrency": 4,
                                            "running": 1, "processed": 7}, ttl=15)
        await now.heartbeat("host-b:20:y", {"host": "host-b", "pid": 20}, ttl=15)
        await stale.heartbeat("host-c:30:z", {"host": "host-c", "pid": 30}, ttl=15)
        await now.heartbeat("sched-1", {"host": "host-a", "pid": 11, "jobs": 2,
                                        "timezone": "Asia/Shanghai"}, ttl=15, scheduler=True)
        await stale.heartbeat("sched-old", {"host": "host-c", "pid": 31}, ttl=15,
                              scheduler=True)

        async with sidecar(settings) as http:
            status, body = await get_health(http)
            metrics = parse_metrics(await (await http.get("/metrics")).text())
    finally:
        await now.aclose()
        await stale.aclose()
    assert status == 200 and body["status"] == "ok" and body["warnings"] == []
    workers = body["workers"]
    assert workers["live"] == 2 and workers["truncated"] is False
    by_id = {w["worker_id"]: w for w in workers["items"]}
    assert set(by_id) == {"host-a:10:x", "host-b:20:y"}  # the 60 s old one is not live
    a = by_id["host-a:10:x"]
    assert (a["host"], a["pid"], a["concurrency"], a["running"], a["processed"]) == (
        "host-a", 10, 4, 1, 7)
    assert by_id["host-b:20:y"]["concurrency"] is None
    assert 0 <= a["seconds_since_heartbeat"] < 15
    assert value(metrics, "stockq_workers_live") == 2
    scheduler = body["scheduler"]
    assert scheduler["status"] == "ok" and scheduler["live"] == 1
    [sched] = scheduler["items"]  # a scheduler is not a worker, and the stale one is not live
    assert (sched["scheduler_id"], sched["host"], sched["pid"], sched["jobs"],
            sched["timezone"]) == ("sched-1", "host-a", 11, 2, "Asia/Shanghai")


async def test_health_lists_at_most_50_workers(settings: Settings, client: aioredis.Redis
                                               ) -> None:
    q = TaskQueue(client, settings)
    try:
        for i in range(60):
            await q.heartbeat(f"w-{i}", {"host": f"h{i}"}, ttl=15)
    finally:
        await q.aclose()
    async with sidecar(settings) as http:
        status, body = await get_health(http)
    assert status == 200
    assert body["workers"]["live"] == 60
    assert len(body["workers"]["items"]) == 50 and body["workers"]["truncated"] is True


async def test_health_follows_redis_going_away_and_coming_back(own_redis: RedisServer
                                                                ) -> None:
    settings = Settings(redis_url=own_redis.url, plugins=(EXAMPLES,))
    async with sidecar(settings) as http:
        status, body = await get_health(http)
        assert status == 200 and body["redis"]["status"] == "ok"

        own_redis.stop()
        started = time.monotonic()
        status, body = await get_health(http)
        assert time.monotonic() - started < 5
        assert status == 503 and body["status"] == "unhealthy"
        [reason] = body["reasons"]
        assert "Redis" in reason and own_redis.url in reason
        assert body["redis"]["status"] == "unavailable" and body["redis"]["error"] == reason
        assert body["queue"] is None and body["workers"] is None
        assert body["scheduler"] is None

        resp = await http.get("/metrics")
        assert resp.status == 503
        error = (await resp.json())["error"]
        assert error["code"] == "redis_unavailable" and own_redis.url in error["message"]

        own_redis.start()  # same port; the very same app and client must recover
        status, body = await get_health(http)
        assert status == 200 and body["reasons"] == [] and body["redis"]["status"] == "ok"
        assert (await http.get("/metrics")).status == 200


async def test_health_gives_a_hung_redis_one_second_and_logs_the_changes(
    own_redis: RedisServer, json_log: io.StringIO
) -> None:
    settings = Settings(redis_url=own_redis.url, plugins=(EXAMPLES,))
    assert own_redis.proc is not None
    pid = own_redis.proc.pid
    async with sidecar(settings) as http:
        assert (await get_health(http))[0] == 200
        os.kill(pid, signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            started = time.monotonic()
            first = await get_health(http)
            elapsed = time.monotonic() - started
            second = await get_health(http)  # still down: logged once, not per probe
        finally:
            os.kill(pid, signal.SIGCONT)
        status, body = first
        assert status == 503 and second[0] == 503
        assert PING_TIMEOUT <= elapsed < PING_TIMEOUT + 2
        [reason] = body["reasons"]
        assert reason == f"Redis at {own_redis.url} did not answer PING within 1 s"
        assert (await get_health(http))[0] == 200  # the same client, after the cancel
    logged = events(json_log, "api.")
    changes = [(e["event"], e["level"]) for e in logged if e["event"] != "api.request"]
    assert changes == [("api.unhealthy", "warning"), ("api.healthy_again", "info")]
    assert logged[[e["event"] for e in logged].index("api.unhealthy")]["reasons"] == [reason]


async def test_health_never_shows_the_redis_password() -> None:
    port = free_port()  # nothing listens there
    settings = Settings(redis_url=f"redis://:s3cr%40t-pw@127.0.0.1:{port}/0",
                        plugins=(EXAMPLES,), redis_connect_timeout=0.5)
    async with sidecar(settings) as http:
        resp = await http.get("/health")
        text = await resp.text()
        metrics = await (await http.get("/metrics")).text()
    assert resp.status == 503
    assert f"127.0.0.1:{port}" in text and "***" in text
    for shown in (text, metrics):
        assert "s3cr" not in shown


async def test_disabled_redis_answers_503_on_health_and_metrics(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, redis_enabled=False, plugins=(EXAMPLES,))
    async with sidecar(settings) as http:
        status, body = await get_health(http)
        resp = await http.get("/metrics")
        error = await resp.json()
    assert status == 503 and body["status"] == "unhealthy"
    [reason] = body["reasons"]
    assert "disabled" in reason and "Redis" in reason
    assert body["redis"] == {"status": "disabled"}
    assert resp.status == 503
    assert error["error"]["code"] == "redis_unavailable"
    assert "disabled" in error["error"]["message"]


# ------------------------------------------------------------------ /metrics
async def test_metrics_count_what_happened_to_tasks(
    settings: Settings, queue: TaskQueue, client: aioredis.Redis, clock: FakeClock
) -> None:
    ids = []
    for i in range(4):
        tid, _ = await queue.enqueue(TaskSpec.build("noop", params={"n": i}, max_attempts=2))
        ids.append(tid)
    await queue.enqueue(TaskSpec.build("sleep", priority=0))  # claimed first, left running
    cancelled, _ = await queue.enqueue(TaskSpec.build("fail", priority=2))
    await queue.cancel(cancelled)
    await queue.enqueue(TaskSpec.build("fail", priority=2, params={"n": 1}))  # stays ready

    held = await queue.claim("w-1")
    assert held is not None and held.plugin_name == "sleep"

    async def attempt(seconds: float) -> Any:
        task = await queue.claim("w-1")
        assert task is not None
        clock.advance(seconds)
        return task

    await queue.complete(await attempt(0.25))  # bucket 0.5
    await queue.complete(await attempt(1))  # exactly 1 s: bucket 1 (le is inclusive)
    out = await queue.fail(await attempt(7), "timeout", "killed at its deadline")  # 10
    assert out.status.value == "retrying"
    out = await queue.fail(await attempt(4000), "config_error", "no token")  # +Inf
    assert out.status.value == "failed"

    assert await client.hgetall("stock:stats") == {  # type: ignore[misc]
        "enqueued": "7",
        "completed": "2", "completed:noop": "2",
        "failed": "1", "failed:noop": "1",
        "cancelled": "1", "cancelled:fail": "1",
        "retried": "1", "retried:noop": "1",
        "timeouts": "1", "timeouts:noop": "1",
        "duration_bucket:0.5": "1", "duration_bucket:1": "1",
        "duration_bucket:10": "1", "duration_bucket:+Inf": "1",
        "duration_sum_ms": "4008250",
    }

    async with sidecar(settings) as http:
        resp = await http.get("/metrics")
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    m = parse_metrics(text)

    assert series(m, "stockq_queue_ready") == {
        frozenset({("priority", "0")}): 0, frozenset({("priority", "1")}): 0,
        frozenset({("priority", "2")}): 1}
    assert value(m, "stockq_queue_delayed") == 1
    assert value(m, "stockq_tasks_running") == 1
    assert value(m, "stockq_workers_live") == 0
    assert value(m, "stockq_tasks_enqueued_total") == 7
    # every registered plugin (the examples: fail, noop, sleep) has its series, 0 or not
    assert series(m, "stockq_tasks_ended_total") == {
        **zeros("outcome", ("completed", "failed", "cancelled")),
        frozenset({("plugin", "noop"), ("outcome", "completed")}): 2,
        frozenset({("plugin", "noop"), ("outcome", "failed")}): 1,
        frozenset({("plugin", "fail"), ("outcome", "cancelled")}): 1,
    }
    assert series(m, "stockq_task_retries_total") == {
        **zeros(), frozenset({("plugin", "noop")}): 1}
    assert series(m, "stockq_task_timeouts_total") == {
        **zeros(), frozenset({("plugin", "noop")}): 1}
    assert series(m, "stockq_task_worker_lost_total") == zeros()

    buckets = {dict(labels)["le"]: v
               for labels, v in series(m, "stockq_task_duration_seconds_bucket").items()}
    assert buckets == {"0.1": 0, "0.5": 1, "1": 2, "5": 2, "10": 3, "30": 3, "60": 3,
                       "300": 3, "900": 3, "3600": 3, "+Inf": 4}
    ordered = [buckets[le] for le in [f"{b:g}" for b in DURATION_BUCKETS] + ["+Inf"]]
    assert ordered == sorted(ordered)  # cumulative
    assert value(m, "stockq_task_duration_seconds_count") == buckets["+Inf"] == 4
    assert value(m, "stockq_task_duration_seconds_sum") == 4008.25
    for family, kind in (("stockq_queue_ready", "gauge"),
                         ("stockq_tasks_ended_total", "counter"),
                         ("stockq_task_duration_seconds", "histogram")):
        assert f"# TYPE {family} {kind}\n" in text and f"# HELP {family} " in text


def zeros(label: str = "", values: tuple[str, ...] = ("",)) -> dict[frozenset[tuple[str, str]],
                                                                    float]:
    """The zero-valued series of a per-plugin counter for the example plugins (and, with
    ``label``, for each of its ``values``)."""
    return {frozenset({("plugin", p), *([(label, v)] if label else [])}): 0
            for p in ("fail", "noop", "sleep") for v in values}


async def test_metrics_on_an_empty_redis_and_the_worker_lost_counter(
    settings: Settings, queue: TaskQueue, clock: FakeClock
) -> None:
    """Every counter /metrics declares has its series before anything happened: 0 for
    each registered plugin (so a rate or an alert sees it from the start)."""
    async with sidecar(settings) as http:
        text = await (await http.get("/metrics")).text()
        m = parse_metrics(text)
        assert value(m, "stockq_tasks_enqueued_total") == 0
        assert series(m, "stockq_tasks_ended_total") == zeros(
            "outcome", ("completed", "failed", "cancelled"))
        for family in ("stockq_task_retries_total", "stockq_task_timeouts_total",
                       "stockq_task_worker_lost_total"):
            assert series(m, family) == zeros()
        declared = re.findall(r"^# TYPE (\S+) (counter|gauge|histogram)$", text, re.M)
        for family, kind in declared:
            name = f"{family}_count" if kind == "histogram" else family
            assert any(line.startswith(name) for line in text.splitlines()), family
        assert value(m, "stockq_task_duration_seconds_count") == 0
        assert value(m, "stockq_task_duration_seconds_bucket", le="+Inf") == 0

        await queue.enqueue(TaskSpec.build("noop", max_attempts=1))
        assert await queue.claim("w-dead") is not None
        clock.advance(settings.lease_seconds + 1)
        assert [outcome for _, outcome in await queue.reap()] == ["failed"]
        m = parse_metrics(await (await http.get("/metrics")).text())
    assert series(m, "stockq_task_worker_lost_total") == {
        **zeros(), frozenset({("plugin", "noop")}): 1}
    assert value(m, "stockq_tasks_ended_total", plugin="noop", outcome="failed") == 1
    assert value(m, "stockq_task_duration_seconds_count") == 0  # no attempt ended normally


async def test_metrics_escape_label_values_and_add_up_to_the_totals(
    settings: Settings, client: aioredis.Redis
) -> None:
    odd = 'we"ird\\plug\nin'
    await client.hset("stock:stats", mapping={  # type: ignore[misc]
        "completed": "5", f"completed:{odd}": "2", "completed:noop": "1",
        "retried": "3",  # no per-plugin fields: a producer of the original format
    })
    async with sidecar(settings) as http:
        text = await (await http.get("/metrics")).text()
    assert 'plugin="we\\"ird\\\\plug\\nin"' in text
    m = parse_metrics(text)
    ended = {k: v for k, v in series(m, "stockq_tasks_ended_total").items() if v}
    assert ended == {
        frozenset({("plugin", odd), ("outcome", "completed")}): 2,
        frozenset({("plugin", "noop"), ("outcome", "completed")}): 1,
        frozenset({("plugin", ""), ("outcome", "completed")}): 2,  # 5 - 2 - 1
    }
    assert series(m, "stockq_task_retries_total") == {
        **zeros(), frozenset({("plugin", "")}): 3}


def test_escape_label() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label("plain") == "plain"


def test_lua_buckets_match_the_exposition() -> None:
    lib = resources.files("app").joinpath("lua", "lib.lua").read_text(encoding="utf-8")
    table = lib.split("local DURATION_BUCKETS = {", 1)[1].split("\n}", 1)[0]
    pairs = re.findall(r"\{(\d+), '([0-9.]+)'\}", table)
    assert [int(ms) for ms, _ in pairs] == [round(b * 1000) for b in DURATION_BUCKETS]
    assert [le for _, le in pairs] == [f"{b:g}" for b in DURATION_BUCKETS]
