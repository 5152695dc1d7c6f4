"""CPU-time snapshots for the worker benchmark (bench/bench_worker.py): tasks
completed so far and the CPU seconds of the pool (supervisor, children), redis-server,
this process and the whole machine, and the load between two snapshots.  The drain
and latency phases take them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from bench._pool import Bench, Worker, pool_cpu
from bench._procfs import cpu_seconds, machine_busy


@dataclass
class Snapshot:
    done: int
    sup: float
    kids: float
    redis: float
    bench: float
    machine: float
    wall: float


async def snapshot(b: Bench, w: Worker) -> Snapshot:
    done = int(await b.client.hget(b.q.keys.stats, "completed") or 0)  # type: ignore[misc]
    sup, kids = pool_cpu(w.pid)
    assert b.server.proc is not None
    return Snapshot(done, sup, kids, cpu_seconds(b.server.proc.pid), time.process_time(),
                    machine_busy(), time.monotonic())


def load_note(a: Snapshot, z: Snapshot) -> tuple[str, dict[str, float]]:
    """CPUs busy between two snapshots: ours (pool, Redis, bench) and everything else."""
    wall = z.wall - a.wall
    ours = sum(getattr(z, k) - getattr(a, k) for k in ("sup", "kids", "redis", "bench"))
    other = max(0.0, z.machine - a.machine - ours)
    load = {"ours_cpus": ours / wall, "other_cpus": other / wall}
    return (f"CPUs busy: ours {load['ours_cpus']:.2f}, other processes "
            f"{load['other_cpus']:.2f} (of {os.cpu_count()})"), load
