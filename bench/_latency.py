"""Latency phase of the worker benchmark (bench/bench_worker.py): submit-to-done on
an idle pool, timed by the task key's keyspace event, and cross-checked by polling."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time

from app.models import TaskSpec
from app.queue import new_id
from bench._pool import Bench, RawConn, Worker
from bench._procfs import pct
from bench._snapshot import load_note, snapshot

BUDGET_LAT_P50_MS = 1.3
BUDGET_LAT_P99_MS = 3.0


async def latency_notify(b: Bench, n: int, warm: int,
                         gap: float) -> tuple[list[float], dict[str, float]]:
    """Enqueue -> the EXPIRE keyspace event of the task key (set when it ends).

    Also returns the mean split of that time by the task hash's timestamps (1 ms
    resolution, truncated: corrected by their mean error): submit -> claimed
    (started_ms), claimed -> completed (duration_ms), completed -> event seen here."""
    await b.client.config_set("notify-keyspace-events", "Kg")
    sub = await RawConn.open(b.server.port)
    epoch = time.time() - time.perf_counter()
    try:
        await sub.call("PSUBSCRIBE", f"__keyspace@0__:{b.q.keys.task('*')}")
        samples: list[float] = []
        split: list[tuple[float, float, float]] = []
        for i in range(warm + n):
            tid = new_id()
            chan = f"__keyspace@0__:{b.q.keys.task(tid)}"
            spec = TaskSpec.build("noop", params={"lat": i})
            t0 = time.perf_counter()
            await b.q.enqueue(spec, task_id=tid)
            while True:
                t1, msg = await asyncio.wait_for(sub.items.get(), 10)
                if msg[0] == "pmessage" and msg[2] == chan and msg[3] == "expire":
                    break
            h = await b.hash(tid, "status", "started_ms", "duration_ms")
            if h["status"] != "completed":
                b.res.problems.append(f"latency task {tid} ended {h['status']!r}")
            elif i >= warm:
                samples.append((t1 - t0) * 1000)
                # the scripts' ms stamps are truncated: +0.5 ms is their mean error
                claimed = int(h["started_ms"]) + 0.5 - (t0 + epoch) * 1000
                ran = int(h["duration_ms"])
                split.append((claimed, ran, (t1 - t0) * 1000 - claimed - ran))
            await asyncio.sleep(gap)
        means = [statistics.fmean(x) for x in zip(*split, strict=True)]
        return samples, dict(zip(("claimed", "ran", "seen"), means, strict=True))
    finally:
        sub.close()
        await b.client.config_set("notify-keyspace-events", "")


async def latency_poll(b: Bench, n: int, warm: int, gap: float) -> tuple[list[float], float]:
    """Enqueue -> an HGET status in a tight loop answers completed."""
    conn = await RawConn.open(b.server.port)
    try:
        samples, rtts = [], []
        for i in range(warm + n):
            tid = new_id()
            key = b.q.keys.task(tid)
            spec = TaskSpec.build("noop", params={"poll": i})
            t0 = time.perf_counter()
            await b.q.enqueue(spec, task_id=tid)
            polls = 0
            tp = time.perf_counter()
            while await conn.call("HGET", key, "status") != "completed":
                polls += 1
            t1 = time.perf_counter()
            if i >= warm:
                samples.append((t1 - t0) * 1000)
                rtts.append((t1 - tp) / (polls + 1) * 1e6)
            await asyncio.sleep(gap)
        return samples, statistics.median(rtts)
    finally:
        conn.close()


async def phase_latency(b: Bench, w: Worker) -> None:
    args, res = b.args, b.res
    n, warm, gap = args.latency_n, 20, args.latency_gap_ms / 1000
    gc.collect()
    a = await snapshot(b, w)
    ev, split = await latency_notify(b, n, warm, gap)
    z = await snapshot(b, w)
    note, load = load_note(a, z)
    per = {k: (getattr(z, k) - getattr(a, k)) / (n + warm) * 1e6 for k in ("sup", "kids", "redis")}
    p50, p99 = statistics.median(ev), pct(ev, 0.99)
    res.info["latency_notify_ms"] = {"p50": p50, "p90": pct(ev, 0.9), "p99": p99,
                                     "max": max(ev), "mean": statistics.fmean(ev),
                                     "mean_split_ms": split, "load": load,
                                     "cpu_us_per_task": per}
    res.add("latency", f"submit -> completed, idle pool, {n} tasks (event)",
            f"p50 {p50:.3f} / p99 {p99:.3f} ms",
            f"p90 {pct(ev, 0.9):.3f}, max {max(ev):.3f} ms; timer stops at the keyspace "
            f"event (no polling); {args.latency_gap_ms:g} ms between tasks; " + note)
    res.add("latency", "  mean split (task hash, 1 ms stamps)",
            f"{split['claimed']:.2f} + {split['ran']:.2f} + {split['seen']:.2f} ms",
            f"submit -> claimed + claimed -> completed (dispatch, child, complete script) + "
            f"-> event seen; CPU per task: supervisor {per['sup']:.0f}, children "
            f"{per['kids']:.0f}, redis-server {per['redis']:.0f} us")
    gc.collect()
    pl, rtt = await latency_poll(b, n, warm, gap)
    res.info["latency_poll_ms"] = {"p50": statistics.median(pl), "p90": pct(pl, 0.9),
                                   "p99": pct(pl, 0.99), "max": max(pl), "poll_rtt_us": rtt}
    res.add("latency", f"submit -> completed, idle pool, {n} tasks (poll)",
            f"p50 {statistics.median(pl):.3f} / p99 {pct(pl, 0.99):.3f} ms",
            f"cross-check: HGET status in a tight loop, granularity ~{rtt:.0f} us "
            f"(median poll round trip); the busy poller competes for the CPUs")
    res.budget("submit->done latency p50 (event)", p50, BUDGET_LAT_P50_MS, False, "ms")
    res.budget("submit->done latency p99 (event)", p99, BUDGET_LAT_P99_MS, False, "ms")
