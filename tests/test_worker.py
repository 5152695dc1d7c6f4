"""The worker pool on real processes: timeouts, crashes, cancel, drain, retries, proxy."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from tests.redis_server import free_port
from tests.workers import (
    WorkerProcess,
    children_of,
    pid_alive,
    proc_environ,
    wait_until,
    worker_starter,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def sync_redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
async def live_queue(redis_url: str) -> AsyncIterator[TaskQueue]:
    """A producer on the real clock (workers run on it too)."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    q = TaskQueue(client, Settings(redis_url=redis_url))
    yield q
    await q.aclose()
    await client.aclose()


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    with worker_starter(redis_url, tmp_path) as start:
        yield start


def status_of(r: redis.Redis, task_id: str) -> dict[str, str]:
    return r.hgetall(f"stock:task:{task_id}")  # type: ignore[return-value]


def wait_status(r: redis.Redis, task_id: str, *statuses: str, timeout: float = 30
                ) -> dict[str, str]:
    return wait_until(lambda: (h := status_of(r, task_id)) and h.get("status") in statuses
                      and h, timeout, f"task {task_id} to be {'/'.join(statuses)}")


async def submit(q: TaskQueue, plugin: str, **kw: Any) -> str:
    params = kw.pop("params", {})
    tid, created = await q.enqueue(TaskSpec.build(plugin, params=params, **kw))
    assert created
    return tid


def read_pids(path: Path) -> dict[str, int]:
    wait_until(lambda: path.exists() and path.read_text(), 30, f"{path.name}")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


async def test_runs_a_task_and_logs_each_step(live_queue: TaskQueue, start_worker: Any,
                                              sync_redis: redis.Redis) -> None:
    w = start_worker("--concurrency", "2")
    tid = await submit(live_queue, "stepper", params={"steps": 3, "delay": 0.05})
    done = wait_status(sync_redis, tid, "completed")
    assert done["records_processed"] == "30" and done["attempt"] == "1"
    assert done["worker"].startswith(w.events("worker.started")[0]["worker"])
    wait_until(lambda: [e for e in w.events("task.completed") if e.get("task_id") == tid],
               10, "task.completed to be logged")
    for event in ("task.started", "task.completed"):
        records = [e for e in w.events(event) if e.get("task_id") == tid]
        assert len(records) == 1, event
        assert records[0]["plugin"] == "stepper" and records[0]["attempt"] == 1
        assert records[0]["worker"] == done["worker"]
    assert len(w.events("worker.spawned")) >= 2
    assert w.stop() == 0
    assert w.events("worker.stopped")


