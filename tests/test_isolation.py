"""Process isolation on real processes: children die with a SIGKILLed supervisor even
when stuck in C code, processes a plugin started in other sessions die with their task,
a killed child does not hold its slot, output is bounded, memory is limited.

Every check of "nothing survives" walks /proc (pid and start time, process group, the
pool's environment mark); "never twice at once" comes from the plugins' own marks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from app.worker.procs import Proc, carries, marker_entry, process_table, read_proc
from tests.workers import (
    ROOT,
    WorkerProcess,
    wait_status,
    wait_until,
    worker_env,
    worker_starter,
)

pytestmark = pytest.mark.timeout(120)

TOKEN = "ts-token-0123456789abcdef"  # a stored secret the plugins print


@pytest.fixture
def sync_redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
async def live_queue(redis_url: str) -> AsyncIterator[TaskQueue]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    q = TaskQueue(client, Settings(redis_url=redis_url))
    yield q
    await q.aclose()
    await client.aclose()


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    with worker_starter(redis_url, tmp_path, "--concurrency", "1",
                        STOCKQ_TUSHARE_TOKEN=TOKEN) as start:
        yield start


async def submit(q: TaskQueue, plugin: str, **kw: Any) -> str:
    tid, created = await q.enqueue(TaskSpec.build(plugin, params=kw.pop("params", {}), **kw))
    assert created
    return tid


def alive(proc: Proc) -> bool:
    """The process ``proc`` names (pid and start time) still runs (not a zombie)."""
    now = read_proc(proc.pid)
    return now is not None and now.start == proc.start and not now.zombie


def processes(pids: dict[str, int]) -> dict[str, Proc]:
    """The processes behind ``pids`` as /proc shows them now (all must run), but for
    ``exited``: a zombie of the child that must not become the supervisor's for good."""
    found = {name: read_proc(pid) for name, pid in pids.items() if name != "exited"}
    assert all(p is not None and not p.zombie for p in found.values()), found
    return {name: p for name, p in found.items() if p is not None}


def leftovers(group: int, worker_id: str) -> list[Proc]:
    """Live processes in ``group`` or marked as started by a task of ``worker_id``."""
    mark = marker_entry(worker_id)
    return [p for p in process_table().values() if not p.zombie
            and (p.pgid == group or carries(p.pid, mark))]


def zombies_of(pid: int) -> list[Proc]:
    return [p for p in process_table().values() if p.ppid == pid and p.zombie]


def worker_id(w: WorkerProcess) -> str:
    return str(w.events("worker.started")[0]["worker"])


def event(w: WorkerProcess, name: str, task_id: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: next((e for e in w.events(name) if e.get("task_id") == task_id), None), 10,
        f"{name} of {task_id}")
    return found


def read_json(path: Path) -> dict[str, int]:
    wait_until(lambda: path.exists() and path.read_text(), 30, path.name)
    return json.loads(path.read_text())  # type: ignore[no-any-return]


