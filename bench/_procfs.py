"""What the benchmarks read about processes from /proc, small statistics helpers, and
the run-print-save plumbing every benchmark script shares."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R")

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (index 0 = field 3, state)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    try:
        return stat_fields(pid)[0] not in ("Z", "X")
    except OSError:
        return False


def children_of(pid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(stat_fields(int(entry.name))[1]) == pid:
                    yield int(entry.name)
            except (OSError, IndexError, ValueError):
                continue


def pool_processes(pid: int) -> list[int]:
    """A supervisor's children and theirs: the fork server's children are the pool's
    children, a spawned child's child is its guard."""
    found = []
    for child in children_of(pid):
        found.append(child)
        found.extend(children_of(child))
    return found


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """utime+stime of ``pid`` (with ``reaped``: of its waited-for children instead)."""
    try:
        f = stat_fields(pid)
    except OSError:
        return 0.0
    a, b = (13, 14) if reaped else (11, 12)
    return (int(f[a]) + int(f[b])) / CLK_TCK


def status_kb(pid: int, name: str) -> int:
    """A ``kB`` line of /proc/PID/status (``VmRSS``, ``VmHWM``, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, /proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def pct(samples: list[float], p: float) -> float:
    """The ``p`` quantile (0-1) by nearest rank; NaN for no samples."""
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p * (len(s) - 1))))] if s else float("nan")


def write_json(path: str, payload: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    print(f"results written to {path}")


def run_and_report(main: Coroutine[Any, Any, R], print_report: Callable[[R], None],
                   json_path: str | None, payload: Callable[[R], dict[str, Any]]) -> R:
    """Run a benchmark, print its report and wall time, and save ``payload`` as JSON
    when ``--json`` asked for it."""
    t0 = time.perf_counter()
    res = asyncio.run(main)
    print_report(res)
    print(f"\n(total wall time {time.perf_counter() - t0:.1f} s)")
    if json_path:
        write_json(json_path, payload(res))
    return res
