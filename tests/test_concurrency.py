"""Several OS processes, each with its own Redis client, claim and complete tasks from one
shared queue (and enqueue while others claim): every task runs exactly once."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.queries import queue_stats
from app.queue import TaskQueue
from tests.helpers_concurrency import PRODUCERS_DONE, consumer_main, producer_main, task_spec

CTX = multiprocessing.get_context("spawn")
TOTAL = 2000
CONSUMERS = 4


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Processes a test starts; any still alive at the end are terminated (ours only)."""
    started: list[Any] = []
    yield started
    for p in started:
        if p.is_alive():
            p.terminate()
            p.join(10)


def run_all(started: list[Any], jobs: list[tuple[Callable[..., None], tuple[Any, ...]]],
            timeout: float = 60) -> None:
    for target, args in jobs:
        p = CTX.Process(target=target, args=args)
        p.start()
        started.append(p)
    for p in started:
        p.join(timeout)
    assert [p.exitcode for p in started] == [0] * len(started)


def read(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


async def enqueue_all(queue: TaskQueue, numbers: range) -> dict[int, str]:
    ids: dict[int, str] = {}
    numbers_list = list(numbers)
    for i in range(0, len(numbers_list), 100):  # 100 in flight at a time
        chunk = numbers_list[i:i + 100]
        results = await asyncio.gather(*(queue.enqueue(task_spec(n)) for n in chunk))
        for n, (task_id, created) in zip(chunk, results, strict=True):
            assert created
            ids[n] = task_id
    return ids


def consumer_jobs(url: str, barrier: Any, producers: int, tmp_path: Path
                  ) -> tuple[list[tuple[Callable[..., None], tuple[Any, ...]]], list[Path]]:
    outs = [tmp_path / f"consumer-{i}.json" for i in range(CONSUMERS)]
    jobs: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
        (consumer_main, (url, f"proc-{i}", barrier, producers, str(out)))
        for i, out in enumerate(outs)
    ]
    return jobs, outs


async def assert_all_completed_once(queue: TaskQueue, client: aioredis.Redis,
                                    claims: dict[str, list[dict[str, Any]]],
                                    all_ids: set[str]) -> None:
    """Every task claimed by exactly one process, once, and completed; nothing left over."""
    per_process = [{c["task_id"] for c in cl} for cl in claims.values()]
    flat = [c["task_id"] for cl in claims.values() for c in cl]
    assert len(flat) == len(set(flat)) == TOTAL  # nobody claimed a task twice
    assert set().union(*per_process) == all_ids
    for a in range(len(per_process)):
        for b in range(a + 1, len(per_process)):
            assert not per_process[a] & per_process[b]
    assert sum(1 for ids in per_process if ids) >= 2  # the work really was shared
    for worker, cl in claims.items():
        assert all(c["attempt"] == 1 and c["worker"] == worker and c["status"] == "running"
                   and c["priority"] == c["n"] % 3 for c in cl)

    owner = {c["task_id"]: w for w, cl in claims.items() for c in cl}
    number = {c["task_id"]: c["n"] for cl in claims.values() for c in cl}
    async with client.pipeline(transaction=False) as pipe:
        for tid in sorted(all_ids):
            pipe.hgetall(queue.keys.task(tid))
        hashes = await pipe.execute()
    for tid, h in zip(sorted(all_ids), hashes, strict=True):
        assert h["status"] == "completed", (tid, h)
        assert h["attempt"] == "1"
        assert h["worker"] == owner[tid]
        assert h["records_processed"] == str(number[tid])
        assert json.loads(h["result"]) == {"by": owner[tid]}
        assert "lease_token" not in h

    assert await client.scard("stock:running_tasks") == 0
    assert await client.zcard("stock:leases") == 0
    assert await client.zcard("stock:delayed") == 0
    for p in range(3):
        assert await client.llen(f"stock:task_queue:{p}") == 0
    counters = await client.hgetall("stock:stats")  # type: ignore[misc]
    # durations vary (real clock), but every attempt counts in exactly one bucket
    assert sum(int(v) for k, v in counters.items()
               if k.startswith("duration_bucket:")) == TOTAL
    assert {k: v for k, v in counters.items() if not k.startswith("duration_")} == {
        "enqueued": str(TOTAL), "completed": str(TOTAL), "completed:noop": str(TOTAL),
    }
    stats = await queue_stats(queue)
    assert stats.ready == {0: 0, 1: 0, 2: 0}
    assert stats.running == stats.leased == stats.delayed == 0
    assert stats.by_status == {"pending": 0, "running": 0, "retrying": 0,
                               "completed": TOTAL, "failed": 0, "cancelled": 0}
    assert await client.zcard("stock:index:all") == TOTAL
    assert not await client.keys("stock:dedup:*")  # ended tasks release their dedup keys


