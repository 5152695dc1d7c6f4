"""Plumbing of the worker benchmark: the pool processes it starts, a raw RESP
connection for tight timing, and the result records."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import hiredis
import redis.asyncio as aioredis

from app.environment import PROXY_ENVIRONMENT
from app.logs import read_log_records
from app.queue import TaskQueue
from bench._procfs import (
    cpu_seconds,
    pool_processes,
)
from bench._redis import BenchRedis

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = "plugins_bridge.examples:EXAMPLES,bench.plugins:PLUGINS"


# ---------------------------------------------------------------- /proc


def pool_cpu(sup: int) -> tuple[float, float]:
    """(supervisor CPU s, CPU s of all its children so far, live and reaped: the fork
    server, the children it forked and reaped, and the guards)."""
    live = sum(cpu_seconds(c) + cpu_seconds(c, reaped=True) for c in pool_processes(sup))
    return cpu_seconds(sup), cpu_seconds(sup, reaped=True) + live


# ---------------------------------------------------------------- workers


def worker_env(redis_url: str, log_level: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STOCKQ_") and k not in PROXY_ENVIRONMENT
           and k.lower() != "no_proxy"}
    env.update(
        STOCKQ_REDIS_URL=redis_url,
        STOCKQ_PLUGINS=PLUGINS,
        STOCKQ_LOG_FORMAT="json",
        STOCKQ_LOG_LEVEL=log_level,
        STOCKQ_DATA_DIR=str(data_dir),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


class Worker:
    """``python -m app.cli worker`` with stdout and stderr (its JSON log and its
    children's output) in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # closed by stop() / kill()
        self.spawned_at = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", *args],
            env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return list(read_log_records(self.log_path, name))

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def wait_started(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.events("worker.started"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start within {timeout} s:\n{self.tail()}")
            await asyncio.sleep(0.02)
        self.started_at = time.time()

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# ---------------------------------------------------------------- raw RESP connection


class RawConn(asyncio.Protocol):
    """A bare Redis connection: every reply or pushed message is parsed by hiredis
    and queued with the perf_counter() of its arrival (pub/sub and tight polling
    without redis-py's per-call overhead)."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8")
        self.items: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, port: int) -> RawConn:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, "127.0.0.1", port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.items.put_nowait((now, reply))

    async def call(self, *args: Any) -> Any:
        assert self.transport is not None
        self.transport.write(hiredis.pack_command(args))
        return (await self.items.get())[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# ---------------------------------------------------------------- results


@dataclass
class Row:
    phase: str
    name: str
    value: str
    note: str = ""


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    budgets: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    failed: bool = False  # a phase raised (its budgets are missing)

    def add(self, phase: str, name: str, value: str, note: str = "") -> None:
        self.rows.append(Row(phase, name, value, note))

    def budget(self, name: str, value: float | None, budget: float, higher: bool,
               unit: str) -> None:
        ok = value is not None and (value >= budget if higher else value <= budget)
        self.budgets.append({"name": name, "value": value, "budget": budget, "unit": unit,
                             "direction": ">=" if higher else "<=",
                             "result": "PASS" if ok else "MISS"})


def iso_epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class Bench:
    args: argparse.Namespace
    server: BenchRedis
    client: aioredis.Redis
    q: TaskQueue
    res: Results
    log_dir: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, name: str, concurrency: int, *extra: str, **env: str) -> Worker:
        w = Worker(worker_env(self.server.url, self.args.log_level, self.log_dir, **env),
                   self.log_dir / f"{name}.log", "--concurrency", str(concurrency), *extra)
        self.workers.append(w)
        return w

    async def hash(self, task_id: str, *names: str) -> dict[str, str]:
        values: list[str | None] = await self.client.hmget(  # type: ignore[misc]
            self.q.keys.task(task_id), list(names))
        return {k: v or "" for k, v in zip(names, values, strict=True)}

    async def wait_status(self, task_id: str, wanted: set[str], timeout: float,
                          interval: float = 0.005) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        key = self.q.keys.task(task_id)
        while True:
            status = await self.client.hget(key, "status")  # type: ignore[misc]
            if status in wanted:
                return dict(await self.client.hgetall(key))  # type: ignore[misc]
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {status!r} after {timeout} s")
            await asyncio.sleep(interval)

    async def wait_idle(self, timeout: float = 20.0) -> None:
        """No running task and the doorbell tokens left by the backlog consumed."""
        deadline = time.monotonic() + timeout
        keys = self.q.keys
        while time.monotonic() < deadline:
            bell = await self.client.llen(keys.doorbell)  # type: ignore[misc]
            running = await self.client.scard(keys.running)  # type: ignore[misc]
            if not bell and not running:
                return
            await asyncio.sleep(0.05)
        self.res.problems.append("pool not idle after the drain (doorbell/running not empty)")


