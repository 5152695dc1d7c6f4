"""What the sidecar tells about a plugin beyond :meth:`PluginRegistry.describe`: its
table and metadata, and what its table holds in the warehouse (read-only).

* :func:`table_of` — the table a plugin loads: a built-in plugin's
  :class:`~plugins_bridge.warehouse.TableSpec` (``table``), or an adapted plugin's
  ``table_schema`` (stock_datasource's schema.json).  Its date column is the spec's, or
  the first of :data:`DATE_COLUMNS` the table has; a table without one is a dimension
  table (no dates to check).
* :func:`meta_of` — version, category and role: what the plugin declares, else
  ``1.0.0``, ``cn_stock`` and ``basic`` for a plugin other plugins depend on,
  ``primary`` otherwise.
* :class:`TableReader` — rows, latest date and the dates present in a plugin's table,
  and :meth:`TableReader.check_dependencies`: a required dependency that is not
  registered, or whose table has no rows, leaves a plugin unsatisfied (as
  stock_datasource's ``check_dependencies``).  Without a warehouse (a sidecar with no
  ClickHouse) or without a table, nothing is read and no data is reported missing.

Table and column names come from plugin declarations and are checked to be plain
identifiers (``db.table`` allowed) before they are quoted into a statement; values go
as bound parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.errors import UnknownPlugin
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.warehouse import TableSpec, Warehouse, WarehouseError, WarehouseUnavailable

DATE_COLUMNS = ("trade_date", "cal_date", "trade_time", "ann_date", "end_date",
                "report_date", "surv_date")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
NO_DATA = "No data in table"


@dataclass(frozen=True, slots=True)
class PluginTable:
    name: str
    columns: tuple[dict[str, Any], ...] = ()  # name, data_type, nullable, comment, default
    order_by: tuple[str, ...] = ()
    partition_by: str = ""
    engine: str = "ReplacingMergeTree"
    engine_params: tuple[str, ...] = ()
    comment: str = ""
    table_type: str = "ods"
    date_column: str = ""

    @property
    def quoted(self) -> str:
        return ".".join(f"`{part}`" for part in self.name.split("."))


@dataclass(frozen=True, slots=True)
class PluginMeta:
    version: str
    category: str
    role: str
    config: dict[str, Any] = field(default_factory=dict)


def _from_spec(spec: TableSpec) -> PluginTable:
    columns = tuple({"name": c.name, "data_type": c.type, "nullable": c.nullable,
                     "comment": None, "default": None} for c in spec.columns)
    return PluginTable(spec.name, columns, tuple(spec.order_by), spec.partition_by,
                       "ReplacingMergeTree", ("version",), spec.comment, "ods",
                       spec.date_column)


def _from_schema(schema: dict[str, Any]) -> PluginTable | None:
    name = schema.get("table_name")
    if not isinstance(name, str) or not _NAME.match(name):
        return None
    columns = tuple(
        {"name": str(c.get("name", "")), "data_type": str(c.get("data_type", "String")),
         "nullable": bool(c.get("nullable", True)), "comment": c.get("comment"),
         "default": None if c.get("default") is None else str(c.get("default"))}
        for c in schema.get("columns") or () if isinstance(c, dict))
    names = {c["name"] for c in columns}
    date_column = next((d for d in DATE_COLUMNS if d in names), "")

    def texts(value: Any) -> tuple[str, ...]:
        return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()

    return PluginTable(name, columns, texts(schema.get("order_by")),
                       str(schema.get("partition_by") or ""),
                       str(schema.get("engine") or "ReplacingMergeTree"),
                       texts(schema.get("engine_params")), str(schema.get("comment") or ""),
                       str(schema.get("table_type") or "ods"), date_column)


def table_of(plugin: Any) -> PluginTable | None:
    """The table ``plugin`` loads, or None when it declares none."""
    spec = getattr(plugin, "table", None)
    if isinstance(spec, TableSpec):
        return _from_spec(spec)
    schema = getattr(plugin, "table_schema", None)
    return _from_schema(schema) if isinstance(schema, dict) else None


def meta_of(registry: PluginRegistry, name: str) -> PluginMeta:
    plugin = registry.get(name)
    role = getattr(plugin, "role", "") or ""
    if not role:
        needed = any(name in (getattr(registry.get(other), "dependencies", ()) or ())
                     for other in registry.names())
        role = "basic" if needed else "primary"
    config = getattr(plugin, "config", None)
    return PluginMeta(str(getattr(plugin, "version", "") or "1.0.0"),
                      str(getattr(plugin, "category", "") or "cn_stock"), str(role),
                      dict(config) if isinstance(config, dict) else {})


def _day(value: Any) -> str | None:
    text = str(value or "")[:10]
    return text if len(text) == 10 and text[4] == "-" else None


_AS_DATE = "toDate(parseDateTimeBestEffortOrNull(toString({col})))"


@dataclass(frozen=True, slots=True)
class DependencyCheck:
    plugin_name: str
    dependencies: list[str]
    optional_dependencies: list[str]
    missing_plugins: list[str]
    missing_data: dict[str, str]
    details: list[dict[str, Any]]  # plugin_name, has_data, table_name, record_count

    @property
    def satisfied(self) -> bool:
        return not self.missing_plugins and not self.missing_data


class TableReader:
    """Read-only looks at plugins' tables through the sidecar's warehouse (or none)."""

    def __init__(self, warehouse: Warehouse | None) -> None:
        self.warehouse = warehouse

    async def _run(self, table: PluginTable, sql: str, params: dict[str, Any] | None = None
                   ) -> list[dict[str, Any]] | None:
        """Rows of ``sql`` (``{t}``: the table, ``{d}``: its date as a Date), or None
        when there is no warehouse or the table does not exist."""
        if self.warehouse is None:
            return None
        warehouse = self.warehouse
        statement = sql.format(t=table.quoted, d=_AS_DATE.format(col=f"`{table.date_column}`")
                               if table.date_column else "NULL")

        def read() -> list[dict[str, Any]] | None:
            exists = warehouse.select("EXISTS TABLE " + table.quoted, {})
            if not exists or not list(exists[0].values())[0]:
                return None
            return warehouse.select(statement, params or {})

        return await warehouse.run(read)

    async def has_rows(self, table: PluginTable) -> bool | None:
        """True/False, or None when it cannot be known (no warehouse)."""
        if self.warehouse is None:
            return None
        rows = await self._run(table, "SELECT 1 AS one FROM {t} LIMIT 1")
        return bool(rows)

    async def status(self, table: PluginTable) -> tuple[int, str | None]:
        """(rows, latest date as YYYY-MM-DD or None)."""
        latest = "toString(max({d}))" if table.date_column else "NULL"
        rows = await self._run(table, f"SELECT count() AS n, {latest} AS latest FROM {{t}}")
        if not rows:
            return 0, None
        return int(rows[0]["n"]), _day(rows[0]["latest"]) if rows[0]["n"] else None

    async def latest_dates(self, tables: Iterable[PluginTable]) -> dict[str, str]:
        """Table name -> its latest date, for the tables with a date column and rows."""
        out: dict[str, str] = {}
        for table in tables:
            if table.date_column and table.name not in out:
                _, latest = await self.status(table)
                if latest:
                    out[table.name] = latest
        return out

    async def dates_present(self, table: PluginTable, dates: Sequence[str]) -> set[str]:
        """Which of ``dates`` (YYYY-MM-DD) have rows; for a table without a date column,
        all of them when it has rows."""
        days = [d for d in dates if _day(d)]
        if not table.date_column:
            return set(days) if await self.has_rows(table) else set()
        if not days:
            return set()
        rows = await self._run(table, "SELECT DISTINCT toString({d}) AS day FROM {t} "
                                      "WHERE {d} IN {{days:Array(Date)}}", {"days": days})
        return {str(r["day"]) for r in rows or ()}

    async def preview(self, table: PluginTable, day: str | None, page: int, size: int
                      ) -> tuple[list[str], list[dict[str, Any]], int] | None:
        """A page of the table's rows (of ``day`` when given and the table has a date
        column), newest first, with the count; None when the table does not exist."""
        where = " WHERE {d} = {{day:Date}}" if day and table.date_column else ""
        order = " ORDER BY {d} DESC" if table.date_column else ""
        params: dict[str, Any] = {"limit": size, "offset": (page - 1) * size}
        if where:
            params["day"] = day
        rows = await self._run(table, "SELECT * FROM {t}" + where + order
                               + " LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}", params)
        counted = await self._run(table, "SELECT count() AS cnt FROM {t}" + where, params)
        if rows is None or counted is None:
            return None
        columns = list(rows[0]) if rows else [c["name"] for c in table.columns]
        return columns, rows, int(counted[0]["cnt"])

    async def check_dependencies(self, registry: PluginRegistry, name: str) -> DependencyCheck:
        plugin = registry.get(name)
        deps = list(getattr(plugin, "dependencies", ()) or ())
        optional = list(getattr(plugin, "optional_dependencies", ()) or ())
        missing_plugins: list[str] = []
        missing_data: dict[str, str] = {}
        details: list[dict[str, Any]] = []
        for dep in deps:
            try:
                table = table_of(registry.get(dep))
            except UnknownPlugin:
                missing_plugins.append(dep)
                details.append({"plugin_name": dep, "has_data": False, "table_name": None,
                                "record_count": 0})
                continue
            has = None
            if table is not None:
                try:
                    has = await self.has_rows(table)
                except (WarehouseError, WarehouseUnavailable) as exc:
                    missing_data[dep] = f"Check failed: {exc.message[:100]}"
                    has = False
                else:
                    if has is False:
                        missing_data[dep] = NO_DATA
            details.append({"plugin_name": dep, "has_data": bool(has),
                            "table_name": table.name if table else None, "record_count": 0})
        return DependencyCheck(name, deps, optional, missing_plugins, missing_data, details)
