"""One error tree for stockq.

Every error stockq raises on purpose derives from :class:`StockqError`.  Each class
carries a stable machine ``code`` (used in HTTP error bodies and CLI messages) and the
HTTP status the sidecar maps it to.  Messages are built by the error itself and never
contain secrets.
"""

from __future__ import annotations


class StockqError(Exception):
    """Base of every error stockq raises on purpose."""

    code: str = "error"
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class ConfigError(StockqError):
    """A setting is missing or malformed."""

    code = "config_error"
    http_status = 500


class RedisUnavailable(StockqError):
    """Redis is disabled or cannot be reached (Mode A: there is no other path)."""

    code = "redis_unavailable"
    http_status = 503


class InvalidInput(StockqError):
    """A request or command argument is malformed."""

    code = "invalid_input"
    http_status = 400


class UnknownPlugin(InvalidInput):
    """The plugin name is not in the registry."""

    code = "unknown_plugin"

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(sorted(known)) if known else "none are registered"
        super().__init__(f"unknown plugin {name!r}; known plugins: {listed}")
        self.name = name
        self.known = sorted(known)


class DependencyCycle(InvalidInput):
    """Plugin or task dependencies form a cycle."""

    code = "dependency_cycle"

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = cycle


class NotFound(StockqError):
    code = "not_found"
    http_status = 404


class TaskNotFound(NotFound):
    code = "task_not_found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} does not exist (or has expired)")
        self.task_id = task_id


class ExecutionNotFound(NotFound):
    code = "execution_not_found"

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution {execution_id!r} does not exist (or has expired)")
        self.execution_id = execution_id


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(known) or "none are configured"
        super().__init__(f"no schedule named {name!r}; known schedules: {listed}")
        self.name = name


class GroupNotFound(NotFound):
    code = "group_not_found"

    def __init__(self, group_id: str) -> None:
        super().__init__(f"no plugin group {group_id!r}")
        self.group_id = group_id


class ReadOnlyGroup(StockqError):
    """A plugin group declared by the plugins themselves cannot be edited or deleted."""

    code = "read_only_group"
    http_status = 403


class NothingToRun(StockqError):
    """A schedule job was run by hand but has nothing to enqueue."""

    code = "nothing_to_run"
    http_status = 409


class WarehouseError(StockqError):
    """ClickHouse refused or failed a statement."""

    code = "clickhouse_error"
    http_status = 502


class WarehouseUnavailable(StockqError):
    code = "clickhouse_unavailable"
    http_status = 503


class ReadOnlyViolation(StockqError):
    """A query through the read-only path was not a single read-only statement."""

    code = "read_only"
    http_status = 400


class QueryError(StockqError):
    """ClickHouse rejected an operator's query (syntax, unknown table, a limit hit)."""

    code = "query_error"
    http_status = 400


class QueryTimeout(QueryError):
    """A query ran past its time limit and was stopped."""

    code = "query_timeout"
    http_status = 504


class QueryBusy(StockqError):
    """Every query session is taken and none came free within the query's deadline."""

    code = "query_busy"
    http_status = 503


class IllegalTransition(StockqError):
    """The task is not in a state that allows the requested change."""

    code = "illegal_transition"
    http_status = 409


class Conflict(IllegalTransition):
    """An id the caller chose is already taken."""

    code = "conflict"


class StaleLease(IllegalTransition):
    """The caller's lease token no longer owns the task (a newer attempt does)."""

    code = "stale_lease"
