"""What a supervisor does for its children's plugins (``call`` messages): loads rows
into ClickHouse, reads where a table ends, and admits TuShare calls under the shared
quota.  The child blocks until the ``reply``; errors come back as an error type the
runner's classification understands (``clickhouse`` and ``redis_unavailable`` are
retried, ``config_error`` is not)."""

from __future__ import annotations

from typing import Any

from app.errors import ConfigError, RedisUnavailable, StockqError
from app.logs import get_logger
from app.queue import TaskQueue
from app.quota import Quota
from plugins_bridge.warehouse import TableSpec, Warehouse, WarehouseError, WarehouseUnavailable

log = get_logger("stockq.worker")

NO_WAREHOUSE = ("this worker has no ClickHouse: set STOCKQ_CLICKHOUSE_URL to a ClickHouse "
                "server (the embedded engine is only opened by `stockq run`)")


class SupervisorServices:
    def __init__(self, queue: TaskQueue, warehouse: Warehouse | None) -> None:
        self.queue = queue
        self.warehouse = warehouse
        self.quota = Quota(queue, queue.settings.tushare_token)

    async def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The reply to one ``call`` message."""
        method = msg.get("method")
        try:
            if method == "quota":
                wait = await self.quota.acquire(str(msg["api"]), int(msg["limit"]))
                return _ok(wait)
            if method in ("load", "last_loaded"):
                if self.warehouse is None:
                    return _error("config_error", NO_WAREHOUSE)
                spec = TableSpec.from_dict(msg["table"])
                if method == "load":
                    rows = msg.get("rows") or []
                    return _ok(await self.warehouse.run(self.warehouse.insert, spec, rows))
                return _ok(await self.warehouse.run(self.warehouse.last_loaded, spec))
            return _error("protocol_error", f"unknown call {method!r}")
        except (KeyError, TypeError, ValueError) as exc:
            return _error("protocol_error", f"malformed {method} call: {exc}")
        except ConfigError as exc:
            return _error("config_error", exc.message)
        except (WarehouseError, WarehouseUnavailable) as exc:
            log.warning("clickhouse.failed", method=method, error=exc.message)
            return _error("clickhouse", exc.message)
        except RedisUnavailable as exc:
            return _error("redis_unavailable", exc.message)
        except StockqError as exc:
            return _error(exc.code, exc.message)


def _ok(result: Any) -> dict[str, Any]:
    return {"type": "reply", "ok": True, "result": result}


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "reply", "ok": False, "error_type": error_type, "error": message}
