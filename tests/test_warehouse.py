"""The warehouse over the embedded ClickHouse (chdb): tables, idempotent loads, its own
reads, and who may open the embedded engine; the shared quota."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.queue import TaskQueue
from app.quota import Quota, token_digest
from app.settings import Settings
from plugins_bridge.tushare.datasets import DAILY, DAILY_BASIC
from plugins_bridge.warehouse import (
    Column,
    TableSpec,
    Warehouse,
    WarehouseError,
    open_warehouse,
    warehouse_url,
)


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    wh = Warehouse(f"chdb://{tmp_path / 'ch'}")
    yield wh
    wh.close()  # one embedded path per process at a time


def bar(code: str, day: str, close: float) -> list[object]:
    return [code, day, close, close, close, close, None, None, None, 10.0, 100.0]


def test_ddl_is_a_replacing_merge_tree_partitioned_by_month() -> None:
    ddl = DAILY.ddl()
    assert "ENGINE = ReplacingMergeTree(version)" in ddl
    assert "PARTITION BY toYYYYMM(trade_date)" in ddl
    assert "ORDER BY (ts_code, trade_date)" in ddl
    assert "`pre_close` Nullable(Float64)" in ddl and "`close` Float64" in ddl


def test_bad_table_specs_are_refused() -> None:
    with pytest.raises(ConfigError, match="not a plain identifier"):
        TableSpec("t; DROP", (Column("a", "String"),), ("a",))
    with pytest.raises(ConfigError, match="unsupported type"):
        TableSpec("t", (Column("a", "Array(String)"),), ("a",))
    with pytest.raises(ConfigError, match="reserved"):
        TableSpec("t", (Column("version", "UInt64"),), ("version",))
    with pytest.raises(ConfigError, match="not one of its columns"):
        TableSpec("t", (Column("a", "String"),), ("b",))
    assert TableSpec.from_dict(DAILY.to_dict()) == DAILY


def test_rows_are_converted_to_the_column_types() -> None:
    [row] = DAILY.convert([bar("000001.SZ", "20260105", 10)])
    assert row[:3] == ["000001.SZ", date(2026, 1, 5), 10.0] and row[6] is None
    with pytest.raises(WarehouseError, match="close is null"):
        DAILY.convert([["000001.SZ", "2026-01-05", 1.0, 1.0, 1.0, None, None, None, None,
                        None, None]])
    with pytest.raises(WarehouseError, match="has 2 values"):
        DAILY.convert([["a", "20260105"]])


def test_a_reload_replaces_rows_instead_of_duplicating(warehouse: Warehouse) -> None:
    assert warehouse.last_loaded(DAILY) == ""  # creates the table on first use
    rows = [bar("000001.SZ", "20260105", 10), bar("000002.SZ", "20260105", 20)]
    assert warehouse.insert(DAILY, rows) == 2
    assert warehouse.insert(DAILY, [bar("000001.SZ", "20260105", 11)]) == 1
    final = warehouse.fetch("SELECT ts_code, close FROM ods_daily FINAL ORDER BY ts_code")
    assert final["rows"] == [["000001.SZ", 11.0], ["000002.SZ", 20.0]]
    assert warehouse.last_loaded(DAILY) == "20260105"


def test_fetch_reads_rows_as_json_values(warehouse: Warehouse) -> None:
    """stockq's own reads (the audit history, doctor, tests); operators' statements go
    through the query sandbox (tests/test_query_sandbox.py)."""
    warehouse.insert(DAILY_BASIC, [["000001.SZ", "2026-01-05", 1.0, None, None, None, None,
                                    None, None]])
    result = warehouse.fetch("SELECT ts_code, trade_date, pe FROM ods_daily_basic")
    assert result == {"columns": ["ts_code", "trade_date", "pe"],
                      "types": ["String", "Date", "Nullable(Float64)"],
                      "rows": [["000001.SZ", "2026-01-05", None]]}
    with pytest.raises(WarehouseError, match="nope"):
        warehouse.fetch("SELECT nope FROM ods_daily_basic")
    # after a failed statement the next one reads its own result (the session is renewed)
    assert warehouse.fetch("SELECT count() FROM ods_daily_basic")["rows"] == [[1]]
    warehouse.ping()


def test_only_stockq_run_may_open_the_embedded_engine(settings: Settings,
                                                      tmp_path: Path) -> None:
    embedded = replace(settings, clickhouse_url=f"chdb://{tmp_path}/x", data_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        open_warehouse(embedded, embedded_allowed=False)
    assert "stockq run" in err.value.message and "http://host:8123" in err.value.message
    assert open_warehouse(replace(settings, data_dir=tmp_path), embedded_allowed=False) is None
    assert warehouse_url(replace(settings, data_dir=tmp_path)) == \
        f"chdb://{tmp_path.resolve() / 'clickhouse'}"


async def test_the_quota_is_shared_per_token_and_api(queue: TaskQueue, settings: Settings
                                                     ) -> None:
    other = TaskQueue(queue.client, settings)  # another process, same Redis
    try:
        a, b = Quota(queue, "token-1"), Quota(other, "token-1")
        waits = await asyncio.gather(*(q.acquire("daily", 5) for q in (a, b) * 4))
        assert sorted(w == 0 for w in waits) == [False] * 3 + [True] * 5
        assert all(0 < w <= 60 for w in waits if w)
        # another API and another token have windows of their own
        assert await a.acquire("adj_factor", 5) == 0
        assert await Quota(queue, "token-2").acquire("daily", 5) == 0
    finally:
        await other.aclose()
    keys = await queue.client.keys("stock:quota:*")
    assert all("token-1" not in k and "token-2" not in k for k in keys)
    assert f"stock:quota:{token_digest('token-1')}:daily" in keys
    ttl = await queue.client.pttl(f"stock:quota:{token_digest('token-1')}:daily")
    assert 0 < ttl <= 60_000


def test_a_server_that_is_down_is_connected_to_later(tmp_path: Path) -> None:
    """A ClickHouse server down at start does not stop a process: statements fail with
    WarehouseUnavailable (retried by their callers) until it answers."""
    import socket

    from plugins_bridge.warehouse import WarehouseUnavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    wh = Warehouse(f"http://default:pw@127.0.0.1:{port}/default")
    try:
        with pytest.raises(WarehouseUnavailable, match="cannot be opened") as err:
            wh.insert(DAILY, [bar("000001.SZ", "20260105", 10)])
        assert "pw" not in err.value.message
    finally:
        wh.close()
