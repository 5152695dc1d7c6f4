"""Fault phases of the worker benchmark (bench/bench_worker.py): timeout
enforcement (a task past its deadline, then the next queued one) and crash recovery
(SIGKILL of a supervisor mid-task, until another supervisor completed the task)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from app.models import TaskSpec
from app.queue import new_id
from bench._pool import Bench, Worker, iso_epoch
from bench._procfs import pid_alive, pool_processes

BUDGET_TIMEOUT_DETECT_S = 0.2  # deadline -> task hash failed/retrying (timeout)
BUDGET_TIMEOUT_NEXT_S = 1.0  # deadline (the kill starts) -> next queued task running
CRASH_SLACK_S = 2.0  # crash recovery budget: lease + this


# ---------------------------------------------------------------- 3. timeout


async def timeout_once(b: Bench, i: int) -> tuple[float, float, float, str]:
    slow, nxt = new_id(), new_id()
    await b.q.enqueue(TaskSpec.build("sleep", params={"seconds": 60, "t": i},
                                     timeout_seconds=1, max_attempts=1), task_id=slow)
    await b.q.enqueue(TaskSpec.build("noop", params={"after": i}), task_id=nxt)
    # the next task runs on the warm spare while the slow one's tree is being killed;
    # the slow one is recorded once it is dead
    await b.wait_status(nxt, {"completed", "failed"}, timeout=30, interval=0.01)
    await b.wait_status(slow, {"failed", "retrying"}, timeout=30, interval=0.01)
    a = await b.hash(slow, "status", "last_error_type", "started_ms", "duration_ms",
                     "deadline_at")
    n = await b.hash(nxt, "status", "started_ms", "duration_ms")
    if a["status"] not in ("failed", "retrying") or a["last_error_type"] != "timeout":
        raise RuntimeError(f"timed-out task ended {a['status']}/{a['last_error_type']}")
    failed_ms = int(a["started_ms"]) + int(a["duration_ms"])
    deadline = int(a["deadline_at"])
    detect = (failed_ms - deadline) / 1000
    to_next = (int(n["started_ms"]) - deadline) / 1000
    next_done = (int(n["started_ms"]) + int(n["duration_ms"]) - deadline) / 1000
    return detect, to_next, next_done, a["status"]


async def phase_timeout(b: Bench) -> None:
    args, res = b.args, b.res
    await b.client.flushall()
    w = b.start_worker("timeout", 1)
    await w.wait_started()
    await asyncio.sleep(0.5)  # let the spare child come up
    runs = [await timeout_once(b, i) for i in range(args.timeout_repeats)]
    w.stop()
    detect = [r[0] for r in runs]
    to_next = [r[1] for r in runs]
    done = [r[2] for r in runs]
    codes = sorted({str(e.get("exit_code")) for e in w.events("worker.killed")})
    res.info["timeout"] = {"detect_s": detect, "next_running_s": to_next,
                           "next_completed_s": done, "child_exit_codes": codes}
    res.add("timeout", f"deadline -> hash failed (timeout), {len(runs)} runs",
            f"median {statistics.median(detect):.3f} / max {max(detect):.3f} s",
            f"sleep(60) task, timeout 1 s, 1 attempt; --concurrency 1; hash timestamps "
            f"(1 ms); killed children exit codes {', '.join(codes)}")
    res.add("timeout", "deadline (kill) -> next queued task running",
            f"median {statistics.median(to_next):.3f} / max {max(to_next):.3f} s",
            f"on the warm spare child while the old one's tree is killed in the background; "
            f"it completed after median {statistics.median(done):.3f} / max "
            f"{max(done):.3f} s")
    res.budget("timeout: deadline -> failed (max)", max(detect), BUDGET_TIMEOUT_DETECT_S,
               False, "s")
    res.budget("timeout: kill -> next running (max)", max(to_next), BUDGET_TIMEOUT_NEXT_S,
               False, "s")


# ---------------------------------------------------------------- 5. crash recovery


def owner(workers: list[Worker], worker_id: str) -> Worker:
    pid = int(worker_id.rsplit(":", 2)[1])
    for w in workers:
        if w.pid == pid:
            return w
    raise RuntimeError(f"task owned by unknown worker {worker_id}")


async def crash_once(b: Bench, pool: list[Worker], i: int, delay: float) -> dict[str, Any]:
    tid = new_id()
    await b.q.enqueue(TaskSpec.build("bench_slow_first", params={"seconds": 60, "c": i}),
                      task_id=tid)
    h = await b.wait_status(tid, {"running"}, timeout=10)
    victim = owner(pool, h["worker"])
    kids = pool_processes(victim.pid)
    await asyncio.sleep(delay)
    t_kill = time.time()
    victim.kill()
    pool.remove(victim)
    h = await b.wait_status(tid, {"completed", "failed"}, timeout=b.args.lease + 30)
    started2 = int(h["started_ms"]) / 1000
    done = started2 + int(h["duration_ms"]) / 1000
    await asyncio.sleep(0.2)
    lost = [e for w in pool for e in w.events("task.worker_lost") if e.get("task_id") == tid]
    return {"status": h["status"], "attempt": int(h["attempt"]),
            "finisher_is_other": owner(pool, h["worker"]) is not victim,
            "reaped_s": iso_epoch(lost[0]["timestamp"]) - t_kill if lost else None,
            "started_s": started2 - t_kill, "completed_s": done - t_kill,
            "orphans": [k for k in kids if pid_alive(k)]}


async def phase_crash(b: Bench) -> None:
    args, res = b.args, b.res
    await b.client.flushall()
    lease = str(args.lease)
    pool = [b.start_worker(f"crash{k}", 1, STOCKQ_LEASE_SECONDS=lease) for k in range(2)]
    for w in pool:
        await w.wait_started()
    runs = []
    for i in range(args.crash_repeats):
        if i:
            w = b.start_worker(f"crash{i + 1}", 1, STOCKQ_LEASE_SECONDS=lease)
            await w.wait_started()
            pool.append(w)
        await asyncio.sleep(0.3)
        # kill at different points of the lease renewal cycle (every lease/3, <= 2 s)
        delay = 0.3 + min(2.0, args.lease / 3) * i / args.crash_repeats
        runs.append(await crash_once(b, pool, i, delay))
    for w in pool:
        w.stop()
    res.info["crash"] = runs
    bad = [r for r in runs if r["status"] != "completed" or r["attempt"] != 2
           or not r["finisher_is_other"]]
    for r in bad:
        res.problems.append(f"crash recovery run ended oddly: {r}")
    comp = [r["completed_s"] for r in runs]
    reaped = [r["reaped_s"] for r in runs if r["reaped_s"] is not None]
    orphans = sum(len(r["orphans"]) for r in runs)
    res.add("crash", f"SIGKILL supervisor -> completed elsewhere, {len(runs)} runs",
            f"median {statistics.median(comp):.2f} / max {max(comp):.2f} s",
            f"STOCKQ_LEASE_SECONDS={args.lease:g}; kill time vs the task hash's stamps; "
            "reaped after "
            + ", ".join(f"{x:.2f}" for x in reaped) + " s; attempt 2 started after "
            + ", ".join(f"{r['started_s']:.2f}" for r in runs)
            + f" s; children of the killed supervisor still alive: {orphans}")
    res.budget(f"crash recovery (max), lease {args.lease:g} s", max(comp),
               args.lease + CRASH_SLACK_S, False, "s")
