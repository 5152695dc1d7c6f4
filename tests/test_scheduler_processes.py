"""Real processes: two ``stockq scheduler`` processes sharing a slot, ``stockq run``
(sidecar + scheduler + pool in one process), and the ``stockq schedule`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis

from app.keys import Keys
from app.local_redis import free_port
from tests.conftest import ROOT
from tests.workers import WorkerProcess, wait_until, worker_env

SCHEDULE_PLUGINS = "tests.schedule_plugins:PLUGINS"
SH = ZoneInfo("Asia/Shanghai")


def open_today(redis_url: str) -> None:
    """Cache a trading calendar in which yesterday, today and tomorrow (Shanghai) are
    open, so the test does not depend on the day it runs."""
    today = datetime.now(SH).date()
    days = [today + timedelta(days=d) for d in (-1, 0, 1)]
    r = redis.Redis.from_url(redis_url)
    r.hset(Keys().calendar("SSE"), mapping={
        "exchange": "SSE", "source": "tushare", "start": days[0].isoformat(),
        "end": days[-1].isoformat(), "open_days": ",".join(d.strftime("%Y%m%d") for d in days),
        "fetched_at": "test", "fetched_at_epoch": str(time.time())})
    r.close()


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_two_scheduler_processes_fire_each_slot_once(redis_url: str, tmp_path: Path) -> None:
    open_today(redis_url)
    env = worker_env(redis_url, STOCKQ_PLUGINS=SCHEDULE_PLUGINS,
                     STOCKQ_DAILY_SYNC_CRON="*/2 * * * * *", TUSHARE_TOKEN="")
    procs = [WorkerProcess(env, tmp_path / f"s{i}.log", command="scheduler") for i in (1, 2)]
    try:
        for p in procs:
            wait_until(lambda p=p: p.events("scheduler.started") or p.proc.poll() is not None,
                       30, "scheduler start")
            assert p.proc.poll() is None, p.log_path.read_text()
        both_up = time.time()

        def fired_after_both() -> list[str]:
            return sorted({e["slot"] for p in procs for e in p.events("schedule.fired")
                           if datetime.fromisoformat(e["slot"]).timestamp() > both_up + 0.5})

        wait_until(lambda: len(fired_after_both()) >= 3, 30, "three slots fired")
    finally:
        codes = [p.stop() for p in procs]
    assert codes == [0, 0]
    slots = fired_after_both()
    fired = Counter(e["slot"] for p in procs for e in p.events("schedule.fired"))
    skipped = Counter(e["slot"] for p in procs for e in p.events("schedule.skipped"))
    for slot in slots:
        assert fired[slot] == 1, (slot, fired)
        assert skipped[slot] == 1, (slot, skipped)  # the other process said it skipped
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    history = [json.loads(h) for h in r.lrange(Keys().schedule_history("daily_sync"), 0, -1)]
    executions = r.zrange(Keys().execution_index, 0, -1)
    r.close()
    fired_records = [h for h in history if h["outcome"] == "fired"]
    assert len(fired_records) == len({h["slot_at"] for h in fired_records}) == len(executions)
    assert set(fired) == {h["slot_at"] for h in fired_records}


def test_stockq_run_starts_all_parts_and_stops_cleanly(redis_url: str, tmp_path: Path
                                                       ) -> None:
    open_today(redis_url)
    port = free_port()
    env = worker_env(redis_url, STOCKQ_PLUGINS=f"plugins_bridge.examples:EXAMPLES,"
                     f"{SCHEDULE_PLUGINS}", TUSHARE_TOKEN="")
    proc = WorkerProcess(env, tmp_path / "run.log", "--workers", "1", "--port", str(port),
                         command="run")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.events("daemon.started") or proc.proc.poll() is not None,
                   60, "stockq run start")
        assert proc.proc.poll() is None, proc.log_path.read_text()
        [started] = proc.events("daemon.started")
        assert set(started["parts"]) == {"worker pool", "scheduler", "sidecar"}

        def healthy() -> dict[str, Any] | None:
            status, body = http("GET", f"{base}/health")
            ok = status == 200 and body["workers"]["live"] == 1 and \
                body["scheduler"]["live"] == 1
            return body if ok else None

        health = wait_until(healthy, 30, "health with a worker and a scheduler")
        assert health["redis"]["status"] == "ok" and health["scheduler"]["status"] == "ok"

        status, task = http("POST", f"{base}/api/v1/tasks", {"plugin_name": "noop"})
        assert status == 202
        wait_until(lambda: http("GET", f"{base}/api/v1/tasks/{task['task_id']}")[1]["status"]
                   == "completed", 30, "the submitted task to complete")

        status, schedules = http("GET", f"{base}/api/v1/schedules")
        assert status == 200
        names = [job["name"] for job in schedules["items"]]
        assert names == ["daily_sync", "plugin:report"]
        assert all(job["next_run_at"].endswith("+08:00") for job in schedules["items"])

        status, fire = http("POST", f"{base}/api/v1/schedules/daily_sync/run")
        assert status == 202 and fire["outcome"] == "fired" and fire["tasks"] == 4
        wait_until(lambda: http("GET", f"{base}/api/v1/executions/{fire['execution_id']}")[1]
                   ["status"] == "completed", 30, "the manual daily sync to complete")
    finally:
        code = proc.stop()
    assert code == 0, proc.log_path.read_text()[-3000:]
    events = [e["event"] for e in proc.events()]
    for event in ("scheduler.started", "worker.started", "api.started", "worker.stopped",
                  "scheduler.stopped", "api.stopped", "daemon.stopped"):
        assert event in events, event
    assert events.index("scheduler.paused") < events.index("worker.stopped")


def test_schedule_cli_lists_and_runs(redis_url: str) -> None:
    env = worker_env(redis_url, STOCKQ_PLUGINS=SCHEDULE_PLUGINS, TUSHARE_TOKEN="")

    def stockq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    listed = stockq("schedule", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)["items"]
    assert [j["name"] for j in jobs] == ["daily_sync", "plugin:report"]
    assert jobs[0]["trigger"] == "0 18 * * 1-5" and jobs[0]["last_fire"] is None

    ran = stockq("schedule", "run", "daily_sync")
    assert ran.returncode == 0, ran.stderr
    assert "daily_sync: execution" in ran.stdout and "(4 tasks)" in ran.stdout
    assert ran.stderr == ""  # the answer only: no log line without -v

    text = stockq("schedule", "list")
    header, _, *rows = text.stdout.splitlines()
    assert text.returncode == 0 and header.split() == [
        "JOB", "TRIGGER", "NEXT", "RUN", "PLUGINS", "LAST", "FIRE"]
    daily = next(r for r in rows if r.startswith("daily_sync"))
    assert "+08:00" in daily and "fired" in daily and "manual" not in header

    missing = stockq("schedule", "run", "nightly")
    assert missing.returncode == 4
    assert "no schedule named 'nightly'" in missing.stderr and "daily_sync" in missing.stderr
