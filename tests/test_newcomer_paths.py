"""What a newcomer tried, done again: a second ``stockq run`` on the same data
directory, ``stockq query``/``history`` with no sidecar (a daemon without one holds the
warehouse; then none does), and a manual retry of a date-by-date task that failed
half-way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import EXAMPLES, ROOT
from tests.workers import WORKER_PLUGINS, WorkerProcess, wait_until, worker_env

pytestmark = pytest.mark.timeout(180)


def stockq(env: dict[str, str], *args: str, code: int = 0
           ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_a_second_run_and_query_without_a_sidecar(redis_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = worker_env(redis_url, STOCKQ_PLUGINS=EXAMPLES, STOCKQ_DATA_DIR=str(data),
                     STOCKQ_API_PORT="1")  # no sidecar answers there
    first = WorkerProcess(env, tmp_path / "first.log", "--no-api", "--no-scheduler",
                          "--workers", "1", command="run")
    try:
        wait_until(lambda: first.events("daemon.started") or first.proc.poll() is not None,
                   90, "the first stockq run")
        assert first.proc.poll() is None, first.log_path.read_text()[-2000:]
        done = stockq(env, "submit", "noop", "--param", "records=3", "--wait")
        assert "completed" in done.stdout

        second = stockq(env, "run", "--no-api", "--no-scheduler", code=5)
        assert lines(second.stderr) == [
            f"stockq: the embedded ClickHouse at {data / 'clickhouse'} is in use by `stockq "
            f"run` (pid {first.pid}): one process at a time can open it. Stop that one, or "
            "give this one another STOCKQ_DATA_DIR (or a ClickHouse server in "
            "STOCKQ_CLICKHOUSE_URL)"]
        assert "Code: 76" not in second.stdout + second.stderr

        held = stockq(env, "query", "SELECT 1", code=1)
        [message] = lines(held.stderr)
        assert message.startswith("stockq: no sidecar answers at http://127.0.0.1:1, and the "
                                  f"embedded ClickHouse at {data / 'clickhouse'} is held by "
                                  f"pid {first.pid}")
        assert "restart that `stockq run` without --no-api" in message
        wait_until(lambda: not redis.Redis.from_url(redis_url).llen("stock:audit:tasks"),
                   30, "the audit row flushed")
    finally:
        assert first.stop() == 0
    # nothing holds it now: both read it directly, read-only
    out = stockq(env, "query", "SELECT plugin, records FROM stockq_task_audit FINAL", "--json")
    assert json.loads(out.stdout)["rows"] == [["noop", 3]]
    refused = stockq(env, "query", "DROP TABLE stockq_task_audit", code=2)
    assert "stockq_task_audit" in stockq(env, "query", "SHOW TABLES").stdout
    assert refused.stderr.startswith("stockq: ")
    history = stockq(env, "history", "--json")
    [row] = json.loads(history.stdout)["items"]
    assert row["plugin"] == "noop" and row["status"] == "completed"


def test_query_with_no_warehouse_yet_says_what_to_run(cli_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    env = {**cli_env, "STOCKQ_DATA_DIR": str(tmp_path / "empty"), "STOCKQ_API_PORT": "1"}
    proc = stockq(env, "history", code=1)
    assert lines(proc.stderr) == [
        f"stockq: no sidecar answers at http://127.0.0.1:1 and there is no warehouse at "
        f"{tmp_path / 'empty' / 'clickhouse'} yet: start `stockq run` (or `ops/run.sh`; "
        "`ops/run.sh --demo` to try it offline), whose syncs fill it, then ask again (or "
        "pass --url)"]
    bogus = stockq(env, "history", "--status", "bogus", code=2)
    assert "invalid choice: 'bogus'" in bogus.stderr


def test_a_manual_retry_resumes_after_the_checkpoint(redis_url: str, tmp_path: Path) -> None:
    """docs/plugins.md: a retry resumes after the last date done; --from-start opts out."""
    env = worker_env(redis_url, STOCKQ_PLUGINS=WORKER_PLUGINS)
    log = tmp_path / "dates.log"
    dates = ["20240102", "20240103", "20240104", "20240105", "20240108"]
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "1")
    try:
        worker.wait_started()
        args = ["submit", "dates", "--type", "backfill", *(a for d in dates for a in
                ("--date", d)), "--param", f"log={log}", "--param", "fail_on=20240104",
                "--max-attempts", "1", "--json", "--wait"]
        failed = json.loads(stockq(env, *args, code=1).stdout)
        assert failed["status"] == "failed" and failed["checkpoint"] == "20240103"
        assert log.read_text().split() == dates[:3]

        out = stockq(env, "retry", failed["task_id"]).stdout.strip()
        new_id = out.split(" as new task ")[1].split(",")[0]
        assert out == f"retrying {failed['task_id']} as new task {new_id}, resuming after " \
                      "20240103"
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        wait_until(lambda: r.hget(f"stock:task:{new_id}", "status") == "completed", 60,
                   "the retry")
        assert log.read_text().split() == [*dates[:3], "20240104", "20240105", "20240108"]
        assert r.hget(f"stock:task:{new_id}", "records_processed") == "25"  # 2 + 3 dates

        log.unlink()
        (tmp_path / "dates.log.failed").unlink()
        again = json.loads(stockq(env, *args, code=1).stdout)
        out = stockq(env, "retry", again["task_id"], "--from-start", "--json").stdout
        restarted = json.loads(out)["task_id"]
        wait_until(lambda: r.hget(f"stock:task:{restarted}", "status") == "completed", 60,
                   "the retry from the start")
        assert log.read_text().split() == [*dates[:3], *dates]
        assert r.hget(f"stock:task:{restarted}", "records_processed") == "25"  # 5 dates
    finally:
        assert worker.stop() == 0
