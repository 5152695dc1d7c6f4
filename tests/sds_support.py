"""The real stock_datasource snapshot under stockq, for tests: fixtures for its
environment and source, the ClickHouse it writes to, and a worker run from its
environment (tests/sds_env.py builds it)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from app.models import Limits, Task, TaskSpec, TaskStatus
from app.producer import Producer
from app.settings import Settings
from plugins_bridge.tushare.fake_server import FakeTushare
from tests import sds_env
from tests.clickhouse_http import ClickHouseHttp
from tests.workers import WorkerProcess, wait_until, worker_env

TOKEN = "sds-test-token-0123456789"
DATABASE = "stock_data"
#: tables stock_datasource's deployment creates (not in the snapshot), as its plugins
#: write them: tushare_daily also writes fact_daily_bar
DEPLOYMENT_TABLES = (
    "CREATE TABLE IF NOT EXISTS fact_daily_bar (ts_code String, trade_date Date, "
    "open Nullable(Float64), high Nullable(Float64), low Nullable(Float64), "
    "close Nullable(Float64), pre_close Nullable(Float64), change Nullable(Float64), "
    "pct_chg Nullable(Float64), vol Nullable(Float64), amount Nullable(Float64), "
    "adj_factor Nullable(Float64), version UInt32, _ingested_at DateTime, "
    "created_at DateTime, updated_at DateTime) "
    "ENGINE = ReplacingMergeTree(version) ORDER BY (ts_code, trade_date)",
)
#: tushare_stock_basic replaces it (and ods_stock_basic) on every run
DIM_SECURITY = (
    "CREATE TABLE IF NOT EXISTS dim_security (ts_code String, symbol String, name String, "
    "area Nullable(String), industry Nullable(String), market String, "
    "list_date Nullable(Date), delist_date Nullable(Date), list_status String, "
    "version UInt32, _ingested_at DateTime) "
    "ENGINE = ReplacingMergeTree(version) ORDER BY ts_code")


@pytest.fixture(scope="session")
def sds_python() -> str:
    return str(sds_env.python(sds_env.ensure_venv()))


@pytest.fixture(scope="session")
def snapshot_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sds_env.extract(tmp_path_factory.mktemp("snapshot"))


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHttp]:
    with ClickHouseHttp(tmp_path_factory.mktemp("clickhouse")) as server:
        server.query(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        for statement in DEPLOYMENT_TABLES:
            server.query(statement, DATABASE)
        yield server


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTushare]:
    with FakeTushare(token=TOKEN, empty_unknown=True) as server:
        yield server


def sds_environment(redis_url: str, snapshot: Path, clickhouse: ClickHouseHttp,
                    home: Path, **extra: str) -> dict[str, str]:
    """A worker's environment: stockq's settings, and stock_datasource's own (its
    ClickHouse over HTTP, the token), with a home of its own."""
    home.mkdir(parents=True, exist_ok=True)
    env = worker_env(redis_url, STOCKQ_PLUGINS="", STOCKQ_BUILTIN_PLUGINS="true",
                     PYTHONPATH=sds_env.pythonpath(snapshot), HOME=str(home),
                     TUSHARE_TOKEN=TOKEN, CLICKHOUSE_HOST="127.0.0.1",
                     CLICKHOUSE_HTTP_PORT=str(clickhouse.port), CLICKHOUSE_DATABASE=DATABASE,
                     STOCKQ_RETRY_BASE_SECONDS="0.2", STOCKQ_RETRY_MAX_SECONDS="0.5")
    env.pop("STOCKQ_PLUGINS")
    env.update(extra)
    return env


class SdsWorker:
    """A ``stockq worker`` run from the snapshot's environment, and a producer."""

    def __init__(self, python: str, env: dict[str, str], log: Path, redis_url: str) -> None:
        self.process = WorkerProcess(env, log, "--concurrency", "2", python=python)
        self.producer = Producer(Settings(redis_url=redis_url))

    def submit(self, plugin: str, **fields: Any) -> str:
        spec = TaskSpec.build(plugin, limits=Limits(), timeout_seconds=600, max_attempts=3,
                              **fields)
        task_id, _ = self.producer.enqueue(spec)
        return task_id

    def done(self, task_id: str, timeout: float = 180) -> Task:
        ended = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
        task: Task = wait_until(
            lambda: (t := self.producer.get(task_id)).status in ended and t, timeout,
            f"task {task_id} to end (worker log: {self.process.log_path})", interval=0.1)
        return task

    def stop(self) -> None:
        self.process.stop()
        self.producer.close()


def run_in_snapshot(python: str, snapshot: Path, script: str, env: dict[str, str] | None = None,
                    timeout: float = 180) -> Any:
    """Run ``script`` with the snapshot's environment; it prints one JSON document, last.
    (stockq's events reach stock_datasource's own logging there, which may write to
    stdout too, and from a thread: the document is the longest tail of the output that
    parses.)"""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STOCKQ_")}
    base.update({"PYTHONPATH": sds_env.pythonpath(snapshot), "HOME": tempfile.mkdtemp(),
                 "STOCKQ_DATA_DIR": tempfile.mkdtemp(), **(env or {})})
    out = subprocess.run([python, "-c", script], env=base, cwd=sds_env.ROOT,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout.strip()
    for start in (i for i, c in enumerate(text) if c in "{["):
        try:
            return json.loads(text[start:])
        except ValueError:
            continue
    raise AssertionError(f"no JSON document at the end of: {text[-2000:]}")


def open_days(snapshot: Path, start: str, end: str) -> list[str]:
    """The A-share trading days in [start, end] of the snapshot's own calendar file."""
    path = snapshot / "stock_datasource" / "config" / "trade_calendar.csv"
    with open(path, encoding="utf-8") as handle:
        days = [row["cal_date"].replace("-", "") for row in csv.DictReader(handle)
                if row["is_open"] == "1"]
    return sorted(d for d in days if start <= d <= end)


def latest_open_day(snapshot: Path) -> str:
    today = date.today().strftime("%Y%m%d")
    return open_days(snapshot, "19900101", today)[-1]
