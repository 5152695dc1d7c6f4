"""One cycle of stock_datasource's data-management screens against a real ``stockq run``
(sidecar, scheduler, worker pool, embedded ClickHouse and audit flusher in one process,
behind a bearer token), driven through ``/api/datamanage`` only: trigger, status,
history, retry, cancel, batch, a schedule edit the running scheduler picks up, and a
schedule trigger."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from app.local_redis import free_port
from tests.sidecar_support import GOOD_TOKEN
from tests.test_scheduler_processes import open_today
from tests.workers import WorkerProcess, wait_until, worker_env

PLUGINS = "tests.datamanage_plugins:PLUGINS"


class Screens:
    """The frontend's calls, with the token stockq's sidecar wants."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/datamanage"

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {GOOD_TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                got, text = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            got, text = err.code, err.read()
        answer = json.loads(text)
        assert got == status, (method, path, got, answer)
        return answer

    def until(self, path: str, done: Any, what: str, timeout: float = 60) -> Any:
        return wait_until(lambda: (lambda a: a if done(a) else None)(self.call("GET", path)),
                          timeout, what)

    def task_ends(self, task_id: str, status: str = "completed") -> dict[str, Any]:
        answer: dict[str, Any] = self.until(f"/sync/status/{task_id}",
                                            lambda t: t["status"] == status,
                                            f"task {task_id} {status}")
        return answer


def test_a_cycle_through_the_datamanage_routes(redis_url: str, tmp_path: Path) -> None:
    open_today(redis_url)
    port = free_port()
    env = worker_env(redis_url, STOCKQ_PLUGINS=PLUGINS, STOCKQ_API_TOKEN=GOOD_TOKEN,
                     TUSHARE_TOKEN="")
    proc = WorkerProcess(env, tmp_path / "run.log", "--workers", "2", "--port", str(port),
                         command="run")
    ui = Screens(port)
    try:
        wait_until(lambda: proc.events("daemon.started") or proc.proc.poll() is not None,
                   90, "stockq run start")
        assert proc.proc.poll() is None, proc.log_path.read_text()[-3000:]
        ui.call("GET", "/sync/tasks", status=200)
        anonymous = urllib.request.Request(ui.base + "/sync/tasks")
        try:
            urllib.request.urlopen(anonymous, timeout=10)
            raise AssertionError("answered without the token")
        except urllib.error.HTTPError as err:
            assert err.code == 401 and json.loads(err.read()) == {
                "detail": "missing or wrong bearer token"}
        ui.until("/sync/config", lambda c: c["max_concurrent_tasks"] == 2, "a live pool")

        # trigger: refused while the dependency has no data, then run it and its dependent
        refused = ui.call("POST", "/sync/trigger", {"plugin_name": "dm_prices"}, status=400)
        assert refused["detail"]["missing_data"] == {"dm_calendar": "No data in table"}
        calendar = ui.call("POST", "/sync/trigger", {
            "plugin_name": "dm_calendar", "task_type": "backfill",
            "trade_dates": ["2024-01-02"], "force_overwrite": False})
        assert ui.task_ends(calendar["task_id"])["records_processed"] == 1
        assert ui.call("GET", "/plugins/dm_prices/dependencies")["satisfied"] is True
        prices = ui.call("POST", "/sync/trigger", {
            "plugin_name": "dm_prices", "task_type": "backfill",
            "trade_dates": ["2024-01-02"]})
        done = ui.task_ends(prices["task_id"])
        assert done["trade_dates"] == ["2024-01-02"] and done["records_processed"] == 2
        assert ui.call("GET", "/plugins/dm_prices/status")["latest_date"] == "2024-01-02"

        # history: the audit rows, once the flusher has moved them to ClickHouse
        rows = ui.until("/sync/history?plugin_name=dm_prices", lambda h: len(h) == 1,
                        "the audit row in ClickHouse")
        assert rows[0]["task_id"] == prices["task_id"] and rows[0]["status"] == "completed"

        # retry a failed task
        failing = ui.call("POST", "/sync/trigger", {"plugin_name": "dm_fails"})
        failed = ui.task_ends(failing["task_id"], "failed")
        assert failed["error_message"] == "the source refused the request"
        again = ui.call("POST", f"/sync/retry/{failing['task_id']}")
        assert again["task_id"] != failing["task_id"]
        ui.task_ends(again["task_id"], "failed")

        # cancel a running task
        slow = ui.call("POST", "/sync/trigger", {"plugin_name": "dm_slow"})
        ui.task_ends(slow["task_id"], "running")
        assert ui.call("POST", f"/sync/cancel/{slow['task_id']}")["success"] is True
        ui.task_ends(slow["task_id"], "cancelled")

        # batch: the dependency first, both run
        batch = ui.call("POST", "/sync/batch", {"plugin_names": ["dm_prices"],
                                                "task_type": "incremental"})
        assert batch["execution_order"] == ["dm_calendar", "dm_prices"]
        for task in batch["tasks"]:
            ui.task_ends(task["task_id"])

        # a schedule edit, picked up by the scheduler running in the process
        edited = ui.call("PUT", "/schedule/config", {"execute_time": "05:45",
                                                     "frequency": "daily"})
        assert edited["cron_expression"] == "45 5 * * *" and edited["frequency"] == "daily"
        full = ui.call("PUT", "/schedule/plugins/dm_prices", {"full_scan_enabled": True})
        assert full["full_scan_enabled"] is True
        wait_until(lambda: any(e["jobs"][0]["trigger"] == "45 5 * * *"
                               for e in proc.events("schedule.reloaded")), 30,
                   "the scheduler to reload the edited schedule")
        assert ui.call("GET", "/schedule/config")["execute_time"] == "05:45"

        # run the schedule now: the edited plugin runs a full scan
        fired = ui.call("POST", "/schedule/trigger")
        assert fired["trigger_type"] == "manual" and fired["group_name"] == "daily_sync"
        detail = ui.call("GET", f"/schedule/execution/{fired['execution_id']}")
        by_plugin = {t["plugin_name"]: t for t in detail["tasks"]}
        assert set(by_plugin) == {"dm_calendar", "dm_prices"}
        assert ui.call("GET", f"/sync/status/{by_plugin['dm_prices']['task_id']}")[
            "task_type"] == "full"
        ui.until(f"/schedule/execution/{fired['execution_id']}",
                 lambda e: e["status"] == "completed", "the scheduled execution")
        history = ui.call("GET", "/schedule/history?days=1&limit=50&trigger_type=manual")
        assert fired["execution_id"] in [r["execution_id"] for r in history["items"]]
    finally:
        code = proc.stop()
    assert code == 0, proc.log_path.read_text()[-3000:]
    assert not proc.events("api.internal_error")
