"""``stockq doctor`` reads what is alive: with no worker, scheduler or sidecar and 14
failed tasks it does not say that all is well; a live worker's plugins that did not
load, or that it cannot run, are named; tasks nobody can run are counted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from tests.conftest import ROOT


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "app.cli", "doctor", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr
    return proc


def findings(proc: subprocess.CompletedProcess[str]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for f in json.loads(proc.stdout):
        out.setdefault(f["check"], []).append((f["level"], f["detail"]))
    return out


async def test_nothing_alive_and_fourteen_failures_is_not_all_well(
    client: aioredis.Redis, settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    async with TaskQueue(client, settings) as queue:  # the real clock: "the last 24 h"
        for i in range(14):
            await queue.enqueue(TaskSpec.build("fail", params={"n": i}))
            task = await queue.claim("gone-worker")
            assert task is not None
            await queue.fail(task, "config_error", "TUSHARE_TOKEN is not set")
        await queue.enqueue(TaskSpec.build("noop"))
    env = {**cli_env, "STOCKQ_DATA_DIR": str(tmp_path)}
    proc = doctor(env, "--json")
    assert proc.returncode == 1, proc.stdout
    found = findings(proc)
    assert found["workers"] == [("fail", "no live worker in namespace 'stock'; 1 pending "
                                 "task(s) wait")]
    assert found["scheduler"][0][0] == "warn" and "no live scheduler" in found["scheduler"][0][1]
    assert found["sidecar"][0][0] == "warn" and "no live sidecar" in found["sidecar"][0][1]
    assert found["failures"] == [("warn", "14 task(s) failed in the last 24 h (fail "
                                  "config_error x14)")]
    text = doctor(env).stdout
    assert "FAIL  workers" in text and "fix: start `stockq worker`" in text


async def test_a_live_workers_plugin_problems_and_stuck_tasks_are_named(
    client: aioredis.Redis, settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    async with TaskQueue(client, settings) as queue:
        await queue.heartbeat("h:7:abc", {
            "host": "h", "pid": 7, "plugins": json.dumps(["noop"]),
            "queues": json.dumps(["default"]),
            "not_runnable": json.dumps({"tushare_daily": "no TuShare token (set "
                                                         "TUSHARE_TOKEN)"}),
            "unavailable": json.dumps([{"source": "stock_datasource",
                                        "name": "stock_datasource.plugins.x",
                                        "reason": "No module named 'akshare'"}]),
        }, ttl=15)
        tid, _ = await queue.enqueue(TaskSpec.build("tushare_daily"))
        queue.advertise(["noop"], ["default"])
        assert await queue.claim_work("h:7:abc") is None  # parks it
    proc = doctor({**cli_env, "STOCKQ_DATA_DIR": str(tmp_path)}, "--json")
    found = findings(proc)
    assert found["workers"][0][0] == "ok" and "running noop" in found["workers"][0][1]
    plugins = [detail for _, detail in found["plugins"]]
    assert "worker h pid 7 did not load stock_datasource.plugins.x: No module named " \
           "'akshare'" in plugins
    assert "worker h pid 7 does not run tushare_daily: no TuShare token (set " \
           "TUSHARE_TOKEN)" in plugins
    assert found["routing"] == [("warn", "1 pending task(s) of tushare_daily wait: no live "
                                 "worker can run tushare_daily: the live workers that load "
                                 "it have no TuShare token (set TUSHARE_TOKEN)")]
