"""The fork server (app/worker/forkserver.py) on real processes: children are forked
from it with the plugins loaded; when it is SIGKILLed, the children it forked die and
their tasks are retried, and the pool forks from a new one; a plugin that starts a
thread at import makes the pool start its children as fresh interpreters instead."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from app.models import TaskSpec
from app.producer import Producer
from app.settings import Settings
from tests.workers import (
    WORKER_PLUGINS,
    WorkerProcess,
    children_of,
    pid_alive,
    wait_status,
    wait_until,
    worker_starter,
)

pytestmark = pytest.mark.timeout(120)


def fork_servers(w: WorkerProcess) -> list[int]:
    """The pids of the fork servers the worker started, oldest first."""
    return [int(e["pid"]) for e in w.events("worker.forkserver_started")]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    with worker_starter(redis_url, tmp_path) as start:
        yield start


@pytest.fixture
def producer(redis_url: str) -> Iterator[Producer]:
    p = Producer(Settings(redis_url=redis_url))
    yield p
    p.close()


def test_a_killed_fork_server_costs_its_running_task_one_attempt(
    start_worker: Callable[..., WorkerProcess], producer: Producer, redis_url: str,
    tmp_path: Path,
) -> None:
    w = start_worker("--concurrency", "1")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    [server] = fork_servers(w)
    log = tmp_path / "runs.log"
    tid, _ = producer.enqueue(TaskSpec.build("quick", params={"seconds": 60, "log": str(log)},
                                             max_attempts=2))
    wait_until(lambda: log.exists() and " start " in log.read_text(), 30, "attempt 1")
    child = int(log.read_text().split()[1])
    assert parent_of(child) == server  # forked by it, with the plugins loaded
    assert r.hget(f"stock:task:{tid}", "status") == "running"

    os.kill(server, signal.SIGKILL)
    wait_until(lambda: not pid_alive(child), 10, "its child to die with it")
    retried = wait_status(r, tid, "pending", "retrying", "running", "completed", timeout=60)
    assert retried.get("last_error_type") == "worker_lost", retried
    # the pool goes on: a new fork server, a new child, attempt 2 runs there
    old, again = wait_until(lambda: fork_servers(w)[1:] and fork_servers(w), 30,
                            "a new fork server")
    assert old == server != again and pid_alive(again)
    wait_until(lambda: not Path(f"/proc/{server}").exists(), 10, "the dead one collected")
    assert w.events("worker.forkserver_died")[0]["exit_code"] == -signal.SIGKILL
    runs = wait_until(lambda: [ln.split() for ln in log.read_text().splitlines()
                               if " start " in ln][1:], 30, "attempt 2 to start")
    assert parent_of(int(runs[0][1])) == again
    assert w.proc.poll() is None
    assert r.hget(f"stock:task:{tid}", "attempt") == "2"
    died = w.events("worker.child_died")
    assert died and died[0]["task_id"] == tid, died


def test_a_plugin_thread_started_at_import_makes_children_start_fresh(
    start_worker: Callable[..., WorkerProcess], producer: Producer, redis_url: str,
) -> None:
    w = start_worker("--concurrency", "1",
                     STOCKQ_PLUGINS=f"{WORKER_PLUGINS},tests.threaded_plugins:PLUGINS")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert w.events("worker.forkserver_unsafe") and not fork_servers(w)
    tid, _ = producer.enqueue(TaskSpec.build("threaded"))
    done = wait_status(r, tid, "completed", "failed", timeout=60)
    assert done["status"] == "completed", done  # its thread is there: a fresh interpreter
    children = list(children_of(w.pid))
    assert children and all(b"app.worker.child" in Path(f"/proc/{c}/cmdline").read_bytes()
                            for c in children), children
