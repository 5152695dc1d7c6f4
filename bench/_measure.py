"""Measuring the task core: result records, timing loops, logging set-up and the
code version printed by every benchmark."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from app.executions import BatchTask, create_execution
from app.logs import configure_logging, get_logger
from app.models import Priority, TaskSpec
from app.queue import TaskQueue
from app.settings import Settings

_counter = itertools.count()


def spec(priority: Priority = Priority.NORMAL) -> TaskSpec:
    """A distinct noop spec (distinct params, so dedup never triggers)."""
    return TaskSpec.build("noop", params={"i": next(_counter)}, priority=priority)


@dataclass
class Row:
    name: str
    n: int
    seconds: float
    rate: float  # ops (tasks) per second, end to end
    us_per_op: float
    server_us_per_op: float | None = None
    client_cpu_us_per_op: float | None = None
    note: str = ""


@dataclass
class Latency:
    name: str
    calls: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    note: str = ""


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    budgets: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- helpers

_devnull = None


def _rebind_module_loggers() -> None:
    """Modules that bind a logger at import (``log = get_logger(...)``) keep the
    configuration of that moment: bind them again under the current one."""
    for name, mod in list(sys.modules.items()):
        if not name.startswith("app.") or not hasattr(mod, "get_logger"):
            continue
        old = getattr(mod, "log", None)
        if old is None:
            continue
        ctx = getattr(old, "_context", None) or {}
        mod.log = get_logger(ctx.get("logger", f"stockq.{name[4:]}"))  # type: ignore[attr-defined]


def setup_logging(mode: str) -> str:
    """``json``: the production configuration (info level, JSON lines), written to
    /dev/null instead of stderr, so the cost of building and rendering every event is
    measured.  ``off``: level warning, so the info events of the hot paths are dropped
    by the filtering logger.  Loggers are bound when a TaskQueue is built: call this
    before building one."""
    global _devnull
    level = "info" if mode == "json" else "warning"
    configure_logging(Settings(log_level=level, log_format="json"), force=True)
    if _devnull is None:
        _devnull = open(os.devnull, "w")  # lives as long as the process
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=_devnull))
    _rebind_module_loggers()
    return f"{level} level, JSON renderer -> /dev/null" if mode == "json" else (
        "warning level (info events dropped)")


async def evalsha_usec(client: aioredis.Redis) -> tuple[int, int]:
    """(calls, usec) of EVALSHA so far: time Redis spent running our scripts."""
    stats = await client.info("commandstats")
    s = stats.get("cmdstat_evalsha") or {}
    return int(s.get("calls", 0)), int(s.get("usec", 0))


async def used_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def timed_rate(
    client: aioredis.Redis, name: str, n: int, op: Callable[[int], Awaitable[None]],
    note: str = "", chunks: int = 5,
) -> Row:
    """Call ``op(i)`` for i in range(n), sequentially, timed, with the server time.

    The note gets the slowest and fastest of ``chunks`` equal slices, to show how
    steady the rate was (the VM shares its CPUs between client and server)."""
    gc.collect()
    c0, u0 = await evalsha_usec(client)
    bounds = [n * k // chunks for k in range(chunks + 1)]
    rates = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for a, b in itertools.pairwise(bounds):
        ts = time.perf_counter()
        for i in range(a, b):
            await op(i)
        if b > a:
            rates.append((b - a) / (time.perf_counter() - ts))
    dt = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    c1, u1 = await evalsha_usec(client)
    srv = (u1 - u0) / n if c1 > c0 else None
    spread = f"slices {min(rates):,.0f}-{max(rates):,.0f}/s" if len(rates) > 1 else ""
    return Row(name, n, dt, n / dt, dt / n * 1e6, srv, cpu / n * 1e6,
               "; ".join(x for x in (note, spread) if x))


async def timed_block(
    client: aioredis.Redis, name: str, n: int, body: Callable[[], Awaitable[None]],
    note: str = "",
) -> Row:
    """Run ``body`` (which does ``n`` operations) once, timed, with the server time."""
    gc.collect()
    c0, u0 = await evalsha_usec(client)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await body()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    c1, u1 = await evalsha_usec(client)
    srv = (u1 - u0) / n if c1 > c0 else None
    return Row(name, n, dt, n / dt, dt / n * 1e6, srv, cpu / n * 1e6, note)


def enqueue_op(q: TaskQueue, specs: list[TaskSpec]) -> Callable[[int], Awaitable[None]]:
    async def op(i: int) -> None:
        _, created = await q.enqueue(specs[i])
        assert created

    return op


def claim_complete_op(q: TaskQueue) -> Callable[[int], Awaitable[None]]:
    async def op(i: int) -> None:
        task = await q.claim("bench-worker")
        assert task is not None, "queue ran dry"
        await q.complete(task)

    return op


async def enqueue_seq(q: TaskQueue, specs: list[TaskSpec]) -> None:
    for s in specs:
        _, created = await q.enqueue(s)
        assert created


async def enqueue_concurrent(q: TaskQueue, specs: list[TaskSpec], k: int) -> None:
    async def worker(part: list[TaskSpec]) -> None:
        for s in part:
            _, created = await q.enqueue(s)
            assert created

    await asyncio.gather(*(worker(specs[i::k]) for i in range(k)))


async def claim_complete_seq(q: TaskQueue, n: int) -> None:
    for _ in range(n):
        task = await q.claim("bench-worker")
        assert task is not None, "queue ran dry"
        await q.complete(task)


async def latencies(name: str, calls: int, fn: Callable[[], Awaitable[Any]],
                    note: str = "") -> Latency:
    for _ in range(5):  # warm up
        await fn()
    gc.collect()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(round(p * (len(samples) - 1))))]

    return Latency(name, calls, statistics.median(samples), pct(0.90), pct(0.99),
                   statistics.fmean(samples), note)


async def warm_up(q: TaskQueue) -> None:
    """Load every script used (EVALSHA NOSCRIPT -> SCRIPT LOAD) and warm code paths."""
    await enqueue_seq(q, [spec() for _ in range(300)])
    await claim_complete_seq(q, 300)
    await create_execution(q, [BatchTask(spec()) for _ in range(100)])
    await create_execution(
        q, [BatchTask(spec(), depends_on=(i - 1,) if i else ()) for i in range(100)]
    )
    await q.client.flushall()



def code_version() -> str:
    """HEAD of the repository and whether the work tree differs from it."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "app"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"git {head}" + (" + uncommitted changes in app/" if dirty else "")


