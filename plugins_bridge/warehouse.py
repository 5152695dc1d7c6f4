"""The ClickHouse side of the data plugins: table specs, and the warehouse client.

A plugin describes each table it loads with a :class:`TableSpec`: typed columns, the
sorting key, the partition.  Every table is a ``ReplacingMergeTree(version)``: the
warehouse adds ``version`` (UInt64, milliseconds of the load) and ``_ingested_at``, so a
re-run of the same dates replaces rows instead of duplicating them (queries with
``FINAL`` see one row per key).  Tables are created on first use.

Rows travel from a worker child to its supervisor as JSON (dates as ``YYYY-MM-DD`` or
``YYYYMMDD`` strings); :meth:`TableSpec.convert` turns them into the column types before
the insert.  Only the supervisor (and the sidecar, for the audit history and its health
check) holds a :class:`Warehouse`; a child never does.  Operators' queries never run on
it: ``app.query_sandbox`` gives them read-only sessions of their own.

``STOCKQ_CLICKHOUSE_URL`` is a server (``http(s)://user:password@host:8123/database``) or
the embedded engine (``chdb:///abs/path``, from the ``chdb-core`` package).  Unset, it is
the embedded engine under ``STOCKQ_DATA_DIR/clickhouse``.  One process at a time may open
an embedded data directory, so only ``stockq run`` opens it; see :func:`open_warehouse`.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, TypeVar

from app.errors import ConfigError, StockqError, WarehouseError, WarehouseUnavailable
from app.logs import get_logger
from app.settings import Settings, redact_url

__all__ = ["Column", "TableSpec", "Warehouse", "WarehouseError", "WarehouseUnavailable",
           "jsonable", "open_warehouse", "short_error", "warehouse_url"]

log = get_logger("stockq.warehouse")

T = TypeVar("T")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPES = re.compile(
    r"^(Nullable\()?(String|Date|DateTime64\(3\)|Float64|Int64|UInt8|UInt32|UInt64)\)?$")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # String, Date, Float64, Int64, UInt8, UInt32, UInt64, or Nullable(one of them)

    @property
    def nullable(self) -> bool:
        return self.type.startswith("Nullable(")

    @property
    def base(self) -> str:
        return self.type[9:-1] if self.nullable else self.type


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    partition_by: str = ""  # e.g. toYYYYMM(trade_date)
    date_column: str = ""  # the column incremental loads continue from
    comment: str = ""
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        for name in [self.name, *names]:
            if not _IDENT.match(name):
                raise ConfigError(f"table {self.name!r}: {name!r} is not a plain identifier")
        for col in self.columns:
            if not _TYPES.match(col.type):
                raise ConfigError(f"table {self.name!r}: column {col.name} has unsupported "
                                  f"type {col.type!r}")
        if len(set(names)) != len(names) or {"version", "_ingested_at"} & set(names):
            raise ConfigError(f"table {self.name!r}: duplicate or reserved column names")
        for key in (*self.order_by, *([self.date_column] if self.date_column else [])):
            if key not in names:
                raise ConfigError(f"table {self.name!r}: {key!r} is not one of its columns")
        self._index.update({n: i for i, n in enumerate(names)})

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        cols = ",\n  ".join(f"`{c.name}` {c.type}" for c in self.columns)
        partition = f"\nPARTITION BY {self.partition_by}" if self.partition_by else ""
        comment = f"\nCOMMENT '{self.comment}'" if self.comment and "'" not in self.comment \
            else ""
        return (f"CREATE TABLE IF NOT EXISTS `{self.name}` (\n  {cols},\n"
                "  `version` UInt64,\n  `_ingested_at` DateTime\n)\n"
                f"ENGINE = ReplacingMergeTree(version){partition}\n"
                f"ORDER BY ({', '.join(self.order_by)}){comment}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "columns": [[c.name, c.type] for c in self.columns],
                "order_by": list(self.order_by), "partition_by": self.partition_by,
                "date_column": self.date_column, "comment": self.comment}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableSpec:
        try:
            return cls(str(d["name"]), tuple(Column(str(n), str(t)) for n, t in d["columns"]),
                       tuple(str(k) for k in d["order_by"]), str(d.get("partition_by", "")),
                       str(d.get("date_column", "")), str(d.get("comment", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed table spec: {exc}") from None

    def convert(self, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """JSON rows (in column order) -> values of the column types."""
        converters = [_converter(c) for c in self.columns]
        width = len(converters)
        out = []
        for i, row in enumerate(rows):
            if len(row) != width:
                raise WarehouseError(f"{self.name}: row {i} has {len(row)} values for "
                                     f"{width} columns")
            try:
                out.append([conv(v) for conv, v in zip(converters, row, strict=True)])
            except (TypeError, ValueError) as exc:
                raise WarehouseError(f"{self.name}: row {i}: {exc}") from None
        return out


def parse_day(value: Any) -> date:
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if len(text) == 8 and text.isdigit():
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    return date.fromisoformat(text[:10])


def parse_time(value: Any) -> datetime:
    """An ISO 8601 time as a naive UTC datetime (what a DateTime64 column stores)."""
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _converter(col: Column) -> Callable[[Any], Any]:
    bases: dict[str, Callable[[Any], Any]] = {"String": str, "Date": parse_day,
                                              "DateTime64(3)": parse_time, "Float64": float}
    base = bases.get(col.base, int)

    def convert(value: Any) -> Any:
        if value is None or (isinstance(value, float) and value != value):  # None, NaN
            if col.nullable:
                return None
            raise ValueError(f"{col.name} is null but the column is not Nullable")
        if value == "" and col.base != "String":
            if col.nullable:
                return None
            raise ValueError(f"{col.name} is empty")
        return base(value)

    return convert


def warehouse_url(settings: Settings) -> str:
    """The configured ClickHouse URL, or the embedded engine under the data directory."""
    if settings.clickhouse_url:
        return settings.clickhouse_url
    return f"chdb://{(settings.data_dir / 'clickhouse').resolve()}"


def is_embedded(url: str) -> bool:
    return url.startswith("chdb:")


class Warehouse:
    """One clickhouse-connect client, used from one thread (chdb is not thread-safe;
    a server client is cheap to serialise at this volume)."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        self.url = url
        self.embedded = is_embedded(url)
        self._created: set[str] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="clickhouse")
        if self.embedded and not url.split("://", 1)[1].startswith("/"):
            raise ConfigError(f"STOCKQ_CLICKHOUSE_URL={url!r}: the embedded engine needs an "
                              "absolute path (chdb:///abs/path)")
        if self.embedded:
            check_not_held(url.split("://", 1)[1])
        options: dict[str, Any] = {} if self.embedded else {
            "connect_timeout": 5, "send_receive_timeout": 300}

        def connect() -> Any:
            return clickhouse_connect.get_client(dsn=url, **options)

        self._connect: Callable[[], Any] = connect
        self._client: Any = None
        try:
            self._executor.submit(self._session).result()
        except WarehouseUnavailable as exc:
            if self.embedded:  # a local problem (a path, another process): say it now
                self._executor.shutdown(wait=False)
                raise
            # a server may come back: statements connect again when it does
            log.warning("clickhouse.unavailable", url=redact_url(url), error=exc.message)
            return
        log.info("clickhouse.opened", url=redact_url(url), embedded=self.embedded)

    def _session(self) -> Any:
        """The client, connecting first when there is none (on the warehouse thread)."""
        if self._client is None:
            try:
                self._client = self._connect()
            except Exception as exc:
                raise WarehouseUnavailable(f"ClickHouse at {redact_url(self.url)} cannot be "
                                           f"opened: {short_error(exc)}") from None
        return self._client

    @property
    def url_redacted(self) -> str:
        return redact_url(self.url)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._executor.submit(self._client.close).result(timeout=10)
            except Exception:  # closing is best effort
                pass
        self._executor.shutdown(wait=True)

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` on the warehouse thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(func, *args, **kwargs))

    # ------------------------------------------------------------ blocking calls
    def ensure_table(self, spec: TableSpec) -> None:
        if spec.name in self._created:
            return
        self._guard("command", spec.ddl())
        self._created.add(spec.name)

    def insert(self, spec: TableSpec, rows: Sequence[Sequence[Any]],
               versions: Sequence[int] | None = None) -> int:
        """Insert JSON rows into ``spec``'s table (created when missing).  Each row's
        version is the load time in ms, or ``versions[i]`` when given (a re-sent row
        then replaces itself, not a newer row)."""
        self.ensure_table(spec)
        if not rows:
            return 0
        typed = spec.convert(rows)
        version = time.time_ns() // 1_000_000
        now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
        for i, row in enumerate(typed):
            row += [versions[i] if versions is not None else version, now]
        self._guard("insert", spec.name, typed,
                    column_names=[*spec.column_names, "version", "_ingested_at"])
        return len(typed)

    def last_loaded(self, spec: TableSpec) -> str:
        """The latest ``date_column`` value loaded, as YYYYMMDD ('' when empty)."""
        self.ensure_table(spec)
        result = self._guard("query",
                             f"SELECT max(`{spec.date_column}`), count() FROM `{spec.name}`")
        newest, count = result.result_rows[0]
        return newest.strftime("%Y%m%d") if count else ""

    def select(self, sql: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        """stockq's own parameterised SELECT (server-side binding): rows as dicts."""
        result = self._guard("query", sql, parameters=parameters)
        names = list(result.column_names)
        return [{n: jsonable(v) for n, v in zip(names, row, strict=True)}
                for row in result.result_rows]

    def fetch(self, sql: str) -> dict[str, Any]:
        """stockq's own statement (never an operator's: those go through
        :mod:`app.query_sandbox`): columns, types and rows as JSON values."""
        result = self._guard("query", sql)
        return {"columns": list(result.column_names),
                "types": [t.name for t in result.column_types],
                "rows": [[jsonable(v) for v in row] for row in result.result_rows]}

    def ping(self) -> None:
        """``SELECT 1`` on the warehouse's own session (the health check)."""
        self._guard("query", "SELECT 1")

    def _guard(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.method(*args, **kwargs)``; failures become WarehouseError."""
        client = self._session()
        try:
            return getattr(client, method)(*args, **kwargs)
        except StockqError:
            raise
        except Exception as exc:
            self._reconnect()
            raise WarehouseError(f"ClickHouse: {short_error(exc)}") from None

    def _reconnect(self) -> None:
        """After a failed statement the embedded engine's result stream may still hold
        the rest of it (the next query would read it): start a fresh session.  Called
        on the warehouse thread."""
        if not self.embedded or self._client is None:
            return
        try:
            self._client.close()
        except Exception:  # a broken session may not close cleanly
            pass
        self._client = None


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] or type(exc).__name__


def embedded_holder(path: str) -> tuple[int, str] | None:
    """``(pid, command line)`` of the process holding the embedded engine at ``path``
    (its ``status`` file is locked; pid 0 when unknown), or None when it is free."""
    status = os.path.join(path, "status")
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None  # never opened, or not readable: the engine says why when it opens
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
    pid, command = 0, ""
    try:
        with open(status, encoding="utf-8", errors="replace") as fh:
            found = re.search(r"^PID: (\d+)", fh.read(), re.MULTILINE)
        pid = int(found.group(1)) if found else 0
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            command = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, ValueError):
        pass
    return pid, command


def check_not_held(path: str) -> None:
    """ConfigError (exit 5, one line) when another process holds the embedded engine at
    ``path`` (chdb would print its own ``Code: 76 ... Cannot lock file`` and fail)."""
    holder = embedded_holder(path)
    if holder is None:
        return
    pid, command = holder
    who = "another process"
    if pid:
        what = "`stockq run`" if re.search(r"(stockq|app\.cli)\b.*\brun\b", command) \
            else (command[:60] or "a process")
        who = f"{what} (pid {pid})"
    raise ConfigError(f"the embedded ClickHouse at {path} is in use by {who}: one process "
                      "at a time can open it. Stop that one, or give this one another "
                      "STOCKQ_DATA_DIR (or a ClickHouse server in STOCKQ_CLICKHOUSE_URL)")


def open_warehouse(settings: Settings, *, embedded_allowed: bool) -> Warehouse | None:
    """The warehouse of this process.

    * a server URL is opened by every role;
    * an explicit embedded URL (``chdb://``) is refused unless ``embedded_allowed``
      (only ``stockq run`` may hold the data directory) — ConfigError naming the fix;
    * no URL: the embedded engine when allowed, else None (this process works without
      ClickHouse; a task that loads rows fails with a config error naming the fix)."""
    url = settings.clickhouse_url
    if url and is_embedded(url) and not embedded_allowed:
        raise ConfigError(
            f"STOCKQ_CLICKHOUSE_URL={url!r} is the embedded ClickHouse, which only one "
            "process can open: use `stockq run` (all in one), or point "
            "STOCKQ_CLICKHOUSE_URL at a ClickHouse server (http://host:8123) when running "
            "stockq worker, scheduler and api as separate processes")
    if not url and not embedded_allowed:
        return None
    return Warehouse(warehouse_url(settings))
