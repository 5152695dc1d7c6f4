"""Capability routing with real worker processes: two pools with different plugins in
one namespace each run only their own tasks; a pool that lacks what a plugin needs (a
TuShare token, a ClickHouse) does not claim it, and the task waits with its reason in
``stockq status``, ``/health`` and ``stockq submit --wait``; namespaces keep apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import EXAMPLES, ROOT
from tests.workers import WORKER_PLUGINS, WorkerProcess, wait_until, worker_env

pytestmark = pytest.mark.timeout(120)


def stockq(env: dict[str, str], *args: str, code: int | None = 0,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if code is not None:
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


def submit(env: dict[str, str], *args: str) -> str:
    return str(json.loads(stockq(env, "submit", *args, "--json").stdout)["task_id"])


def task(r: redis.Redis, task_id: str, namespace: str = "stock") -> dict[str, str]:
    return r.hgetall(f"{namespace}:task:{task_id}")  # type: ignore[return-value]


def heartbeat(r: redis.Redis, pid: int, namespace: str = "stock") -> dict[str, Any]:
    for wid in r.zrange(f"{namespace}:workers", 0, -1):
        h = r.hgetall(f"{namespace}:worker:{wid}")
        if h.get("pid") == str(pid):  # type: ignore[union-attr]
            return dict(h)  # type: ignore[arg-type]
    raise AssertionError(f"no heartbeat of pid {pid}")


def test_two_pools_each_run_only_the_plugins_they_have(redis_url: str, tmp_path: Path
                                                      ) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    examples_env = worker_env(redis_url, STOCKQ_PLUGINS=EXAMPLES)
    tests_env = worker_env(redis_url, STOCKQ_PLUGINS=WORKER_PLUGINS)
    examples = WorkerProcess(examples_env, tmp_path / "examples.log", "--concurrency", "2")
    others = WorkerProcess(tests_env, tmp_path / "others.log", "--concurrency", "2")
    try:
        examples.wait_started()
        others.wait_started()
        assert examples.events("worker.started")[0]["plugins"] == ["fail", "noop", "sleep"]
        assert json.loads(heartbeat(r, examples.pid)["plugins"]) == ["fail", "noop", "sleep"]
        noops = [submit(examples_env, "noop", "--param", f"n={i}") for i in range(20)]
        sleepers = [submit(tests_env, "sleeper", "--param-json", f"seconds={0.05 + i / 1000}")
                    for i in range(10)]
        for tid in noops + sleepers:
            wait_until(lambda t=tid: task(r, t).get("status") == "completed", 60, tid)
        for tid in noops:
            assert task(r, tid)["worker"].split(":")[1] == str(examples.pid)
        for tid in sleepers:
            assert task(r, tid)["worker"].split(":")[1] == str(others.pid)
        assert not any(e["plugin"] == "sleeper" for e in examples.events("task.started"))
        assert not any(e["plugin"] == "noop" for e in others.events("task.started"))
        assert r.exists("stock:parked") == 0  # nothing is left waiting
    finally:
        assert examples.stop() == 0
        assert others.stop() == 0


def test_a_pool_without_token_or_clickhouse_never_claims_tushare_tasks(
    redis_url: str, tmp_path: Path
) -> None:
    """The README's example worker (built-in plugins loaded, no TUSHARE_TOKEN, no
    ClickHouse) next to queued TuShare work: it runs noop, and the TuShare task stays
    pending with the reason everywhere a user looks."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    env = worker_env(redis_url, STOCKQ_PLUGINS=EXAMPLES, STOCKQ_BUILTIN_PLUGINS="true",
                     TUSHARE_TOKEN="", STOCKQ_TUSHARE_TOKEN="")
    daily = submit(env, "tushare_daily", "--date", "20240102")
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "1")
    try:
        worker.wait_started()
        beat = heartbeat(r, worker.pid)
        assert json.loads(beat["plugins"]) == ["fail", "noop", "sleep"]
        reasons = json.loads(beat["not_runnable"])
        assert "TUSHARE_TOKEN" in reasons["tushare_daily"]
        assert "ClickHouse" in reasons["tushare_daily"]
        assert {e["plugin"] for e in worker.events("worker.plugin_not_runnable")} == {
            "tushare_trade_calendar", "tushare_stock_basic", "tushare_daily",
            "tushare_adj_factor", "tushare_daily_basic"}
        done = stockq(env, "submit", "noop", "--wait")
        assert "completed" in done.stdout
        wait_until(lambda: r.zrange("stock:parked:default:tushare_daily", 0, -1) == [daily],
                   30, "the TuShare task parked")
        assert task(r, daily)["status"] == "pending" and task(r, daily)["attempt"] == "0"
        status = stockq(env, "status", daily).stdout
        assert "waiting: no live worker can run tushare_daily: the live workers that load " \
               "it have no TuShare token (set TUSHARE_TOKEN); no ClickHouse" in status
        as_json = json.loads(stockq(env, "status", daily, "--json").stdout)
        assert as_json["waiting_reason"].startswith("no live worker can run tushare_daily")
        # --wait says so at once and keeps waiting (here: until its timeout)
        waited = stockq(env, "submit", "tushare_daily", "--date", "20240102", "--wait",
                        "--wait-timeout", "1", code=1)
        assert "stockq: no live worker can run tushare_daily" in waited.stderr
        assert "still pending after 1 s" in waited.stderr
    finally:
        assert worker.stop() == 0
    assert task(r, daily)["status"] == "pending"


def test_namespaces_share_one_redis_without_sharing_queues(redis_url: str,
                                                          tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    dev = worker_env(redis_url, STOCKQ_PLUGINS=EXAMPLES, STOCKQ_NAMESPACE="dev")
    prod = worker_env(redis_url, STOCKQ_PLUGINS=EXAMPLES)
    worker = WorkerProcess(dev, tmp_path / "dev.log", "--concurrency", "1")
    try:
        worker.wait_started()
        in_dev = submit(dev, "noop")
        in_prod = submit(prod, "noop")
        wait_until(lambda: task(r, in_dev, "dev").get("status") == "completed", 30, "dev")
        assert task(r, in_prod)["status"] == "pending"  # nobody works in 'stock'
        assert r.exists(f"dev:task:{in_prod}") == 0 and r.exists(f"stock:task:{in_dev}") == 0
        # --namespace reads the other one
        listed = stockq(prod, "--namespace", "dev", "tasks", "--json").stdout
        assert [t["task_id"] for t in json.loads(listed)["items"]] == [in_dev]
        assert all(k.startswith(("dev:", "stock:")) for k in r.keys("*"))
    finally:
        assert worker.stop() == 0