async def test_timeout_kills_the_plugin_and_its_subprocess(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    w = start_worker("--concurrency", "1")
    pidfile = tmp_path / "pids.json"
    tid = await submit(live_queue, "sleeper", params={"seconds": 60, "pidfile": str(pidfile)},
                       timeout_seconds=1, max_attempts=1)
    pids = read_pids(pidfile)
    failed = wait_status(sync_redis, tid, "failed")
    assert failed["last_error_type"] == "timeout"
    wait_until(lambda: not pid_alive(pids["child"]) and not pid_alive(pids["sleep"]), 10,
               "the child and its sleep subprocess to die")
    assert pid_alive(w.pid)
    assert [e for e in w.events("task.timeout") if e["task_id"] == tid]
    assert [e for e in w.events("worker.killed") if e["task_id"] == tid]
    # the slot keeps working
    nxt = await submit(live_queue, "quick")
    wait_status(sync_redis, nxt, "completed")


async def test_sigkill_of_a_child_mid_task_is_a_lost_attempt(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    w = start_worker("--concurrency", "1")
    tid = await submit(live_queue, "crasher", max_attempts=1)
    failed = wait_status(sync_redis, tid, "failed")
    assert failed["last_error_type"] == "worker_lost"
    assert "exited with code 3" in failed["error_message"]

    pidfile = tmp_path / "pids.json"
    tid = await submit(live_queue, "sleeper",
                       params={"seconds": 60, "pidfile": str(pidfile)}, max_attempts=1)
    pids = read_pids(pidfile)
    os.kill(pids["child"], signal.SIGKILL)
    failed = wait_status(sync_redis, tid, "failed")
    assert failed["last_error_type"] == "worker_lost"
    assert "signal 9" in failed["error_message"]
    wait_until(lambda: not pid_alive(pids["sleep"]), 10, "the orphaned sleep to die")
    assert pid_alive(w.pid)
    nxt = await submit(live_queue, "quick")
    wait_status(sync_redis, nxt, "completed")


async def test_sigkill_of_the_supervisor_leaves_no_child_and_another_finishes(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    first = start_worker("--concurrency", "1")
    pidfile = tmp_path / "pids.json"
    tid = await submit(live_queue, "sleeper",
                       params={"seconds": 60, "pidfile": str(pidfile), "first_only": True})
    pids = read_pids(pidfile)
    spare = [p for p in children_of(first.pid) if p != pids["child"]]
    first.signal(signal.SIGKILL)
    first.proc.wait()
    wait_until(lambda: not any(pid_alive(p) for p in [pids["child"], pids["sleep"], *spare]),
               10, "every child of the killed supervisor to die")
    assert status_of(sync_redis, tid)["status"] == "running"  # until its lease expires
    start_worker("--concurrency", "1")
    done = wait_status(sync_redis, tid, "completed", timeout=30)
    assert done["attempt"] == "2" and done["last_error_type"] == "worker_lost"


async def test_sigterm_lets_running_tasks_finish(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis
) -> None:
    w = start_worker("--concurrency", "1")
    tid = await submit(live_queue, "sleeper", params={"seconds": 1})
    wait_status(sync_redis, tid, "running")
    w.signal(signal.SIGTERM)
    assert w.proc.wait(30) == 0
    assert status_of(sync_redis, tid)["status"] == "completed"
    assert not sync_redis.exists(f"stock:worker:{w.events('worker.started')[0]['worker']}")


async def test_sigterm_grace_then_requeue_without_using_an_attempt(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis
) -> None:
    w = start_worker("--concurrency", "1", "--shutdown-grace", "0.5")
    tid = await submit(live_queue, "sleeper", params={"seconds": 60})
    wait_status(sync_redis, tid, "running")
    w.signal(signal.SIGTERM)
    assert w.proc.wait(30) == 0
    h = status_of(sync_redis, tid)
    assert h["status"] == "pending" and h["attempt"] == "0"
    assert tid in sync_redis.lrange("stock:task_queue:1", 0, -1)
    assert [e for e in w.events("task.requeued") if e["task_id"] == tid]


async def test_second_signal_stops_at_once(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis
) -> None:
    w = start_worker("--concurrency", "1", "--shutdown-grace", "60")
    tid = await submit(live_queue, "sleeper", params={"seconds": 60})
    wait_status(sync_redis, tid, "running")
    w.signal(signal.SIGTERM)
    wait_until(lambda: w.events("worker.stopping"), 10, "stopping")
    w.signal(signal.SIGINT)
    assert w.proc.wait(20) == 0
    assert status_of(sync_redis, tid)["status"] == "pending"


async def test_cancel_while_running_kills_the_attempt(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    w = start_worker("--concurrency", "1")
    pidfile = tmp_path / "pids.json"
    tid = await submit(live_queue, "sleeper", params={"seconds": 60, "pidfile": str(pidfile)})
    pids = read_pids(pidfile)
    assert await live_queue.cancel(tid) == "cancel_requested"
    h = wait_status(sync_redis, tid, "cancelled", timeout=20)
    assert h["last_error_type"] == "cancelled"
    wait_until(lambda: not pid_alive(pids["child"]) and not pid_alive(pids["sleep"]), 10,
               "the cancelled attempt's processes to die")
    # the supervisor logs right after its Redis write: wait for the line, do not race it
    wait_until(lambda: [e for e in w.events("task.cancelled") if e["task_id"] == tid], 10,
               "task.cancelled to be logged")


async def test_backoff_then_success_on_attempt_3(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    w = start_worker("--concurrency", "1")
    tid = await submit(live_queue, "flaky", max_attempts=3,
                       params={"counter": str(tmp_path / "n"), "fail_times": 2})
    done = wait_status(sync_redis, tid, "completed")
    assert done["attempt"] == "3" and done["records_processed"] == "3"
    retries = [e for e in w.events("task.retry_scheduled") if e["task_id"] == tid]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all(e["error_type"] == "network" for e in retries)
    assert sync_redis.hget("stock:stats", "retried") == "2"


async def test_bad_params_fail_at_once_and_unknown_plugins_wait_for_a_worker(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis
) -> None:
    start_worker("--concurrency", "1")
    ghost = await submit(live_queue, "no-such-plugin", max_attempts=5)
    bad = await submit(live_queue, "badparams", max_attempts=5)
    h = wait_status(sync_redis, bad, "failed")
    assert h["last_error_type"] == "bad_params" and h["attempt"] == "1"
    assert "ts_code must look like" in h["error_message"]
    # a plugin no worker runs is never claimed (it would fail plugin_not_found): it is
    # parked for a worker that can, and stays pending
    assert sync_redis.zrange("stock:parked:default:no-such-plugin", 0, -1) == [ghost]
    h = status_of(sync_redis, ghost)
    assert h["status"] == "pending" and h["attempt"] == "0"


async def test_progress_reaches_the_task_hash(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis
) -> None:
    w = start_worker("--concurrency", "1")
    tid = await submit(live_queue, "stepper", params={"steps": 20, "delay": 0.1})
    mid = wait_until(lambda: (h := status_of(sync_redis, tid)) and 0 < float(h["progress"]) < 100
                     and h, 20, "progress between 0 and 100")
    assert int(mid["records_processed"]) > 0 and mid["progress_message"].startswith("step")
    wait_status(sync_redis, tid, "completed")
    writes = [e for e in w.events("task.progress") if e["task_id"] == tid]
    assert 1 <= len(writes) < 20  # coalesced: fewer writes than reports


async def test_backfill_resumes_from_the_first_date_not_done(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    start_worker("--concurrency", "1")
    log = tmp_path / "dates.log"
    dates = ["20240102", "20240103", "20240104", "20240105", "20240108"]
    tid = await submit(live_queue, "dates", task_type="backfill", trade_dates=dates,
                       params={"log": str(log), "fail_on": "20240104"}, max_attempts=2)
    done = wait_status(sync_redis, tid, "completed")
    assert log.read_text().split() == dates[:3] + dates[2:]
    assert done["records_processed"] == "25" and done["checkpoint"] == "20240108"
    assert done["attempt"] == "2"


async def test_original_format_push_is_picked_up(
    start_worker: Any, sync_redis: redis.Redis
) -> None:
    start_worker("--concurrency", "1")
    tid = "legacy-0001"
    sync_redis.hset(f"stock:task:{tid}", mapping={
        "task_id": tid, "plugin_name": "quick", "task_type": "incremental",
        "trade_dates": "[]", "status": "pending", "progress": 0, "records_processed": 0,
        "error_message": "", "created_at": "2026-01-01T10:00:00", "updated_at": "",
        "started_at": "", "completed_at": "", "execution_id": "", "user_id": "",
        "username": "", "priority": 1, "attempt": 0, "max_attempts": 3, "next_run_at": "",
        "last_error_type": "", "timeout_seconds": 3600, "deadline_at": "",
    })
    sync_redis.lpush("stock:task_queue:1", tid)  # no doorbell: the worker polls too
    wait_status(sync_redis, tid, "completed")


async def test_proxy_is_set_only_inside_the_task(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path,
    redis_url: str,
) -> None:
    w = start_worker("--concurrency", "1", STOCKQ_HTTP_PROXY="http://127.0.0.1:3128",
                     HTTP_PROXY="http://ambient.example:1")
    out = tmp_path / "env.json"
    tid = await submit(live_queue, "envdump", params={"out": str(out)})
    wait_status(sync_redis, tid, "completed")
    seen = json.loads(out.read_text())
    assert seen["HTTP_PROXY"] == seen["http_proxy"] == "http://127.0.0.1:3128"
    assert seen["HTTPS_PROXY"] == seen["https_proxy"] == "http://127.0.0.1:3128"
    bypass = seen["NO_PROXY"].split(",")
    assert {"127.0.0.1", "localhost", "::1"} <= set(bypass)
    # the children start without any proxy variable, ambient or configured
    for pid in children_of(w.pid):
        env = proc_environ(pid)
        assert not {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} & set(env)
    assert w.events("worker.proxy_environment_removed")


async def test_stockq_run_serves_the_api_and_runs_the_pool_until_sigterm(
    start_worker: Any, sync_redis: redis.Redis
) -> None:
    port = free_port()
    daemon = start_worker("--workers", "1", "--port", str(port), command="run")
    assert daemon.events("api.started")[0]["port"] == port
    body = json.dumps({"plugin_name": "quick"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/tasks", data=body,
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202
        tid = json.loads(resp.read())["task_id"]
    wait_status(sync_redis, tid, "completed")
    assert "starting the sidecar, the scheduler, a worker pool" in daemon.log_path.read_text()
    assert daemon.stop() == 0
    assert daemon.events("api.stopped") and daemon.events("worker.stopped")
