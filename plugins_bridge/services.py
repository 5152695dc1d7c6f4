"""What a data plugin asks of the worker while it runs: load rows into ClickHouse, find
where a table's data ends, and wait for the shared TuShare quota.

Inside a worker child these go to the supervisor over the child's pipe (the child never
holds a Redis or ClickHouse connection; DESIGN §2): the child sends a ``call`` message
and blocks until the supervisor's ``reply``.  A plugin called directly (tests, a
notebook) can bind :class:`LocalServices` over a warehouse instead.  ::

    from plugins_bridge import services
    loaded = services.current().load(TABLE, rows)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from plugins_bridge.errors import ConfigurationError, PluginError
from plugins_bridge.warehouse import TableSpec, Warehouse

LOAD_CHUNK = 5_000  # rows per message to the supervisor (and per insert)
MAX_QUOTA_SLEEP = 60.0


class Services(Protocol):
    def load(self, spec: TableSpec, rows: Sequence[Sequence[Any]]) -> int: ...

    def last_loaded(self, spec: TableSpec) -> str: ...

    def acquire(self, api: str, limit_per_minute: int | None) -> None: ...


class ServiceError(PluginError):
    """The supervisor could not do what the plugin asked (e.g. ClickHouse failed)."""

    def __init__(self, error_type: str, message: str, retry_after: float | None = None
                 ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.error_type = error_type


class _Unbound:
    def _fail(self) -> ConfigurationError:
        return ConfigurationError("no worker services: this plugin loads into ClickHouse "
                                  "and must run in a stockq worker (or bind LocalServices)")

    def load(self, spec: TableSpec, rows: Sequence[Sequence[Any]]) -> int:
        raise self._fail()

    def last_loaded(self, spec: TableSpec) -> str:
        raise self._fail()

    def acquire(self, api: str, limit_per_minute: int | None) -> None:
        return None


_current: list[Services] = [_Unbound()]


def current() -> Services:
    return _current[0]


def bind(services: Services | None) -> None:
    _current[0] = services if services is not None else _Unbound()


Call = Callable[[dict[str, Any]], dict[str, Any]]


class ChildServices:
    """Services over the child's pipe: ``call(message) -> reply`` blocks for the reply."""

    def __init__(self, call: Call, sleep: Callable[[float], None] = time.sleep) -> None:
        self._call = call
        self._sleep = sleep
        self._specs_sent: set[str] = set()

    def _ask(self, message: dict[str, Any]) -> Any:
        reply = self._call({"type": "call", **message})
        if not reply.get("ok"):
            raise ServiceError(str(reply.get("error_type") or "service_error"),
                               str(reply.get("error") or "the supervisor refused"),
                               reply.get("retry_after"))
        return reply.get("result")

    def load(self, spec: TableSpec, rows: Sequence[Sequence[Any]]) -> int:
        loaded = 0
        for start in range(0, len(rows), LOAD_CHUNK):
            loaded += int(self._ask({"method": "load", "table": spec.to_dict(),
                                     "rows": [list(r) for r in
                                              rows[start:start + LOAD_CHUNK]]}))
        return loaded

    def last_loaded(self, spec: TableSpec) -> str:
        return str(self._ask({"method": "last_loaded", "table": spec.to_dict()}) or "")

    def acquire(self, api: str, limit_per_minute: int | None) -> None:
        if not limit_per_minute:
            return
        while True:
            wait = float(self._ask({"method": "quota", "api": api,
                                    "limit": int(limit_per_minute)}) or 0)
            if wait <= 0:
                return
            self._sleep(min(wait, MAX_QUOTA_SLEEP))


class LocalServices:
    """Services over a warehouse in this process, with no shared quota."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def load(self, spec: TableSpec, rows: Sequence[Sequence[Any]]) -> int:
        return self.warehouse.insert(spec, rows)

    def last_loaded(self, spec: TableSpec) -> str:
        return self.warehouse.last_loaded(spec)

    def acquire(self, api: str, limit_per_minute: int | None) -> None:
        return None
