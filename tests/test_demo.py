"""``stockq run --demo`` as a newcomer starts it: the daily sync, run by hand, loads the
fake TuShare's data into the embedded ClickHouse and leaves an audit history."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import redis

from app.local_redis import free_port
from tests.conftest import ROOT
from tests.workers import WorkerProcess, wait_until, worker_env


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_demo_runs_a_daily_sync_into_clickhouse_and_the_history(redis_url: str,
                                                                     tmp_path: Path) -> None:
    """...in a namespace and a data directory of its own, next to the README's example
    worker (built-in plugins loaded, no token) working in the same namespace, which
    never takes a TuShare task."""
    port = free_port()
    data = tmp_path / "data"
    env = worker_env(redis_url, STOCKQ_BUILTIN_PLUGINS="true", STOCKQ_PLUGINS="",
                     STOCKQ_DATA_DIR=str(data), TUSHARE_TOKEN="")
    proc = WorkerProcess(env, tmp_path / "run.log", "--demo", "--workers", "2", "--port",
                         str(port), command="run")
    example = WorkerProcess({**env, "STOCKQ_PLUGINS": "plugins_bridge.examples:EXAMPLES"},
                            tmp_path / "example.log", "demo", "worker", "--concurrency", "2",
                            command="--namespace")  # stockq --namespace demo worker ...
    base = f"http://127.0.0.1:{port}"
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        wait_until(lambda: proc.events("daemon.started") or proc.proc.poll() is not None,
                   90, "stockq run --demo")
        assert proc.proc.poll() is None, proc.log_path.read_text()[-3000:]
        example.wait_started()
        text = proc.log_path.read_text()
        assert "the bundled fake server" in text and "namespace 'demo'" in text
        assert f"data in {data / 'demo'}" in text
        status, fire = call(base, "POST", "/api/v1/schedules/daily_sync/run")
        assert status == 202, fire
        assert fire["tasks"] == 5 and fire["outcome"] == "fired"

        def finished() -> Any:
            _, execution = call(base, "GET", f"/api/v1/executions/{fire['execution_id']}")
            return execution if execution["status"] in ("completed", "failed") else None

        execution = wait_until(finished, 90, "the daily sync")
        assert execution["status"] == "completed", execution["errors"]
        day = fire["trade_date"]
        iso = f"{day[:4]}-{day[4:6]}-{day[6:]}"
        status, rows = call(base, "POST", "/api/v1/query", {
            "sql": f"SELECT count(), uniqExact(ts_code) FROM ods_daily FINAL "
                   f"WHERE trade_date = '{iso}'"})
        assert status == 200 and rows["rows"] == [[20, 20]], rows
        status, basics = call(base, "POST", "/api/v1/query",
                              {"sql": "SELECT count() FROM ods_stock_basic FINAL"})
        assert basics["rows"] == [[20]]

        def history() -> Any:
            _, body = call(base, "GET", f"/api/v1/history?execution_id="
                                        f"{fire['execution_id']}")
            return body["items"] if len(body["items"]) == 5 else None

        items = wait_until(history, 30, "five audit rows")  # the flusher runs every second
        assert {i["plugin"] for i in items} == {
            "tushare_trade_calendar", "tushare_stock_basic", "tushare_daily",
            "tushare_adj_factor", "tushare_daily_basic"}
        assert all(i["status"] == "completed" and i["trigger"] == "manual" for i in items)
        status, health = call(base, "GET", "/health")
        assert health["clickhouse"]["status"] == "ok" and health["clickhouse"]["embedded"]
        assert str(data / "demo" / "clickhouse") in health["clickhouse"]["url"]
        assert health["workers"]["live"] == 2
        # the example worker ran none of it: it never claims what it cannot run
        assert example.events("task.started") == []
        assert {e["plugin"] for e in proc.events("task.started")} >= {
            "tushare_daily", "tushare_stock_basic"}
        # a task that names an earlier day loads it, though a later one is loaded; one
        # with nothing to do says so
        earlier = subprocess.run(
            [sys.executable, "-m", "app.cli", "--namespace", "demo", "submit",
             "tushare_daily", "--date", "20240102", "--wait"], env=env, cwd=ROOT,
            capture_output=True, text=True, timeout=90)
        assert earlier.returncode == 0, earlier.stderr
        assert earlier.stdout.strip().endswith(": 20 records")
        status, rows = call(base, "POST", "/api/v1/query", {
            "sql": "SELECT count() FROM ods_daily FINAL WHERE trade_date = '2024-01-02'"})
        assert rows["rows"] == [[20]]
        nothing = subprocess.run(
            [sys.executable, "-m", "app.cli", "--namespace", "demo", "submit",
             "tushare_daily", "--date", "20240106", "--wait"], env=env, cwd=ROOT,
            capture_output=True, text=True, timeout=90)
        assert nothing.stdout.strip().endswith(
            ": 0 records (2024-01-06 is not a trading day (SSE))"), nothing.stdout
        # the doctor knows the demo: no token to set, its roles alive, its warehouse
        doctor = subprocess.run(
            [sys.executable, "-m", "app.cli", "--namespace", "demo", "doctor", "--json"],
            env={**env, "STOCKQ_API_PORT": str(port)}, cwd=ROOT, capture_output=True,
            text=True, timeout=60)
        found = {(f["check"], f["level"]): f["detail"] for f in json.loads(doctor.stdout)}
        assert doctor.returncode == 0, doctor.stdout
        assert found[("tushare", "ok")] == "the demo uses the bundled fake TuShare server: " \
                                          "no token needed"
        assert ("demo", "ok") in found and ("workers", "ok") in found
        assert ("scheduler", "ok") in found and ("sidecar", "ok") in found
        assert str(data / "demo" / "clickhouse") in found[("clickhouse", "ok")]
        # only the README's example worker lacks a token (and says so), not the demo
        assert [detail for (check, _), detail in found.items() if "TUSHARE_TOKEN" in detail
                ] == [found[("plugins", "warn")]]
        assert f"pid {example.pid} does not run tushare_" in found[("plugins", "warn")]
        beside = subprocess.run([sys.executable, "-m", "app.cli", "doctor", "--json"],
                                env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        [demo] = [f for f in json.loads(beside.stdout) if f["check"] == "demo"]
        assert "runs on this Redis in namespace 'demo'" in demo["detail"]
        # nothing of the demo in the user's namespace or data directory
        assert r.keys("stock:*") == []
        assert not (data / "clickhouse").exists() and (data / "demo" / "clickhouse").is_dir()
    finally:
        assert example.stop() == 0
        code = proc.stop()
    assert code == 0, proc.log_path.read_text()[-3000:]
