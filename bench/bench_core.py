"""Core throughput / latency / memory benchmark of the stockq Redis task queue.

Run from the repository root::

    .venv/bin/python -m bench.bench_core [--n 5000] [--json out.json]

It starts its own redis-server on a free loopback port (never 6379), drives it through
the real :class:`app.queue.TaskQueue` over the production client
(:func:`app.redis_client.create_client`), prints a results table and compares the
numbers with the budgets.  Every measurement starts from an empty database (FLUSHALL)
unless it is one of the "pending" (backlog) rows.

Columns: ``rate/s`` is end to end as the caller sees it (our Python + redis-py + the
round trip + the script); ``srv us/op`` is the time Redis spent inside the scripts for
one operation (INFO commandstats, EVALSHA usec), i.e. how long each op blocks Redis;
``cli cpu us/op`` is the CPU this Python process burnt per operation (time.process_time:
our code, redis-py, asyncio, syscalls).  The last two hardly depend on what else the
machine is doing, the rates do: compare ``loadavg`` with ``cpu_count``.  Rows marked
``A/B`` measure two variants in alternating slices (medians), so a comparison between
them holds even on a busy machine; the "0 pending" side of the backlog comparison runs
in db 1 of the same server while db 0 holds the backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import pickle
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from typing import Any

import redis

from app import queries
from app.executions import BatchTask, create_execution
from app.models import Priority
from app.producer import Producer
from app.queue import TaskQueue
from app.redis_client import create_client
from app.settings import Settings
from bench._measure import (
    Results,
    Row,
    ab_rows,
    claim_complete_op,
    claim_complete_seq,
    code_version,
    enqueue_concurrent,
    enqueue_op,
    enqueue_seq,
    evalsha_usec,
    latencies,
    setup_logging,
    spec,
    timed_block,
    timed_rate,
    used_memory,
    warm_up,
)
from bench._procfs import run_and_report
from bench._redis import BenchRedis
from bench._routing import phase_routing_ab

BUDGET_ENQUEUE = 7_000.0  # tasks/s, one client, sequential
BUDGET_BULK = 50_000.0  # tasks/s, create_execution of 10k tasks
BUDGET_CLAIM_COMPLETE = 5_000.0  # tasks/s, the Redis path of a default worker (2 slots)
BUDGET_BYTES_PER_TASK = 2048.0  # Redis bytes per finished (retained) task



# ---------------------------------------------------------------- phases


async def phase_baseline(q: TaskQueue, res: Results, n: int) -> None:
    """The transport floor right now: a trivial script over the same client, bare and
    with the argument shape of an enqueue (12 keys, 4 args incl. a ~450-byte JSON)."""
    client = q.client
    await client.flushall()
    sha = await client.script_load("return 1")
    fields = spec().to_fields("00000000-0000-0000-0000-000000000000")
    keys = q._fixed + [q.keys.dedup(fields["dedup_key"])]
    args = [q.keys.prefix, 1767225600000, "2026-01-01T00:00:00.000+00:00",
            json.dumps(fields)]

    async def bare(i: int) -> None:
        await client.evalsha(sha, 0)  # type: ignore[misc]

    async def shaped(i: int) -> None:
        await client.evalsha(sha, len(keys), *keys, *args)  # type: ignore[misc,arg-type]

    res.rows.append(await timed_rate(client, "baseline: EVALSHA 'return 1', no args", n, bare,
                                     "redis-py asyncio floor"))
    res.rows.append(await timed_rate(client, "baseline: EVALSHA 'return 1', enqueue's args", n,
                                     shaped, "12 keys + 4 args"))

    # What a minimal queue's enqueue costs right now on this machine: a sync redis-py
    # LPUSH of a ~300-byte pickled message (Huey's enqueue is this one command).
    sync_client = redis.Redis.from_url(q.settings.redis_url)
    payload = pickle.dumps({"id": "00000000-0000-0000-0000-000000000000", "name": "noop",
                            "args": (), "kwargs": {"i": 1}, "retries": 3, "eta": None,
                            "priority": 1, "expires": None, "on_complete": None})

    async def lpush(i: int) -> None:
        sync_client.lpush("bench:minimal-queue", payload)

    res.rows.append(await timed_rate(client, "baseline: sync redis-py LPUSH (a minimal enqueue)",
                                     n, lpush, "the one command of Huey's enqueue; no index"))
    sync_client.close()


async def phase_empty(q: TaskQueue, res: Results, n: int) -> None:
    """1, 4, 5 and the '0 pending' half of 6: sequential enqueue then claim+complete."""
    client = q.client
    await client.flushall()
    mem0 = await used_memory(client)
    specs = [spec() for _ in range(n)]
    res.rows.append(await timed_rate(
        client, "enqueue, 1 client, sequential (0 pending)", n,
        enqueue_op(q, specs), "1 EVALSHA per task"))
    res.rows.append(await timed_rate(
        client, "claim+complete, 1 client, sequential (0 pending)", n,
        claim_complete_op(q), "2 EVALSHA per task"))

    # 5. memory retained per finished task (hash with TTL + index entries)
    mem1 = await used_memory(client)
    all_ids = await client.zrange(q.keys.all_index, 0, -1)
    sample = all_ids[:: max(1, len(all_ids) // 200)][:200]
    hash_bytes = []
    for tid in sample:
        hash_bytes.append(int(await client.memory_usage(q.keys.task(tid), samples=0) or 0))
    key = q.keys.task(sample[0])
    encoding = await client.object("encoding", key)
    fields = await client.hlen(key)  # type: ignore[misc]
    ttl = await client.ttl(key)
    status = await client.hget(key, "status")  # type: ignore[misc]
    longest = max(len(v) for v in (await client.hgetall(key)).values())  # type: ignore[misc]
    doorbell = int(await client.memory_usage(q.keys.doorbell, samples=0) or 0)
    per_task = (mem1 - mem0) / n
    res.info["memory"] = {
        "tasks": n,
        "used_memory_before": mem0,
        "used_memory_after": mem1,
        "bytes_per_finished_task": per_task,
        "task_hash_memory_usage_avg": statistics.fmean(hash_bytes),
        "task_hash_status": status,
        "task_hash_encoding": encoding,
        "task_hash_fields": fields,
        "task_hash_longest_value": longest,
        "task_hash_ttl_s": ttl,
        "doorbell_list_bytes": doorbell,
        "keys_in_db": await client.dbsize(),
    }


async def phase_logs_ab(q: TaskQueue, res: Results, n: int) -> None:
    """Sequential enqueue with the info events rendered vs filtered (cost of logging),
    in alternating slices."""
    setup_logging("off")
    try:
        quiet = TaskQueue(q.client, q.settings)
    finally:
        setup_logging(res.params["logs"])
    await q.client.flushall()
    on = [spec() for _ in range(n)]
    off = [spec() for _ in range(n)]
    res.rows += await ab_rows(q.client, {
        "enqueue, 1 client, sequential, A/B: logs on": enqueue_op(q, on),
        "enqueue, 1 client, sequential, A/B: logs off": enqueue_op(quiet, off),
    }, n, 10, "0 pending")


async def phase_producer(q: TaskQueue, res: Results, n: int) -> None:
    """Sequential enqueue through the synchronous Producer (blocking socket + hiredis)."""
    client = q.client
    await client.flushall()
    specs = [spec() for _ in range(n)]
    with Producer(q.settings) as producer:

        async def op(i: int) -> None:
            _, created = producer.enqueue(specs[i])
            assert created

        res.rows.append(await timed_rate(
            client, "enqueue, 1 client, sequential, sync Producer (0 pending)", n, op,
            f"app.producer.Producer: 1 EVALSHA per task, blocking socket, polls "
            f"<= {q.settings.producer_spin_us} us for the reply"))

    # What polling for the reply buys (and costs in client CPU), in alternating slices.
    await client.flushall()
    polls, sleeps = [spec() for _ in range(n)], [spec() for _ in range(n)]
    with Producer(replace(q.settings, producer_spin_us=200)) as polling, \
            Producer(replace(q.settings, producer_spin_us=0)) as sleeping:

        async def poll_op(i: int) -> None:
            polling.enqueue(polls[i])

        async def sleep_op(i: int) -> None:
            sleeping.enqueue(sleeps[i])

        res.rows += await ab_rows(client, {
            "enqueue, sync Producer, A/B: polls <= 200 us for the reply": poll_op,
            "enqueue, sync Producer, A/B: sleeps at once (SPIN_US=0)": sleep_op,
        }, n, 10, "0 pending")


async def phase_chained(q: TaskQueue, res: Results, n: int) -> None:
    """complete(task, claim_for=worker): ends a task and claims the next in one round
    trip (only when this version of TaskQueue.complete has ``claim_for``)."""
    if "claim_for" not in inspect.signature(q.complete).parameters:
        return
    client = q.client
    await client.flushall()
    await enqueue_seq(q, [spec() for _ in range(n + 1)])
    first = await q.claim("bench-worker")
    assert first is not None
    state: list[Any] = [first]

    async def op(i: int) -> None:
        nxt = await q.complete(state[0], claim_for="bench-worker")
        assert nxt is not None
        state[0] = nxt

    res.rows.append(await timed_rate(
        client, "complete(claim_for=...) chained, 1 client (0 pending)", n, op,
        "1 EVALSHA per task: ends one, claims the next"))

    # two chains on the same client, as the two slots of `stockq worker --concurrency 2`
    await client.flushall()
    await enqueue_seq(q, [spec() for _ in range(n + 2)])
    heads = [await q.claim("bench-a"), await q.claim("bench-b")]

    async def chain(head: Any, worker: str, count: int) -> None:
        for _ in range(count):
            head = await q.complete(head, claim_for=worker)

    async def both() -> None:
        await asyncio.gather(chain(heads[0], "bench-a", n // 2), chain(heads[1], "bench-b", n // 2))

    res.rows.append(await timed_block(
        client, "complete(claim_for=...) 2 chains, 1 client (0 pending)", n // 2 * 2, both,
        "2 coroutines pipelined on one connection: `stockq worker`'s 2 default slots here"))


async def phase_concurrent(q: TaskQueue, res: Results, n: int, k: int) -> None:
    client = q.client
    await client.flushall()
    specs = [spec() for _ in range(n)]
    before = await client.info("clients")
    row = await timed_block(
        client, f"enqueue, {k} coroutines sharing 1 client (0 pending)", n,
        lambda: enqueue_concurrent(q, specs, k), "")
    pool = client.connection_pool
    conns = getattr(pool, "_created_connections", None)
    after = await client.info("clients")
    row.note = (f"pool opened {conns} connections" if conns is not None else
                f"connected_clients {before['connected_clients']}->{after['connected_clients']}")
    res.rows.append(row)


async def phase_bulk(q: TaskQueue, res: Results, size: int, reps: int) -> None:
    client = q.client
    for variant in ("no deps", "chain deps"):
        totals: list[float] = []
        servers: list[float] = []
        cpus: list[float] = []
        for _ in range(reps):
            await client.flushall()
            if variant == "no deps":
                batch = [BatchTask(spec()) for _ in range(size)]
            else:
                batch = [BatchTask(spec(), depends_on=(i - 1,) if i else ())
                         for i in range(size)]
            gc.collect()
            c0, u0 = await evalsha_usec(client)
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            _, ids = await create_execution(q, batch)
            dt = time.perf_counter() - t0
            cpus.append(time.process_time() - cpu0)
            _, u1 = await evalsha_usec(client)
            assert len(ids) == size
            totals.append(dt)
            servers.append((u1 - u0) / 1e6)
        ready = await client.llen(q.keys.queue(int(Priority.NORMAL)))  # type: ignore[misc]
        dt = statistics.median(totals)
        srv = statistics.median(servers)
        res.rows.append(Row(
            f"bulk create_execution {size} tasks, {variant}", size, dt, size / dt,
            dt / size * 1e6, srv / size * 1e6, statistics.median(cpus) / size * 1e6,
            f"1 call: {dt * 1000:.0f} ms end to end, blocks Redis {srv * 1000:.0f} ms "
            f"(median of {reps}; {ready} ready after)"))


async def fill_backlog(q: TaskQueue, total: int, batch: int) -> tuple[float, int]:
    """``total`` pending LOW-priority tasks via create_execution batches."""
    t0 = time.perf_counter()
    made = 0
    while made < total:
        size = min(batch, total - made)
        await create_execution(
            q, [BatchTask(spec(Priority.LOW)) for _ in range(size)], trigger_type="bench")
        made += size
    return time.perf_counter() - t0, made


async def phase_backlog(q: TaskQueue, res: Results, n: int, backlog: int, batch: int,
                        calls: int) -> None:
    """6 (the 'with backlog' half) and 7."""
    client = q.client
    await client.flushall()
    mem0 = await used_memory(client)
    fill_s, made = await fill_backlog(q, backlog, batch)
    mem1 = await used_memory(client)
    res.info["backlog"] = {
        "pending_tasks": made,
        "fill_seconds": fill_s,
        "fill_rate": made / fill_s,
        "bytes_per_pending_task": (mem1 - mem0) / made,
        "how": f"create_execution batches of {batch}, priority LOW (queue 2)",
    }
    label = f"{made // 1000}k pending"
    # the same measurements against an empty database (db 1) of the same server, in
    # alternating slices, so the comparison does not depend on other load
    empty_settings = replace(q.settings, redis_url=q.settings.redis_url.rsplit("/", 1)[0] + "/1")
    empty_client = create_client(empty_settings)
    try:
        await empty_client.flushdb()
        empty = TaskQueue(empty_client, empty_settings)
        await enqueue_seq(empty, [spec() for _ in range(50)])  # warm the connection
        await claim_complete_seq(empty, 50)
        res.rows += await ab_rows(client, {
            "enqueue, 1 client, sequential, A/B: 0 pending (db 1)":
                enqueue_op(empty, [spec() for _ in range(n)]),
            f"enqueue, 1 client, sequential, A/B: {label} (db 0)":
                enqueue_op(q, [spec() for _ in range(n)]),
        }, n, 10, "1 EVALSHA per task")
        res.rows += await ab_rows(client, {
            "claim+complete, 1 client, sequential, A/B: 0 pending (db 1)":
                claim_complete_op(empty),
            f"claim+complete, 1 client, sequential, A/B: {label} (db 0)":
                claim_complete_op(q),
        }, n, 10, "2 EVALSHA per task; db 0 claims the fresh NORMAL tasks")
    finally:
        await empty_client.aclose()
    res.rows.append(await timed_rate(
        client, f"claim+complete from the backlog itself ({label})", n,
        claim_complete_op(q), "pops queue 2; tasks of executions"))

    pending = await client.zcard(q.keys.status_index("pending"))
    note = f"{pending} pending"
    res.latencies.append(await latencies(
        "queries.queue_stats", calls, lambda: queries.queue_stats(q), note))
    res.latencies.append(await latencies(
        "queries.list_tasks(limit=50)", calls, lambda: queries.list_tasks(q, limit=50), note))
    res.latencies.append(await latencies(
        "queries.list_tasks(status=pending, limit=50)", calls,
        lambda: queries.list_tasks(q, status="pending", limit=50), note))


# ---------------------------------------------------------------- report


# The row each budget of the issue is judged on: the client path built for that use.
# Rows of other paths are listed as "ref": sequential one-at-a-time enqueues through the
# asyncio TaskQueue (the sidecar and scheduler enqueue one task per request or fire,
# never in a loop), and claim + complete as two round trips (no worker does that).
BUDGET_ROWS = {
    "enqueue, 1 client, sequential, sync Producer (0 pending)": BUDGET_ENQUEUE,
    # the worker's path: one round trip ends a task and claims the next, and the slots
    # of one supervisor (default: one per CPU, 2 here) share its connection
    "complete(claim_for=...) 2 chains, 1 client (0 pending)": BUDGET_CLAIM_COMPLETE,
    "bulk create_execution 10000 tasks, no deps": BUDGET_BULK,
    "bulk create_execution 10000 tasks, chain deps": BUDGET_BULK,
}


def budgets(res: Results) -> None:
    checks: list[tuple[str, float | None, float, bool, bool]] = []  # + higher, judged
    for r in res.rows:
        if r.name in BUDGET_ROWS:
            checks.append((r.name, r.rate, BUDGET_ROWS[r.name], True, True))
        elif r.name.startswith(("enqueue, 1 client, sequential", "enqueue, sync Producer")):
            checks.append((r.name, r.rate, BUDGET_ENQUEUE, True, False))
        elif r.name.startswith(("claim+complete, 1 client", "complete(claim_for")):
            checks.append((r.name, r.rate, BUDGET_CLAIM_COMPLETE, True, False))
    mem = res.info.get("memory", {}).get("bytes_per_finished_task")
    checks.append(("Redis bytes per finished task", mem, BUDGET_BYTES_PER_TASK, False, True))
    for name, value, budget, higher, judged in checks:
        ok = value is not None and (value >= budget if higher else value <= budget)
        result = ("PASS" if ok else "MISS") if judged else ("ref+" if ok else "ref-")
        res.budgets.append({"name": name, "value": value, "budget": budget,
                            "direction": ">=" if higher else "<=", "result": result})


def print_report(res: Results) -> None:
    m = res.machine
    print("== machine")
    for k, v in m.items():
        print(f"  {k:<22} {v}")
    print("== parameters")
    print("  " + ", ".join(f"{k}={v}" for k, v in res.params.items()))

    print("\n== throughput")
    head = (f"  {'measurement':<64} {'N':>7} {'secs':>7} {'rate/s':>9} {'us/op':>8} "
            f"{'srv us/op':>9} {'cli cpu us/op':>13}  note")
    print(head)
    print("  " + "-" * (len(head) + 20))
    for r in res.rows:
        srv = f"{r.server_us_per_op:9.1f}" if r.server_us_per_op is not None else f"{'-':>9}"
        cli = (f"{r.client_cpu_us_per_op:13.1f}" if r.client_cpu_us_per_op is not None
               else f"{'-':>13}")
        print(f"  {r.name:<64} {r.n:>7} {r.seconds:7.3f} {r.rate:9,.0f} {r.us_per_op:8.1f} "
              f"{srv} {cli}  {r.note}")

    print("\n== latency (backlog)")
    print(f"  {'call':<46} {'calls':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for lat in res.latencies:
        print(f"  {lat.name:<46} {lat.calls:>5} {lat.p50_ms:8.3f} {lat.p90_ms:8.3f} "
              f"{lat.p99_ms:8.3f} {lat.mean_ms:8.3f}  {lat.note}")

    mem = res.info.get("memory")
    if mem:
        print("\n== memory per finished task (completed, TTL retained)")
        print(f"  used_memory {mem['used_memory_before']:,} -> {mem['used_memory_after']:,} "
              f"for {mem['tasks']:,} tasks = {mem['bytes_per_finished_task']:,.0f} bytes/task "
              "(hash + index:all + index:plugin + index:status:completed entries)")
        print(f"  task hash alone (MEMORY USAGE, avg of sample): "
              f"{mem['task_hash_memory_usage_avg']:,.0f} bytes")
        print(f"  OBJECT ENCODING of a finished task hash: {mem['task_hash_encoding']} "
              f"(status={mem['task_hash_status']}, {mem['task_hash_fields']} fields, "
              f"longest value {mem['task_hash_longest_value']} bytes, "
              f"TTL {mem['task_hash_ttl_s']} s)")
        print(f"  doorbell list (capped, shared): {mem['doorbell_list_bytes']:,} bytes; "
              f"keys in db: {mem['keys_in_db']:,}")
    bl = res.info.get("backlog")
    if bl:
        print("\n== backlog fill")
        print(f"  {bl['pending_tasks']:,} pending tasks in {bl['fill_seconds']:.2f} s "
              f"({bl['fill_rate']:,.0f}/s) via {bl['how']}; "
              f"{bl['bytes_per_pending_task']:,.0f} bytes/pending task")

    print("\n== budgets (PASS/MISS: the budgeted client path; ref+/ref-: another path, "
          "above/below the same figure)")
    for b in res.budgets:
        v = b["value"]
        shown = "n/a" if v is None else f"{v:,.0f}"
        print(f"  {b['result']:<4}  {b['name']:<64} {shown:>9} {b['direction']} "
              f"{b['budget']:,.0f}")


# ---------------------------------------------------------------- main

# what the claims of the chained rows advertise: a worker with the built-in and the
# example plugins (the demo daemon's), so they pay for the routing check as it does
ROUTED_PLUGINS = ["tushare_trade_calendar", "tushare_stock_basic", "tushare_daily",
                  "tushare_adj_factor", "tushare_daily_basic", "noop", "sleep", "fail"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_core", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000,
                   help="tasks for the sequential enqueue / claim+complete / memory runs")
    p.add_argument("--concurrent-n", type=int, default=10000,
                   help="tasks for the concurrent enqueue run")
    p.add_argument("--concurrency", "-k", type=int, default=16,
                   help="coroutines sharing one client in the concurrent enqueue run")
    p.add_argument("--bulk-size", type=int, default=10000, help="tasks per create_execution")
    p.add_argument("--bulk-reps", type=int, default=3, help="repetitions of each bulk variant")
    p.add_argument("--backlog", type=int, default=200_000,
                   help="pending tasks for the backlog runs")
    p.add_argument("--backlog-batch", type=int, default=10_000,
                   help="tasks per create_execution when filling the backlog")
    p.add_argument("--latency-calls", type=int, default=200, help="calls per latency measurement")
    p.add_argument("--logs", choices=("json", "off"), default="json",
                   help="json: production log config (info, JSON) rendered to /dev/null "
                        "(default); off: info events filtered")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> Results:
    res = Results()
    res.params = {k: v for k, v in vars(args).items() if k != "json"}
    with BenchRedis() as server:
        settings = Settings(redis_url=server.url, plugins=())
        client = create_client(settings)
        try:
            logging_desc = setup_logging(args.logs)
            q = TaskQueue(client, settings)
            advertise = getattr(q, "advertise", None)
            if advertise is not None:  # claims route as a worker's do (capability routing)
                advertise(ROUTED_PLUGINS, ["default"])
            info = await client.info("server")
            meminfo = await client.info("memory")
            try:
                import hiredis

                parser = f"hiredis {hiredis.__version__}"
            except ImportError:
                parser = "pure Python"
            res.machine = {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
                "redis-py": f"{redis.__version__} (parser: {parser})",
                "redis-server": f"{info['redis_version']} ({meminfo.get('mem_allocator', '?')}, "
                                f"port {server.port})",
                "code": code_version(),
                "logging": logging_desc,
                "loadavg at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                "note": "client and server share the same CPUs, loopback TCP",
            }
            await warm_up(q)
            started = time.perf_counter()
            await phase_baseline(q, res, args.n)
            await phase_empty(q, res, args.n)
            await phase_producer(q, res, args.n)
            await phase_chained(q, res, args.n)
            await phase_routing_ab(q, res, args.n, ROUTED_PLUGINS)
            if args.logs == "json":
                await phase_logs_ab(q, res, args.n)
            await phase_concurrent(q, res, args.concurrent_n, args.concurrency)
            await phase_bulk(q, res, args.bulk_size, args.bulk_reps)
            await phase_backlog(q, res, args.n, args.backlog, args.backlog_batch,
                                args.latency_calls)
            res.info["bench_seconds"] = time.perf_counter() - started
            res.machine["loadavg at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        finally:
            await q.aclose()
            await client.aclose()
    budgets(res)
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_and_report(run(args), print_report, args.json, lambda res: {
        "machine": res.machine, "params": res.params,
        "rows": [asdict(r) for r in res.rows],
        "latencies": [asdict(x) for x in res.latencies],
        "info": res.info, "budgets": res.budgets,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
