"""Chaos: a few hundred tasks while children and supervisors are killed at random.

Every task must end completed, none lost, and no task may ever run in two processes at
once (each run's start/end is logged by the plugin with a timestamp).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from app.executions import BatchTask, create_execution
from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from tests.workers import WorkerProcess, children_of, wait_until, worker_env

pytestmark = pytest.mark.timeout(240)

TASKS = 300


async def test_chaos_every_task_completes_once_at_a_time(redis_url: str,
                                                         tmp_path: Path) -> None:
    rng = random.Random(20261130)
    log = tmp_path / "runs.log"
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    async with TaskQueue(client, Settings(redis_url=redis_url)) as q:
        _, ids = await create_execution(q, [
            BatchTask(TaskSpec.build("quick", params={"log": str(log), "n": i,
                                                      "seconds": 0.1},
                                     max_attempts=20))
            for i in range(TASKS)
        ])
    await client.aclose()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    env = worker_env(redis_url, STOCKQ_RETRY_BASE_SECONDS="0.05",
                     STOCKQ_RETRY_MAX_SECONDS="0.2")
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        w = WorkerProcess(env, tmp_path / f"w{len(workers)}.log", "--concurrency", "2")
        workers.append(w)
        w.wait_started()
        return w

    live = [start(), start()]
    completed = lambda: int(r.hget("stock:stats", "completed") or 0)  # noqa: E731
    kills = {"child": 0, "supervisor": 0}
    try:
        while completed() < TASKS * 0.8 and (kills["child"] < 12 or kills["supervisor"] < 3):
            time.sleep(rng.uniform(0.2, 0.5))
            victim = rng.choice(live)
            if kills["supervisor"] < 3 and rng.random() < 0.25:
                victim.signal(signal.SIGKILL)
                victim.proc.wait()
                live.remove(victim)
                live.append(start())
                kills["supervisor"] += 1
            else:
                kids = list(children_of(victim.pid))
                if kids:
                    os.kill(rng.choice(kids), signal.SIGKILL)
                    kills["child"] += 1
        wait_until(lambda: completed() >= TASKS, 120, "every task to complete")
    finally:
        for w in workers:
            w.kill()

    assert kills["supervisor"] >= 1 and kills["child"] >= 1
    statuses = [r.hget(f"stock:task:{tid}", "status") for tid in ids]
    assert statuses.count("completed") == TASKS
    assert r.scard("stock:running_tasks") == 0 and r.zcard("stock:leases") == 0
    # never two runs of one task at the same time: each run holds an exclusive lock
    runs: dict[str, list[str]] = defaultdict(list)
    for line in log.read_text().splitlines():
        tid, _pid, what, _when = line.split()
        runs[tid].append(what)
    assert set(runs) == set(ids)
    conflicts = {tid: seen for tid, seen in runs.items() if "conflict" in seen}
    assert conflicts == {}
    assert all(seen.count("end") >= 1 for seen in runs.values())
    print(f"kills: {kills}; runs: {sum(len(v) for v in runs.values()) // 2}")
