"""Process bodies for tests/test_concurrency.py.

Each function runs in its own OS process (multiprocessing "spawn" context), with its
own event loop and its own Redis client, and writes what it did to a JSON file the test
reads afterwards.  Module-level functions only, so spawn can pickle them by name.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from app.logs import configure_logging
from app.models import TaskSpec
from app.queue import TaskQueue
from app.redis_client import create_client
from app.settings import Settings

PRODUCERS_DONE = "test:producers_done"  # counter the producers bump when they finish


def task_spec(n: int) -> TaskSpec:
    """Work item ``n``: distinct params (no dedup), priority cycling high/normal/low."""
    return TaskSpec.build("noop", params={"n": n}, priority=n % 3)


def _queue(url: str) -> tuple[aioredis.Redis, TaskQueue]:
    settings = Settings(redis_url=url, lease_seconds=60, log_level="warning",
                        log_format="json")
    configure_logging(settings, force=True)
    client = create_client(settings)
    return client, TaskQueue(client, settings)


def _wait_barrier(barrier: Any) -> None:
    # every process imports and connects first, then all start together
    barrier.wait(timeout=60)


async def _consume(url: str, worker_id: str, barrier: Any, producers: int) -> dict[str, Any]:
    client, queue = _queue(url)
    claimed: list[dict[str, Any]] = []
    try:
        await client.ping()
        _wait_barrier(barrier)
        while True:
            # read the producers' counter *before* claiming: a None claim after every
            # producer finished means the queue really is drained
            finished = int(await client.get(PRODUCERS_DONE) or 0) >= producers
            task = await queue.claim(worker_id)
            if task is None:
                if finished:
                    break
                await client.brpop([queue.keys.doorbell], timeout=0.05)
                continue
            claimed.append({
                "task_id": task.task_id,
                "n": task.params["n"],
                "priority": int(task.priority),
                "attempt": task.attempt,
                "worker": task.worker,
                "status": task.status.value,
            })
            await queue.complete(task, records=int(task.params["n"]), result={"by": worker_id})
    finally:
        await queue.aclose()
        await client.aclose()
    return {"worker_id": worker_id, "claimed": claimed}


async def _produce(url: str, start: int, stop: int, barrier: Any) -> dict[str, Any]:
    client, queue = _queue(url)
    results: list[tuple[int, str, bool]] = []
    try:
        await client.ping()
        _wait_barrier(barrier)
        for n in range(start, stop):
            task_id, created = await queue.enqueue(task_spec(n))
            results.append((n, task_id, created))
        await client.incr(PRODUCERS_DONE)
    finally:
        await queue.aclose()
        await client.aclose()
    return {"enqueued": results}


def consumer_main(url: str, worker_id: str, barrier: Any, producers: int, out: str) -> None:
    result = asyncio.run(_consume(url, worker_id, barrier, producers))
    Path(out).write_text(json.dumps(result), encoding="utf-8")


def producer_main(url: str, start: int, stop: int, barrier: Any, out: str) -> None:
    result = asyncio.run(_produce(url, start, stop, barrier))
    Path(out).write_text(json.dumps(result), encoding="utf-8")