async def test_processes_share_a_prefilled_queue(
    queue: TaskQueue, client: aioredis.Redis, redis_url: str, tmp_path: Path,
    processes: list[Any],
) -> None:
    ids = await enqueue_all(queue, range(TOTAL))
    assert len(set(ids.values())) == TOTAL
    assert [await client.llen(f"stock:task_queue:{p}") for p in range(3)] == [667, 667, 666]
    # the order claims must follow: priority 0 first; within one, oldest first (RPOP end)
    pop_order = [tid for p in range(3)
                 for tid in reversed(await client.lrange(f"stock:task_queue:{p}", 0, -1))]
    position = {tid: i for i, tid in enumerate(pop_order)}

    barrier = CTX.Barrier(CONSUMERS)
    jobs, outs = consumer_jobs(redis_url, barrier, 0, tmp_path)
    run_all(processes, jobs)

    claims = {r["worker_id"]: r["claimed"] for r in map(read, outs)}
    await assert_all_completed_once(queue, client, claims, set(ids.values()))
    for cl in claims.values():
        assert all(ids[c["n"]] == c["task_id"] for c in cl)
        # the queue was full before anyone claimed, so each process's claims follow the
        # global pop order: high, then normal, then low; within a priority, FIFO
        seen = [position[c["task_id"]] for c in cl]
        assert seen == sorted(seen)
        assert [c["priority"] for c in cl] == sorted(c["priority"] for c in cl)


async def test_producers_and_consumers_run_at_once(
    queue: TaskQueue, client: aioredis.Redis, redis_url: str, tmp_path: Path,
    processes: list[Any],
) -> None:
    producers = 2
    barrier = CTX.Barrier(CONSUMERS + producers)
    jobs, outs = consumer_jobs(redis_url, barrier, producers, tmp_path)
    half = TOTAL // 2
    prod_outs = [tmp_path / "producer-0.json", tmp_path / "producer-1.json"]
    jobs += [
        (producer_main, (redis_url, 0, half, barrier, str(prod_outs[0]))),
        (producer_main, (redis_url, half, TOTAL, barrier, str(prod_outs[1]))),
    ]
    run_all(processes, jobs)

    enqueued = [e for r in map(read, prod_outs) for e in r["enqueued"]]
    assert sorted(n for n, _, _ in enqueued) == list(range(TOTAL))
    assert all(created for _, _, created in enqueued)
    ids = {n: tid for n, tid, _ in enqueued}
    assert await client.get(PRODUCERS_DONE) == str(producers)
    await client.delete(PRODUCERS_DONE)

    claims = {r["worker_id"]: r["claimed"] for r in map(read, outs)}
    await assert_all_completed_once(queue, client, claims, set(ids.values()))
    for cl in claims.values():
        assert all(ids[c["n"]] == c["task_id"] for c in cl)


async def test_concurrent_duplicate_submissions_create_each_task_once(
    queue: TaskQueue, client: aioredis.Redis, redis_url: str, tmp_path: Path,
    processes: list[Any],
) -> None:
    """Three producers submit the same 300 items at once: each item becomes one task."""
    items, producers = 300, 3
    barrier = CTX.Barrier(producers)
    outs = [tmp_path / f"dup-{i}.json" for i in range(producers)]
    run_all(processes, [(producer_main, (redis_url, 0, items, barrier, str(o))) for o in outs])

    by_item: dict[int, list[tuple[str, bool]]] = {}
    for r in map(read, outs):
        for n, tid, created in r["enqueued"]:
            by_item.setdefault(n, []).append((tid, created))
    assert sorted(by_item) == list(range(items))
    for n, seen in by_item.items():
        assert len({tid for tid, _ in seen}) == 1, n  # every producer got the same id
        assert sum(created for _, created in seen) == 1, n  # and only one created it
    assert await client.zcard("stock:index:all") == items
    assert await client.hget("stock:stats", "enqueued") == str(items)
    stats = await queue_stats(queue)
    assert sum(stats.ready.values()) == items
    assert stats.by_status["pending"] == items
