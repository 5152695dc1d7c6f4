"""``stockq query`` and ``stockq history`` when no sidecar answers: read the warehouse
from this process, read-only, when nothing else holds it (a ClickHouse server always;
the embedded engine when no daemon has it open), or say exactly what to run.

Queries go through the same sandbox as ``POST /api/v1/query`` (canonical parse, the
policy, a session locked with ``readonly=1``, the same limits); the history through the
same read as ``GET /api/v1/history``."""

from __future__ import annotations

import os
from typing import Any

from app.errors import StockqError
from app.query_sandbox import QuerySandbox
from app.settings import Settings, redact_url
from plugins_bridge.warehouse import (
    Warehouse,
    embedded_holder,
    is_embedded,
    warehouse_url,
)


def local_warehouse(settings: Settings, sidecar: str) -> str:
    """The warehouse URL this process may read, or StockqError (exit 1) saying what to
    run (``sidecar``: the address that did not answer)."""
    url = warehouse_url(settings)
    if not is_embedded(url):
        return url
    path = url.split("://", 1)[1]
    if not os.path.isdir(path):
        raise StockqError(
            f"no sidecar answers at {sidecar} and there is no warehouse at {path} yet: "
            "start `stockq run` (or `ops/run.sh`; `ops/run.sh --demo` to try it offline), "
            "whose syncs fill it, then ask again (or pass --url)")
    holder = embedded_holder(path)
    if holder is not None:
        pid, command = holder
        who = f"pid {pid}: {command[:80]}" if pid else "another process"
        raise StockqError(
            f"no sidecar answers at {sidecar}, and the embedded ClickHouse at {path} is "
            f"held by {who}: ask its sidecar (--url http://HOST:PORT), or restart that "
            "`stockq run` without --no-api")
    return url


async def local_query(settings: Settings, url: str, sql: str,
                      max_rows: int | None) -> dict[str, Any]:
    sandbox = QuerySandbox(url, settings)
    try:
        return await sandbox.run(sql, max_rows=max_rows)
    finally:
        await sandbox.aclose()


async def local_history(url: str, **filters: Any) -> list[dict[str, Any]]:
    from app.audit import history

    warehouse = Warehouse(url)
    try:
        return await history(warehouse, **filters)
    finally:
        warehouse.close()


def describe(url: str) -> str:
    return url.split("://", 1)[1] if is_embedded(url) else redact_url(url)

