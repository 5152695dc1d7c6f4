"""POST /api/v1/query against the embedded ClickHouse, tried as an attacker would: file
reads and writes, connections out (to a listener each test starts on loopback), limits
lifted per query, long queries against /health, other queries and shutdown.  Every
attack runs for real through the sidecar and must fail."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.api.app import SANDBOX, create_app
from app.errors import ConfigError, QueryTimeout
from app.local_redis import free_port
from app.query_sandbox import QuerySandbox
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.tushare.datasets import DAILY
from plugins_bridge.warehouse import Warehouse
from tests.workers import WorkerProcess, wait_until, worker_env

# a statement the engine works on for minutes: 10^10 rows from two generated sides
ENDLESS = ("SELECT count() FROM (SELECT arrayJoin(range(100000)) AS a) AS x "
           "CROSS JOIN (SELECT arrayJoin(range(100000)) AS b) AS y")


class Listener:
    """A TCP listener on loopback that counts the connections it is offered."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def bar(code: str, day: str, close: float) -> list[object]:
    return [code, day, close, close, close, close, None, None, None, 10.0, 100.0]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    wh = Warehouse(f"chdb://{tmp_path_factory.mktemp('sandbox') / 'ch'}")
    wh.insert(DAILY, [bar(f"{i:06d}.SZ", "20260105", 10 + i) for i in range(50)])
    yield wh
    wh.close()  # one embedded path per process at a time


@pytest.fixture
def query_settings(settings: Settings) -> Settings:
    return replace(settings, query_max_rows=20, query_timeout=2.0)


@pytest.fixture
async def http(query_settings: Settings, warehouse: Warehouse) -> AsyncIterator[TestClient]:
    app = create_app(query_settings, registry=PluginRegistry(), warehouse=warehouse)
    async with TestClient(TestServer(app)) as client:
        yield client