# ------------------------------------------------------------------ item 1
async def test_a_child_stuck_in_c_code_dies_with_its_sigkilled_supervisor(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """The plugin ignores SIGTERM and holds the GIL in libc's sleep: no handler and no
    thread of the child can run.  SIGKILL of its supervisor still kills it (and its
    guard) at once, and the other worker's attempt 2 never overlaps it."""
    workers = [start_worker(), start_worker()]
    log = tmp_path / "runs.log"
    tid = await submit(live_queue, "gilhog", params={"log": str(log), "seconds": 90},
                       max_attempts=2)
    wait_until(lambda: log.exists() and " start " in log.read_text(), 30, "attempt 1")
    pid = int(log.read_text().split()[0])
    child = processes({"child": pid})["child"]
    owner = sync_redis.hget(f"stock:task:{tid}", "worker")
    victim = next(w for w in workers if worker_id(w) == owner)
    victim.signal(signal.SIGKILL)
    victim.proc.wait()
    wait_until(lambda: not alive(child), 10, "the stuck child to die")
    wait_until(lambda: not leftovers(child.pgid, worker_id(victim)), 10,
               "its group (the guard) to die")
    done = wait_status(sync_redis, tid, "completed", timeout=60)
    assert done["attempt"] == "2" and done["last_error_type"] == "worker_lost"
    runs = [line.split() for line in log.read_text().splitlines()]
    assert [(r[1], r[3]) for r in runs] == [("start", "1"), ("start", "2"), ("end", "2")]
    assert int(runs[1][0]) != pid  # attempt 2 ran in another child, the lock was free


# ------------------------------------------------------------------ item 2
async def test_timeout_kills_processes_in_other_sessions(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    w = start_worker()
    pidfile = tmp_path / "pids.json"
    tid = await submit(live_queue, "detacher", timeout_seconds=1, max_attempts=1,
                       params={"pidfile": str(pidfile), "clean_env": True})
    procs = processes(read_json(pidfile))
    assert procs["session"].pgid != procs["child"].pgid  # out of reach of a group kill
    failed = wait_status(sync_redis, tid, "failed")
    assert failed["last_error_type"] == "timeout"
    # recorded only once the whole tree was dead
    assert not [name for name, p in procs.items() if alive(p)]
    assert not leftovers(procs["child"].pgid, worker_id(w))
    killed = event(w, "worker.killed", tid)
    assert killed["reason"] == "timeout" and killed["descendants"] >= 4  # + the guard
    wait_until(lambda: not zombies_of(w.pid), 10, "the re-parented ones to be reaped")


async def test_cancel_kills_processes_in_other_sessions(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    w = start_worker()
    pidfile = tmp_path / "pids.json"
    tid = await submit(live_queue, "detacher", params={"pidfile": str(pidfile),
                                                       "clean_env": True})
    procs = processes(read_json(pidfile))
    assert await live_queue.cancel(tid) == "cancel_requested"
    wait_status(sync_redis, tid, "cancelled")
    assert not [name for name, p in procs.items() if alive(p)]
    assert not leftovers(procs["child"].pgid, worker_id(w))
    assert event(w, "worker.killed", tid)["reason"] == "cancel"
    wait_until(lambda: not zombies_of(w.pid), 10, "the re-parented ones to be reaped")


async def test_a_crashed_childs_detached_processes_die_with_its_attempt(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """The child exits at once: what it started in other sessions is re-parented to
    the supervisor, which finds it by the pool's mark and kills it before the attempt
    is recorded (and retried)."""
    w = start_worker()
    pidfile = tmp_path / "pids.json"
    tid = await submit(live_queue, "detacher", max_attempts=1,
                       params={"pidfile": str(pidfile), "crash": True})
    pids = read_json(pidfile)
    failed = wait_status(sync_redis, tid, "failed")
    assert failed["last_error_type"] == "worker_lost"
    for name in ("session", "daemon"):
        now = read_proc(pids[name])
        assert now is None or now.zombie, name
    assert event(w, "worker.child_died", tid)["descendants"] >= 2
    wait_until(lambda: not zombies_of(w.pid), 10, "the re-parented ones to be reaped")


async def test_a_sigkilled_supervisors_tasks_leave_nothing_behind(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """What a plugin started in other sessions, with the environment it inherited,
    dies with a SIGKILLed supervisor too (the child's guard finds it by the mark)."""
    w = start_worker()
    pidfile = tmp_path / "pids.json"
    await submit(live_queue, "detacher", params={"pidfile": str(pidfile), "seconds": 90})
    procs = processes(read_json(pidfile))
    w.signal(signal.SIGKILL)
    w.proc.wait()
    wait_until(lambda: not [name for name, p in procs.items() if alive(p)], 10,
               "the child and every process it started to die")
    wait_until(lambda: not leftovers(procs["child"].pgid, worker_id(w)), 10,
               "nothing of the pool to be left")


# ------------------------------------------------------------------ item 3
async def test_the_spare_takes_the_slot_while_a_timed_out_child_is_killed(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """The timed-out plugin ignores SIGTERM, so its child lives through the 2 s grace;
    the next task runs on the spare meanwhile, and the timeout is recorded after the
    child died."""
    w = start_worker()
    pidfile = tmp_path / "pids.json"
    slow = await submit(live_queue, "detacher", timeout_seconds=1, max_attempts=1,
                        params={"pidfile": str(pidfile), "stubborn": True})
    child = processes(read_json(pidfile))["child"]
    quick = await submit(live_queue, "quick")
    wait_status(sync_redis, quick, "completed")
    wait_status(sync_redis, slow, "failed")
    assert not alive(child)
    event(w, "task.failed", slow)
    names = [(e["event"], e.get("task_id")) for e in w.events()]
    assert names.index(("task.completed", quick)) < names.index(("worker.killed", slow)) \
        < names.index(("task.failed", slow))


# ------------------------------------------------------------------ item 4
async def test_output_is_kept_with_the_task_bounded_and_masked(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, redis_url: str
) -> None:
    w = start_worker()
    tid = await submit(live_queue, "chatty", params={"mb": 20})
    done = wait_status(sync_redis, tid, "completed", timeout=60)
    out = done["output"]
    assert out.endswith("last line\n") and len(out.encode()) <= 16 * 1024
    assert int(done["output_bytes"]) > 20_000_000 and done["output_attempt"] == "1"
    assert TOKEN not in out and "***" in out
    truncated = event(w, "task.output_truncated", tid)
    assert truncated["output_bytes"] == int(done["output_bytes"])
    log = w.log_path.read_text()
    assert len(log) < 200_000  # 8 KiB of the output and the log lines, not 20 MB
    assert TOKEN not in log and "***" in log  # the excerpt is masked too
    status = subprocess.run([sys.executable, "-m", "app.cli", "status", tid],
                            env=worker_env(redis_url), cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True).stdout
    assert "output" in status and "last line" in status and TOKEN not in status


# ------------------------------------------------------------------ item 5
async def test_memory_limits_end_an_allocation_storm_cleanly(
    live_queue: TaskQueue, start_worker: Any, sync_redis: redis.Redis, redis_url: str
) -> None:
    """The task's own limit (here from ``stockq submit``), else the plugin's, else the
    worker's default: past it the attempt fails ``memory_exceeded`` (not retried) and
    the child is replaced."""
    w = start_worker(STOCKQ_MEMORY_LIMIT_MB="250")
    submitted = subprocess.run(
        [sys.executable, "-m", "app.cli", "submit", "hog", "--memory-limit-mb", "150",
         "--max-attempts", "3", "--param-json", "max_mb=4000", "--json"],
        env=worker_env(redis_url), cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=True).stdout
    own = json.loads(submitted)["task_id"]
    assert json.loads(submitted)["memory_limit_mb"] == 150
    plugins = await submit(live_queue, "hog_limited", max_attempts=3, params={"max_mb": 4000})
    default = await submit(live_queue, "hog", max_attempts=3, params={"max_mb": 4000, "n": 2})
    for tid, limit in ((own, 150), (plugins, 200), (default, 250)):
        h = wait_status(sync_redis, tid, "failed", timeout=60)
        assert h["last_error_type"] == "memory_exceeded" and h["attempt"] == "1"
        assert f"memory limit {limit} MB" in h["error_message"]
    raised = await submit(live_queue, "hog", memory_limit_mb=2000, params={"max_mb": 1000})
    wait_status(sync_redis, raised, "completed", timeout=60)
    assert [e["reason"] for e in w.events("worker.recycled")] == ["memory_exceeded"] * 3
