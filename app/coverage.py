"""Which trading days each warehouse table holds (``GET /api/v1/data/coverage``).

For every table a registered plugin loads (a plugin's ``table``, a
:class:`~plugins_bridge.warehouse.TableSpec`: the built-in TuShare datasets), the latest
day loaded and, over the last ``days`` calendar days, the trading days (from the
trading calendar the scheduler uses: TuShare's, cached in Redis, else the offline one)
that have no row.  Today counts as missing only once it has data elsewhere to compare
with: a day whose sync has not run yet is ``today: "not_yet"``, not a gap.  A table
without a date column (the stock list) reports its rows instead.  One statement per
table, on ClickHouse's own thread; nothing is created or changed.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.errors import InvalidInput
from app.queue import TaskQueue
from app.scheduler.calendar import TradingCalendar
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.warehouse import TableSpec, Warehouse

MAX_DAYS = 366


def plugin_tables(registry: PluginRegistry) -> list[tuple[TableSpec, list[str]]]:
    """The tables registered plugins load, each with the plugins that load it."""
    tables: dict[str, tuple[TableSpec, list[str]]] = {}
    for name in registry.names():
        spec = getattr(registry.get(name), "table", None)
        if isinstance(spec, TableSpec):
            tables.setdefault(spec.name, (spec, []))[1].append(name)
    return list(tables.values())


def parse_days(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_DAYS:
        raise InvalidInput(f"days must be a whole number between 1 and {MAX_DAYS}")
    return int(raw)


async def coverage(queue: TaskQueue, warehouse: Warehouse, registry: PluginRegistry,
                   days: int, *, today: date | None = None) -> dict[str, Any]:
    settings = queue.settings
    today = today or datetime.now(ZoneInfo(settings.timezone)).date()
    start = today - timedelta(days=days - 1)
    calendar = TradingCalendar(queue.client, settings)
    trading: list[date] = []
    source = "offline"
    for i in range(days):
        info = await calendar.day(start + timedelta(days=i))
        source = info.source
        if info.trading:
            trading.append(info.day)
    tables = plugin_tables(registry)
    found = await warehouse.run(_read, warehouse, [spec for spec, _ in tables], start, today)
    out = []
    for (spec, plugins), seen in zip(tables, found, strict=True):
        item: dict[str, Any] = {"table": spec.name, "plugins": plugins,
                                "date_column": spec.date_column, **seen}
        if spec.date_column and seen["exists"]:
            loaded = set(seen.pop("days"))
            item["loaded"] = [d.isoformat() for d in trading if d.isoformat() in loaded]
            gaps = [d for d in trading if d.isoformat() not in loaded]
            item["today"] = ("not_a_trading_day" if today not in trading
                             else "loaded" if today.isoformat() in loaded else "not_yet")
            item["missing"] = [d.isoformat() for d in gaps if d != today]
        else:
            seen.pop("days", None)
        out.append(item)
    return {"days": days, "start": start.isoformat(), "end": today.isoformat(),
            "timezone": settings.timezone,
            "calendar": {"exchange": settings.calendar_exchange, "source": source},
            "trading_days": [d.isoformat() for d in trading], "tables": out}


def _read(warehouse: Warehouse, specs: list[TableSpec], start: date, end: date
          ) -> list[dict[str, Any]]:
    existing = {row["name"] for row in warehouse.select(
        "SELECT name FROM system.tables WHERE database = currentDatabase()", {})}
    found: list[dict[str, Any]] = []
    for spec in specs:
        if spec.name not in existing:
            found.append({"exists": False, "latest": None, "last_loaded_at": None,
                          "rows": None})
            continue
        if spec.date_column:
            col = f"`{spec.date_column}`"
            row = warehouse.select(
                f"SELECT count() AS n, max({col}) AS latest, max(_ingested_at) AS loaded_at, "
                f"arraySort(groupUniqArrayIf({col}, {col} >= {{start:Date}} AND "
                f"{col} <= {{end:Date}})) AS days FROM `{spec.name}`",
                {"start": start, "end": end})[0]
            found.append({"exists": True, "latest": row["latest"] if row["n"] else None,
                          "last_loaded_at": row["loaded_at"] if row["n"] else None,
                          "rows": None, "days": row["days"]})
        else:
            row = warehouse.select(f"SELECT count() AS n, max(_ingested_at) AS loaded_at "
                                   f"FROM `{spec.name}` FINAL", {})[0]
            found.append({"exists": True, "latest": None,
                          "last_loaded_at": row["loaded_at"] if row["n"] else None,
                          "rows": row["n"]})
    return found