async def ask(http: TestClient, sql: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    resp = await http.post("/api/v1/query", json={"sql": sql, **extra})
    return resp.status, await resp.json()


async def refused(http: TestClient, sql: str, code: str = "read_only") -> str:
    status, body = await ask(http, sql)
    assert (status, body["error"]["code"]) == (400, code), (sql, body)
    return str(body["error"]["message"])


# ------------------------------------------------------------------ what works
async def test_reads_of_the_warehouse_work(http: TestClient) -> None:
    status, body = await ask(http, "SELECT ts_code, trade_date, close FROM ods_daily FINAL "
                                   "WHERE close < 12 ORDER BY ts_code -- the cheap ones")
    assert status == 200
    assert body == {"columns": ["ts_code", "trade_date", "close"],
                    "types": ["String", "Date", "Float64"],
                    "rows": [["000000.SZ", "2026-01-05", 10.0], ["000001.SZ", "2026-01-05", 11.0]]}
    statements = {
        "WITH cheap AS (SELECT * FROM ods_daily WHERE close < 11) SELECT count() FROM cheap":
            [[1]],
        "SELECT countIf(close > 50), sumIf(vol, close < 12), uniqExact(ts_code) "
        "FROM ods_daily": [[9, 20.0, 50]],
        "SELECT arrayMap(x -> x * 2, [1, 2]), 1 ? 'a;b' : 'c', toYYYYMM(max(trade_date)) "
        "FROM ods_daily": [[[2, 4], "a;b", 202601]],
        "SELECT ts_code, row_number() OVER (ORDER BY close DESC) AS r FROM ods_daily "
        "ORDER BY r LIMIT 1": [["000049.SZ", 1]],
        "SELECT count() FROM ods_daily WHERE ts_code IN (SELECT ts_code FROM ods_daily "
        "WHERE close > 58)": [[1]],
        "SHOW TABLES": [["ods_daily"]],
        "EXISTS TABLE ods_daily": [[1]],
        "SELECT name FROM system.tables WHERE database = currentDatabase()": [["ods_daily"]],
        "SELECT 1 UNION ALL SELECT 2": [[1], [2]],
    }
    for sql, rows in statements.items():
        status, body = await ask(http, sql)
        assert (status, body.get("rows")) == (200, rows), (sql, body)
    for sql in ("DESCRIBE TABLE ods_daily", "desc `ods_daily`", "SHOW CREATE TABLE ods_daily",
                "SHOW COLUMNS FROM ods_daily", "SHOW DATABASES",
                "EXPLAIN SELECT count() FROM ods_daily", "EXPLAIN AST SELECT 1"):
        status, body = await ask(http, sql)
        assert status == 200 and body["rows"], (sql, body)


# ------------------------------------------------------------------ files
async def test_no_file_can_be_read(http: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "tushare-" + os.urandom(8).hex()
    monkeypatch.setenv("TUSHARE_TOKEN", secret)
    attacks = [
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM file('/proc/self/environ', 'RawBLOB', 'line String')",
        "SELECT file('/etc/passwd')",
        "SELECT FILE('/etc/passwd') AS f",
        "select * from /* hidden */ file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
        "WITH x AS (SELECT * FROM file('/etc/passwd', 'LineAsString')) SELECT * FROM x",
        "SELECT * FROM (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
        "SELECT * FROM ods_daily JOIN file('/etc/passwd', 'LineAsString', 'ts_code String') "
        "USING ts_code",
        "SELECT count() FROM ods_daily WHERE ts_code IN file('/etc/passwd', 'LineAsString')",
        "SELECT (SELECT any(line) FROM file('/etc/passwd', 'LineAsString'))",
        "EXPLAIN SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "EXPLAIN SYNTAX SELECT file('/etc/passwd')",
        "DESCRIBE TABLE file('/etc/passwd', 'LineAsString')",
        "SHOW CREATE TABLE file('/etc/passwd')",
        "SELECT * FROM view(SELECT * FROM file('/etc/passwd', 'LineAsString'))",
        "SELECT * FROM merge('system', '.*')",
        "SELECT * FROM executable('cat /etc/passwd', 'LineAsString', 'x String')",
        "SELECT * FROM format(LineAsString, 'root:x:0:0')",
    ]
    for sql in attacks:
        status, body = await ask(http, sql)
        text = str(body)
        # refused by the check (read_only), or not even a statement (query_error)
        assert status == 400 and body["error"]["code"] in ("read_only", "query_error"), sql
        assert "root:" not in text and secret not in text, sql


async def test_no_file_can_be_written(http: TestClient, tmp_path: Path) -> None:
    target = tmp_path / "written.bin"
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me\n")
    attacks = [
        f"SELECT 1 INTO OUTFILE '{target}'",
        f"SELECT ts_code FROM ods_daily INTO OUTFILE '{target}' FORMAT CSV",
        f"SELECT 1 INTO OUTFILE '{existing}' APPEND",
        f"SELECT 1 INTO OUTFILE '{existing}' TRUNCATE",
        f"SELECT 1 INTO OUTFILE '{target}.gz' COMPRESSION 'gzip'",
        f"SHOW TABLES INTO OUTFILE '{target}'",
        f"EXPLAIN SELECT 1 INTO OUTFILE '{target}'",
        f"DESCRIBE TABLE ods_daily INTO OUTFILE '{target}'",
        "INSERT INTO ods_daily SELECT * FROM ods_daily",
        f"INSERT INTO FUNCTION file('{target}') SELECT 1",
        "DROP TABLE ods_daily",
        "TRUNCATE TABLE ods_daily",
        "ALTER TABLE ods_daily DELETE WHERE 1",
        "CREATE TABLE t (a UInt8) ENGINE = Memory",
        "SELECT 1; DROP TABLE ods_daily",
        "SYSTEM SHUTDOWN",
        "KILL QUERY WHERE 1",
    ]
    for sql in attacks:
        message = await refused(http, sql)
        assert message, sql
    assert not target.exists() and not Path(f"{target}.gz").exists()
    assert existing.read_text() == "keep me\n"
    status, body = await ask(http, "SELECT count() FROM ods_daily")
    assert (status, body["rows"]) == (200, [[50]])


# ------------------------------------------------------------------ connections out
async def test_no_connection_leaves_the_daemon(http: TestClient, listener: Listener) -> None:
    at = f"127.0.0.1:{listener.port}"
    attacks = [
        f"SELECT * FROM url('http://{at}/x', 'LineAsString', 'a String')",
        f"SELECT * FROM url('http://{at}/x')",
        f"SELECT * FROM s3('http://{at}/bucket/key', 'LineAsString', 'a String')",
        f"SELECT * FROM mysql('{at}', 'test', 't', 'root', '')",
        f"SELECT * FROM postgresql('{at}', 'test', 't', 'postgres', '')",
        f"SELECT * FROM redis('{at}', 'k', 'k String, v String')",
        f"SELECT * FROM remote('{at}', system.one)",
        f"SELECT * FROM remoteSecure('{at}', system.one)",
        "SELECT * FROM cluster('default', system.one)",
        f"SELECT * FROM hdfs('hdfs://{at}/x', 'LineAsString', 'a String')",
        f"SELECT * FROM mongodb('{at}', 'db', 'c', 'u', 'p', 'a String')",
        f"SELECT * FROM azureBlobStorage('http://{at}/acc', 'c', 'b', 'LineAsString')",
        f"SELECT count() FROM ods_daily WHERE ts_code IN url('http://{at}/x', 'LineAsString')",
        f"SELECT * FROM ods_daily AS d JOIN url('http://{at}/x', 'CSV', 'ts_code String') AS u "
        "USING ts_code",
        f"EXPLAIN SELECT * FROM url('http://{at}/x', 'LineAsString')",
        f"DESCRIBE TABLE url('http://{at}/x', 'LineAsString')",
        f"SELECT aiGenerate('http://{at}/x')",
        "SELECT dictGet('d', 'x', toUInt64(1))",
        "SELECT joinGet('ods_daily', 'close', '000001.SZ')",
    ]
    for sql in attacks:
        await refused(http, sql)
    assert listener.connections == 0


async def test_the_session_is_locked_even_without_the_parse_check(
        query_settings: Settings, warehouse: Warehouse, listener: Listener,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The second lock: with the statement check switched off, ClickHouse's own
    readonly=1 still refuses table functions and changes of settings."""
    monkeypatch.setattr("app.query_sandbox.check", lambda tree, policy: None)
    sandbox = QuerySandbox(warehouse.url, query_settings)
    try:
        for sql in (f"SELECT * FROM url('http://127.0.0.1:{listener.port}/x', 'LineAsString')",
                    f"SELECT * FROM remote('127.0.0.1:{listener.port}', system.one)",
                    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
                    "SELECT number FROM system.numbers LIMIT 30 SETTINGS max_result_rows = 0",
                    "SELECT count() FROM system.numbers_mt SETTINGS max_execution_time = 0"):
            with pytest.raises(Exception) as err:
                await sandbox.run(sql)
            assert "readonly" in str(err.value).lower() or "READONLY" in str(err.value), sql
        with pytest.raises(Exception, match="Limit for result|TOO_MANY"):
            await sandbox.run("SELECT number FROM system.numbers LIMIT 30")
    finally:
        await sandbox.aclose()
    assert listener.connections == 0


# ------------------------------------------------------------------ limits
async def test_limits_cannot_be_lifted(http: TestClient) -> None:
    for sql in ("SELECT number FROM system.numbers LIMIT 100 SETTINGS max_result_rows = 0",
                "SELECT count() FROM system.numbers_mt SETTINGS max_execution_time = 0",
                "SELECT ts_code FROM ods_daily SETTINGS max_result_rows = 0",
                "SELECT ts_code FROM ods_daily FORMAT JSON SETTINGS max_result_rows = 0",
                "SELECT ts_code FROM ods_daily FORMAT TSV",
                "SET max_execution_time = 0",
                "SET readonly = 0",
                "SELECT {rows:UInt64}",
                "EXPLAIN PIPELINE max_threads = 64 SELECT 1",
                "SELECT getSetting('max_execution_time')",
                "SELECT sleep(3)",
                "SELECT sleepEachRow(1) FROM ods_daily"):
        await refused(http, sql)
    # the row cap of the server (20 here), and a lower one asked for
    status, body = await ask(http, "SELECT ts_code FROM ods_daily")
    assert status == 400 and "Limit for result" in body["error"]["message"]
    status, body = await ask(http, "SELECT ts_code FROM ods_daily LIMIT 10", max_rows=5)
    assert status == 400 and "more than 5 rows" in body["error"]["message"]
    status, body = await ask(http, "SELECT ts_code FROM ods_daily LIMIT 5", max_rows=5)
    assert status == 200 and len(body["rows"]) == 5
    # the time limit
    status, body = await ask(http, ENDLESS)
    assert status == 504 and body["error"]["code"] == "query_timeout", body


async def test_other_databases_and_system_tables_are_out_of_reach(http: TestClient) -> None:
    for sql in ("SELECT * FROM system.numbers LIMIT 1",
                "SELECT * FROM system.processes",
                "SELECT * FROM system.settings",
                "SELECT * FROM system.users",
                "SELECT * FROM information_schema.tables",
                "SELECT * FROM other.ods_daily",
                "SELECT count() FROM ods_daily WHERE ts_code IN system.users",
                "SELECT count() FROM ods_daily WHERE ts_code IN other.codes",
                "SHOW TABLES FROM information_schema",
                "SHOW COLUMNS FROM processes FROM system",
                "DESCRIBE TABLE system.processes",
                "EXISTS TABLE other.t",
                "SHOW CREATE TABLE system.users",
                "SHOW SETTINGS LIKE '%'",
                "SHOW PROCESSLIST",
                "SHOW USERS",
                "SHOW GRANTS",
                "SHOW CLUSTERS",
                "SELECT currentUser(), hostName()",
                "SELECT getServerSetting('tcp_port')",
                "SELECT filesystemAvailable()"):
        await refused(http, sql)


async def test_malformed_statements_get_a_clear_answer(http: TestClient) -> None:
    status, body = await ask(http, "SELEC 1")
    assert (status, body["error"]["code"]) == (400, "query_error")
    assert "Syntax error" in body["error"]["message"] and "parseQueryToJSON" not in str(body)
    status, body = await ask(http, "SELECT nope FROM ods_daily")
    assert (status, body["error"]["code"]) == (400, "query_error")
    assert "nope" in body["error"]["message"]
    message = await refused(http, "SELECT 1; SELECT 2")
    assert "one statement" in message
    status, body = await ask(http, "SELECT " + "(" * 500 + "1" + ")" * 500)
    assert status == 400 and body["error"]["code"] in ("read_only", "query_error")
    # after failures the sessions still answer
    status, body = await ask(http, "SELECT count() FROM ods_daily")
    assert (status, body["rows"]) == (200, [[50]])


# ------------------------------------------------------------------ deadlines
async def test_a_statement_past_its_deadline_is_killed(query_settings: Settings,
                                                       warehouse: Warehouse) -> None:
    """The engine's own limit set far away: the sandbox's deadline kills the
    statement, and the session count recovers."""
    sandbox = QuerySandbox(warehouse.url, replace(query_settings, query_timeout=0.5,
                                                  query_concurrency=1), engine_timeout=600)
    try:
        with pytest.raises(QueryTimeout, match="deadline"):
            await sandbox.run(ENDLESS)
        # the one session is free again: the next statement runs
        assert (await sandbox.run("SELECT count() FROM ods_daily"))["rows"] == [[50]]
        processes = await warehouse.run(
            warehouse.fetch, "SELECT count() FROM system.processes WHERE query LIKE "
                             "'%arrayJoin(range(100000))%' AND query NOT LIKE '%processes%'")
        assert processes["rows"] == [[0]]
    finally:
        await sandbox.aclose()


async def test_a_long_query_holds_up_neither_health_nor_other_queries(
        query_settings: Settings, warehouse: Warehouse) -> None:
    settings = replace(query_settings, query_timeout=60)
    app = create_app(settings, registry=PluginRegistry(), warehouse=warehouse)
    async with TestClient(TestServer(app)) as http:
        long = asyncio.create_task(ask(http, ENDLESS))
        sandbox = app[SANDBOX]
        for _ in range(200):
            if sandbox.running:
                break
            await asyncio.sleep(0.05)
        assert sandbox.running == 1
        resp = await http.get("/health")
        health = await resp.json()
        assert health["clickhouse"]["status"] == "ok"
        assert health["clickhouse"]["queries_running"] == 1
        status, body = await ask(http, "SELECT count() FROM ods_daily")
        assert (status, body["rows"]) == (200, [[50]])
        await sandbox.aclose()  # what a shutdown does: the long one is killed
        status, body = await long
        assert (status, body["error"]["code"]) == (504, "query_timeout")
        status, body = await ask(http, "SELECT 1")
        assert (status, body["error"]["code"]) == (503, "query_busy")


async def test_a_query_user_that_is_not_locked_is_refused(query_settings: Settings,
                                                          warehouse: Warehouse) -> None:
    """STOCKQ_CLICKHOUSE_QUERY_URL names a user whose profile must lock the session;
    one that is not read-only gets no statement run."""
    sandbox = QuerySandbox(warehouse.url, replace(query_settings,
                                                  clickhouse_query_url=warehouse.url))
    try:
        with pytest.raises(ConfigError, match="readonly=1"):
            await sandbox.run("SELECT 1")
    finally:
        await sandbox.aclose()


async def test_the_route_without_a_warehouse_or_with_a_bad_body(
        http: TestClient, query_settings: Settings) -> None:
    resp = await http.post("/api/v1/query", json={"query": "SELECT 1"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_input"
    app = create_app(query_settings, registry=PluginRegistry())
    async with TestClient(TestServer(app)) as bare:
        resp = await bare.post("/api/v1/query", json={"sql": "SELECT 1"})
        body = await resp.json()
        assert resp.status == 503 and body["error"]["code"] == "clickhouse_unavailable"
        assert "STOCKQ_CLICKHOUSE_URL" in body["error"]["message"]


def _call(base: str, sql: str, timeout: float = 120) -> tuple[int, Any]:
    req = urllib.request.Request(f"{base}/api/v1/query", method="POST",
                                 data=json.dumps({"sql": sql}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _health(base: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as err:  # 503 still carries the report
        return dict(json.loads(err.read()))


def test_stockq_run_stops_on_sigterm_while_a_query_runs(redis_url: str,
                                                         tmp_path: Path) -> None:
    """The real daemon, its token in its environment: /proc/self/environ stays shut,
    and SIGTERM ends it (exit 0) while a statement that would run for minutes is
    still working."""
    secret = "tushare-" + os.urandom(8).hex()
    port = free_port()
    env = worker_env(redis_url, STOCKQ_DATA_DIR=str(tmp_path / "data"), TUSHARE_TOKEN=secret,
                     STOCKQ_QUERY_TIMEOUT="600")
    proc = WorkerProcess(env, tmp_path / "run.log", "--no-scheduler", "--workers", "1",
                         "--port", str(port), command="run")
    base = f"http://127.0.0.1:{port}"
    answers: list[tuple[int, Any]] = []
    long = threading.Thread(target=lambda: answers.append(_call(base, ENDLESS)))
    try:
        wait_until(lambda: proc.events("daemon.started") or proc.proc.poll() is not None,
                   90, "stockq run")
        assert proc.proc.poll() is None, proc.log_path.read_text()[-3000:]
        status, body = _call(base, "SELECT * FROM file('/proc/self/environ', 'RawBLOB', "
                                   "'line String')")
        assert status == 400 and secret not in json.dumps(body)
        long.start()
        wait_until(lambda: _health(base).get("clickhouse", {}).get("queries_running") == 1,
                   30, "the long statement running")
        proc.signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=60) == 0, proc.log_path.read_text()[-3000:]
        long.join(60)
        assert answers and answers[0][0] == 504, answers
        assert proc.events("daemon.stopped") and proc.events("query.stopping")
    finally:
        proc.kill()