async def ab_rows(client: aioredis.Redis, variants: dict[str, Callable[[int], Awaitable[None]]],
                  n: int, slices: int, note: str) -> list[Row]:
    """Measure variants in alternating slices (A B A B ...), so that whatever else
    the machine does hits them alike; rates are medians over the slices."""
    per = max(1, n // slices)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    srvs: dict[str, list[float]] = {k: [] for k in variants}
    secs: dict[str, float] = dict.fromkeys(variants, 0.0)
    done = dict.fromkeys(variants, 0)
    gc.collect()
    for _ in range(slices):
        for name, op in variants.items():
            _, u0 = await evalsha_usec(client)
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(per):
                await op(done[name])
                done[name] += 1
            dt = time.perf_counter() - t0
            cpus[name].append((time.process_time() - c0) / per * 1e6)
            _, u1 = await evalsha_usec(client)
            srvs[name].append((u1 - u0) / per)
            rates[name].append(per / dt)
            secs[name] += dt
    return [Row(name, done[name], secs[name], statistics.median(rates[name]),
                1e6 / statistics.median(rates[name]), statistics.median(srvs[name]),
                statistics.median(cpus[name]),
                f"{note}; median of {slices} alternating slices "
                f"{min(rates[name]):,.0f}-{max(rates[name]):,.0f}/s")
            for name in variants]
