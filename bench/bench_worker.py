"""Worker-pool benchmark: real ``stockq worker`` processes against their own Redis.

Run from the repository root::

    .venv/bin/python -m bench.bench_worker [--drain-n 20000] [--json out.json]

It starts a redis-server on a free loopback port (never 6379) and real
``python -m app.cli worker --concurrency N`` subprocesses (JSON logs to files in a
temporary directory, plugins ``plugins_bridge.examples:EXAMPLES`` and
``bench.plugins:PLUGINS``), and measures:

0. baseline: PING round trips over a bare connection (the transport floor);
1. drain rate: N noop tasks queued first (create_execution batches), then a worker
   with ``--concurrency 2`` starts; tasks/s from the first task started to the last
   completed, from the task hashes (``started_ms`` + ``duration_ms``, written by the
   supervisor's clock, 1 ms resolution), so the worker's start-up does not count.
   CPU per task by process (supervisor, children including recycled ones,
   redis-server, this process) and the CPU other processes used meanwhile come
   from /proc (Linux only);
2. submit-to-done latency on that idle pool: one ``TaskQueue.enqueue`` at a time, the
   timer stops when Redis notifies the task key's EXPIRE (keyspace notifications,
   which the ended task gets in the same script that marks it completed): event
   driven, no polling.  A second run polls the status with HGET in a tight loop as a
   cross-check (granularity: one HGET round trip, printed);
3. timeout enforcement (``--concurrency 1``): a ``sleep`` task (60 s, timeout 1 s,
   one attempt) followed by a queued noop: deadline -> task hash failed with
   ``last_error_type=timeout``, and deadline (the kill) -> the noop ``running`` (on
   the warm spare, while the old child's tree is killed);
4. memory: VmRSS of the supervisor and of each idle child after the drain;
5. crash recovery: two workers with ``STOCKQ_LEASE_SECONDS=5``; SIGKILL of the
   supervisor running a long task, until the other supervisor completed it.

The budgets are printed PASS/MISS at the end.  Worker, Redis and this process share
the machine's CPUs with whatever else runs: the "other processes" CPU figures say how
much that was.  ``--phases`` runs a subset; a phase that fails is reported under
"problems" and the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis

from app.executions import BatchTask, create_execution
from app.models import TaskSpec
from app.queue import TaskQueue, new_id
from app.redis_client import create_client
from app.settings import Settings
from bench._faults import phase_crash, phase_timeout
from bench._latency import phase_latency
from bench._measure import code_version, setup_logging
from bench._pool import (
    Bench,
    RawConn,
    Results,
    Worker,
)
from bench._procfs import (
    children_of,
    pct,
    run_and_report,
    status_kb,
)
from bench._redis import BenchRedis
from bench._snapshot import Snapshot, load_note, snapshot


def _default_recycle() -> str:
    from app.worker.supervisor import PoolOptions

    return f"default ({PoolOptions().max_tasks_per_child})"



BUDGET_DRAIN = 4_000.0  # tasks/s, --concurrency 2, noop
BUDGET_SUPERVISOR_RSS_MB = 80.0
BUDGET_CHILD_RSS_MB = 120.0
# the latency budgets are in bench/_latency.py, the timeout and crash ones in bench/_faults.py

PHASES = ("drain", "latency", "memory", "timeout", "crash")


# ---------------------------------------------------------------- 1. drain


async def fill_execution(b: Bench, n: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, b.args.batch):
        size = min(b.args.batch, n - start)
        batch = [BatchTask(TaskSpec.build("noop", params={"i": start + k})) for k in range(size)]
        _, part = await create_execution(b.q, batch, trigger_type="bench")
        ids += part
    return ids


async def fill_enqueue(b: Bench, n: int, k: int = 16) -> list[str]:
    specs = [TaskSpec.build("noop", params={"i": i}) for i in range(n)]
    ids = [new_id() for _ in range(n)]

    async def part(j: int) -> None:
        for i in range(j, n, k):
            await b.q.enqueue(specs[i], task_id=ids[i])

    await asyncio.gather(*(part(j) for j in range(k)))
    return ids


async def fill(b: Bench, n: int) -> tuple[list[str], float, str]:
    """Queue ``n`` noop tasks; returns (ids, seconds, how)."""
    t0 = time.perf_counter()
    if b.args.fill == "execution":
        try:
            ids = await fill_execution(b, n)
            return ids, time.perf_counter() - t0, f"create_execution batches of {b.args.batch}"
        except (NameError, AttributeError) as exc:  # a broken create_execution in app/
            b.res.problems.append(f"create_execution failed ({type(exc).__name__}: {exc}); "
                                  "the drain backlog was queued with TaskQueue.enqueue instead")
            await b.client.flushall()
            t0 = time.perf_counter()
    ids = await fill_enqueue(b, n)
    return ids, time.perf_counter() - t0, "TaskQueue.enqueue, 16 concurrent coroutines"


async def watch_drain(b: Bench, w: Worker, n: int) -> tuple[Snapshot, Snapshot]:
    """Snapshots of CPU time at the first completed task seen and at the last one."""
    deadline = time.monotonic() + 60 + n / 500
    first: Snapshot | None = None
    while True:
        snap = await snapshot(b, w)
        if first is None and snap.done > 0:
            first = snap
        if snap.done >= n:
            assert first is not None
            return first, snap
        if w.proc.poll() is not None:
            raise RuntimeError(f"worker exited during the drain:\n{w.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"drain stalled at {snap.done}/{n}:\n{w.tail()}")
        await asyncio.sleep(0.01 if first is None else 0.05)


async def task_times(b: Bench, ids: list[str]) -> tuple[list[float], list[float]]:
    """(started, completed) epoch seconds of every task, from its hash."""
    starts, ends = [], []
    for i in range(0, len(ids), 5000):
        pipe = b.client.pipeline(transaction=False)
        for tid in ids[i:i + 5000]:
            pipe.hmget(b.q.keys.task(tid), ["status", "started_ms", "duration_ms"])
        for status, started, duration in await pipe.execute():
            if status != "completed" or not started or not duration:
                raise RuntimeError(f"task ended {status!r} in the drain")
            starts.append(int(started) / 1000)
            ends.append((int(started) + int(duration)) / 1000)
    return starts, ends


def window_rates(ends: list[float], first: float, width: float = 0.5) -> tuple[float, float]:
    """Slowest and fastest completion rate over full windows of ``width`` s."""
    buckets: dict[int, int] = {}
    for t in ends:
        buckets[int((t - first) // width)] = buckets.get(int((t - first) // width), 0) + 1
    full = [buckets.get(k, 0) / width for k in range(int((max(ends) - first) // width))]
    return (min(full), max(full)) if full else (0.0, 0.0)


async def phase_drain(b: Bench) -> Worker:
    args, res = b.args, b.res
    n = args.drain_n
    await b.client.flushall()
    ids, fill_s, how = await fill(b, n)
    res.add("drain", "queued before the worker starts", f"{n:,} noop",
            f"{how}: {fill_s:.2f} s ({n / fill_s:,.0f}/s)")
    extra = ("--max-tasks-per-child", str(args.max_tasks_per_child)) \
        if args.max_tasks_per_child else ()
    w = b.start_worker("drain", args.drain_concurrency, *extra)
    a, z = await watch_drain(b, w, n)
    starts, ends = await task_times(b, ids)
    t_first, t_last = min(starts), max(ends)
    rate = n / (t_last - t_first)
    lo, hi = window_rates(ends, t_first)
    res.info["drain"] = {"tasks": n, "seconds": t_last - t_first, "rate": rate,
                         "startup_s": t_first - w.spawned_at}
    res.add("drain", f"drain rate, --concurrency {args.drain_concurrency}", f"{rate:,.0f}/s",
            f"{n:,} tasks in {t_last - t_first:.2f} s, first started -> last completed "
            f"(task hashes, 1 ms); 0.5 s windows {lo:,.0f}-{hi:,.0f}/s")
    res.add("drain", "worker start-up (not counted)", f"{t_first - w.spawned_at:.2f} s",
            "spawn of `stockq worker` -> first task started")
    done = z.done - a.done
    if done > 0:
        per = {k: (getattr(z, k) - getattr(a, k)) / done * 1e6
               for k in ("sup", "kids", "redis", "bench")}
        note, load = load_note(a, z)
        res.info["drain"].update(cpu_us_per_task=per, load=load)
        res.add("drain", "CPU per task", f"{sum(per.values()):.0f} us",
                f"supervisor {per['sup']:.0f} + children {per['kids']:.0f} + redis-server "
                f"{per['redis']:.0f} + bench {per['bench']:.0f} us (over {done:,} tasks); "
                + note)
    recycled, spawned = len(w.events("worker.recycled")), len(w.events("worker.spawned"))
    res.add("drain", "children recycled / spawned", f"{recycled} / {spawned}",
            f"max_tasks_per_child={args.max_tasks_per_child or _default_recycle()}")
    res.budget(f"drain rate, noop, --concurrency {args.drain_concurrency}", rate,
               BUDGET_DRAIN, True, "tasks/s")
    return w


# ---------------------------------------------------------------- 4. memory


def phase_memory(b: Bench, w: Worker) -> None:
    res = b.res
    sup_rss = status_kb(w.pid, "VmRSS") / 1024
    sup_hwm = status_kb(w.pid, "VmHWM") / 1024
    kids = sorted(children_of(w.pid))
    kid_rss = {c: status_kb(c, "VmRSS") / 1024 for c in kids}
    kid_hwm = {c: status_kb(c, "VmHWM") / 1024 for c in kids}
    res.info["memory"] = {"supervisor_rss_mb": sup_rss, "supervisor_hwm_mb": sup_hwm,
                          "children_rss_mb": kid_rss, "children_hwm_mb": kid_hwm,
                          "supervisor_rss_at_start_mb": res.info.get("rss_at_start_mb")}
    start = res.info.get("rss_at_start_mb")
    res.add("memory", "supervisor VmRSS, idle after the drain", f"{sup_rss:.1f} MB",
            f"peak (VmHWM) {sup_hwm:.1f} MB" + (f"; {start:.1f} MB before it" if start else ""))
    worst = max(kid_rss.values()) if kid_rss else None
    res.add("memory", f"idle children VmRSS ({len(kids)}: slots + spare)",
            ", ".join(f"{v:.1f}" for v in kid_rss.values()) + " MB",
            "peaks " + ", ".join(f"{v:.1f}" for v in kid_hwm.values()) + " MB")
    res.budget("supervisor RSS, idle after the drain", sup_rss, BUDGET_SUPERVISOR_RSS_MB,
               False, "MB")
    res.budget("idle child RSS (largest)", worst, BUDGET_CHILD_RSS_MB, False, "MB")


# ---------------------------------------------------------------- report


def print_report(res: Results) -> None:
    print("== machine")
    for k, v in res.machine.items():
        print(f"  {k:<18} {v}")
    print("== parameters")
    print("  " + ", ".join(f"{k}={v}" for k, v in res.params.items()))
    print("\n== results")
    width = max((len(r.name) for r in res.rows), default=20)
    vwidth = max((len(r.value) for r in res.rows), default=10)
    print(f"  {'phase':<8} {'measurement':<{width}}  {'value':<{vwidth}}  note")
    print("  " + "-" * (width + vwidth + 40))
    for r in res.rows:
        print(f"  {r.phase:<8} {r.name:<{width}}  {r.value:<{vwidth}}  {r.note}")
    if res.problems:
        print("\n== problems")
        for p in res.problems:
            print(f"  - {p}")
    print("\n== budgets")
    if res.failed:
        print("  (a phase failed, see problems: its budgets are missing here)")
    for bud in res.budgets:
        v = bud["value"]
        shown = "n/a" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3f}")
        print(f"  {bud['result']:<4}  {bud['name']:<46} {shown:>9} {bud['direction']} "
              f"{bud['budget']:,g} {bud['unit']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drain-n", type=int, default=20_000, help="noop tasks drained")
    p.add_argument("--drain-concurrency", type=int, default=2)
    p.add_argument("--fill", choices=("execution", "enqueue"), default="execution",
                   help="how the drain backlog is queued: create_execution batches (falls "
                        "back to enqueue when create_execution is broken) or TaskQueue.enqueue")
    p.add_argument("--batch", type=int, default=5_000, help="tasks per create_execution")
    p.add_argument("--max-tasks-per-child", type=int, default=0,
                   help="passed to the drain worker (0: the worker's default)")
    p.add_argument("--latency-n", type=int, default=500, help="tasks per latency run")
    p.add_argument("--latency-gap-ms", type=float, default=2.0,
                   help="pause between latency tasks, so the pool is idle when one comes")
    p.add_argument("--timeout-repeats", type=int, default=5)
    p.add_argument("--crash-repeats", type=int, default=2)
    p.add_argument("--lease", type=float, default=5.0, help="STOCKQ_LEASE_SECONDS (crash)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                   help="STOCKQ_LOG_LEVEL of the workers (default info, as in production)")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--keep-logs", metavar="DIR", help="write the worker logs here and keep them")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = p.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        p.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


async def machine_info(b: Bench) -> dict[str, Any]:
    info = await b.client.info("server")
    return {
        "cpu_count": f"{os.cpu_count()} (usable {len(os.sched_getaffinity(0))})",
        "platform": platform.platform(),
        "python": sys.version.split()[0] + f" ({platform.python_implementation()}, "
                  f"{sys.executable})",
        "redis-py": redis.__version__,
        "redis-server": f"{info['redis_version']} (port {b.server.port})",
        "code": code_version(),
        "worker logs": f"JSON, level {b.args.log_level}, to files in {b.log_dir}"
                       + ("" if b.args.keep_logs else " (removed at the end; --keep-logs DIR)"),
        "loadavg at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


async def phase_baseline(b: Bench, n: int = 500) -> None:
    """The transport floor: PING round trips from this process over a bare connection."""
    conn = await RawConn.open(b.server.port)
    try:
        rtts = []
        for _ in range(n):
            t0 = time.perf_counter()
            await conn.call("PING")
            rtts.append((time.perf_counter() - t0) * 1e6)
            await asyncio.sleep(0.001)  # idle between pings, like the latency phase
    finally:
        conn.close()
    b.res.info["ping_rtt_us"] = {"p50": statistics.median(rtts), "p99": pct(rtts, 0.99)}
    b.res.add("baseline", "Redis PING round trip, idle, bare connection",
              f"p50 {statistics.median(rtts):.0f} / p99 {pct(rtts, 0.99):.0f} us",
              "two process hops on this machine (loopback TCP, wake-ups included); "
              "submit -> done takes 8 hops: bench-Redis, Redis-supervisor (doorbell), "
              "claim, supervisor-child and back, complete, notification")


async def pool_phases(b: Bench, phases: set[str]) -> None:
    """drain, then memory and latency on the same (idle) pool."""
    if "drain" in phases:
        w = b.start_worker("drain-rss", b.args.drain_concurrency)  # RSS before any task
        await w.wait_started()
        await asyncio.sleep(0.5)
        b.res.info["rss_at_start_mb"] = status_kb(w.pid, "VmRSS") / 1024
        w.stop()
        w = await phase_drain(b)
    else:
        w = b.start_worker("pool", b.args.drain_concurrency)
        await w.wait_started()
    await b.wait_idle()
    await asyncio.sleep(1.0)
    if "memory" in phases:
        phase_memory(b, w)
    if "latency" in phases:
        await phase_latency(b, w)
    w.stop()


async def run_phases(b: Bench) -> None:
    """Each group of phases in turn; an error is recorded and the next group runs."""
    phases = set(b.args.phases.split(","))
    groups: list[tuple[str, Any]] = [("baseline", phase_baseline)]
    if phases & {"drain", "latency", "memory"}:
        groups.append(("drain/memory/latency", lambda b: pool_phases(b, phases)))
    if "timeout" in phases:
        groups.append(("timeout", phase_timeout))
    if "crash" in phases:
        groups.append(("crash", phase_crash))
    for name, run_group in groups:
        try:
            await run_group(b)
        except Exception as exc:  # report it, stop what the group started, go on
            b.res.problems.append(f"{name} phase failed: {type(exc).__name__}: {exc}")
            b.res.failed = True
            for w in b.workers:
                w.kill()


async def run(args: argparse.Namespace) -> Results:
    res = Results(params={k: v for k, v in vars(args).items() if k not in ("json",)})
    log_dir = Path(args.keep_logs or tempfile.mkdtemp(prefix="stockq-bench-worker-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    setup_logging("json")  # this process: production log config, rendered to /dev/null
    with BenchRedis() as server:
        settings = Settings(redis_url=server.url, plugins=())
        client = create_client(settings)
        b = Bench(args, server, client, TaskQueue(client, settings), res, log_dir)
        try:
            res.machine = await machine_info(b)
            started = time.perf_counter()
            await run_phases(b)
            res.info["bench_seconds"] = time.perf_counter() - started
            res.machine["loadavg at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        finally:
            for w in b.workers:
                w.kill()
            await b.q.aclose()
            await client.aclose()
            if not args.keep_logs:
                shutil.rmtree(log_dir, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run_and_report(run(args), print_report, args.json, lambda res: {
        "machine": res.machine, "params": res.params,
        "rows": [asdict(r) for r in res.rows], "info": res.info,
        "budgets": res.budgets, "problems": res.problems,
    })
    return 1 if res.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
