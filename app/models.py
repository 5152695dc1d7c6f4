"""Typed records: task and execution status, task specs, and decoding of stored hashes.

Task hashes written by stockq carry ``schema=2`` (``1`` before a task's dependents moved
into its hash; both decode the same) and execution hashes ``schema=1``.  Hashes written
by the original ``TaskQueue`` (no schema field, naive local ISO timestamps, ``priority``
as an int, ``trade_dates`` as JSON) decode too; missing or malformed fields fall back to
defaults instead of failing the whole read.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, Protocol

from app.errors import InvalidInput
from app.keys import DEFAULT_QUEUE

SCHEMA_VERSION = 1


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.RETRYING})


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskType(StrEnum):
    INCREMENTAL = "incremental"
    FULL = "full"
    BACKFILL = "backfill"


class Priority(IntEnum):
    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, value: object) -> Priority:
        """Accept ``high|normal|low`` (any case) or 0-2 (int or digit string)."""
        if isinstance(value, bool):
            raise InvalidInput("priority must be high, normal, low or 0-2")
        if isinstance(value, int):
            if value in (0, 1, 2):
                return cls(value)
            raise InvalidInput(f"priority {value} is out of range (0-2)")
        if isinstance(value, str):
            text = value.strip().lower()
            if text in {"high", "normal", "low"}:
                return cls[text.upper()]
            if text in {"0", "1", "2"}:
                return cls(int(text))
        raise InvalidInput(f"priority {value!r} must be high, normal, low or 0-2")


def parse_date(value: object, what: str = "date") -> str:
    """A real calendar date as YYYYMMDD (accepts YYYYMMDD or YYYY-MM-DD)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string (YYYYMMDD or YYYY-MM-DD)")
    text = value.strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        if len(text) == (8 if fmt == "%Y%m%d" else 10):
            try:
                return datetime.strptime(text, fmt).date().strftime("%Y%m%d")
            except ValueError:
                continue
    raise InvalidInput(f"{what} {value!r} is not a real date (YYYYMMDD or YYYY-MM-DD)")


def _bounded_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise InvalidInput(f"{what} must be an integer")
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}")
    return value


MAX_MEMORY_LIMIT_MB = 1024 * 1024  # a task's memory_limit_mb: 1 MB to 1 TB
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_queue_name(value: object) -> str:
    """A named queue: 1-64 letters, digits, ``_``, ``.`` or ``-``."""
    if not isinstance(value, str) or not _QUEUE_NAME.fullmatch(value.strip()):
        raise InvalidInput(f"queue {value!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return value.strip()


@dataclass(frozen=True, slots=True)
class Limits:
    """Validation bounds (from Settings)."""

    default_timeout_seconds: int = 3600
    max_timeout_seconds: int = 7 * 24 * 3600
    default_max_attempts: int = 3
    max_attempts_limit: int = 20
    max_trade_dates: int = 10_000


def _dates_json(dates: tuple[str, ...]) -> str:
    return _list_json(list(dates)) if dates else "[]"


# Encoders built once (json.dumps with arguments builds one per call): the stored
# params, the stored trade dates and the dedup identity, as before
_params_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
_list_json = json.JSONEncoder().encode
_digest_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """The work a task does, validated.  Build with :meth:`build`."""

    plugin_name: str
    task_type: TaskType = TaskType.INCREMENTAL
    trade_dates: tuple[str, ...] = ()
    start_date: str = ""
    end_date: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    timeout_seconds: int = 3600
    max_attempts: int = 3
    memory_limit_mb: int = 0  # 0: the plugin's limit, else the worker's default
    user_id: str = ""
    username: str = ""
    trigger: str = "manual"
    # the original producer's per-task fields, handed to every call of the plugin
    ts_code: str = ""
    data_source: str = ""
    queue: str = ""  # a named queue (capability routing); '' = the default queue

    @classmethod
    def build(
        cls,
        plugin_name: object,
        *,
        task_type: object = TaskType.INCREMENTAL,
        trade_dates: object = None,
        start_date: object = None,
        end_date: object = None,
        params: object = None,
        priority: object = Priority.NORMAL,
        timeout_seconds: object = None,
        max_attempts: object = None,
        memory_limit_mb: object = None,
        user_id: object = "",
        username: object = "",
        trigger: str = "manual",
        ts_code: object = "",
        data_source: object = "",
        queue: object = None,
        limits: Limits | None = None,
    ) -> TaskSpec:
        lim = limits or Limits()
        if not isinstance(plugin_name, str) or not plugin_name.strip():
            raise InvalidInput("plugin_name must be a non-empty string")
        try:
            ttype = TaskType(str(task_type))
        except ValueError:
            raise InvalidInput(
                f"task_type {task_type!r} must be one of incremental, full, backfill"
            ) from None
        dates: tuple[str, ...] = ()
        if trade_dates is not None:
            if not isinstance(trade_dates, list | tuple):
                raise InvalidInput("trade_dates must be a list of dates")
            if not trade_dates:
                raise InvalidInput("trade_dates must not be empty when given")
            if len(trade_dates) > lim.max_trade_dates:
                raise InvalidInput(f"trade_dates has more than {lim.max_trade_dates} dates")
            dates = tuple(sorted({parse_date(d, "trade date") for d in trade_dates}))
        start = parse_date(start_date, "start_date") if start_date not in (None, "") else ""
        end = parse_date(end_date, "end_date") if end_date not in (None, "") else ""
        if start and end and start > end:
            raise InvalidInput(f"start_date {start} is after end_date {end}")
        if params is None:
            params = {}
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise InvalidInput("params must be an object with string keys")
        try:
            json.dumps(params)
        except (TypeError, ValueError):
            raise InvalidInput("params must be JSON-serialisable") from None
        timeout = (
            lim.default_timeout_seconds
            if timeout_seconds is None
            else _bounded_int(timeout_seconds, "timeout_seconds", 1, lim.max_timeout_seconds)
        )
        attempts = (
            lim.default_max_attempts
            if max_attempts is None
            else _bounded_int(max_attempts, "max_attempts", 1, lim.max_attempts_limit)
        )
        memory = 0 if memory_limit_mb is None else _bounded_int(
            memory_limit_mb, "memory_limit_mb", 1, MAX_MEMORY_LIMIT_MB)
        for name, val in (("user_id", user_id), ("username", username), ("ts_code", ts_code),
                          ("data_source", data_source)):
            if not isinstance(val, str) or len(val) > 200:
                raise InvalidInput(f"{name} must be a string of at most 200 characters")
        return cls(
            plugin_name=plugin_name.strip(),
            task_type=ttype,
            trade_dates=dates,
            start_date=start,
            end_date=end,
            params=dict(params),
            priority=Priority.parse(priority),
            timeout_seconds=timeout,
            max_attempts=attempts,
            memory_limit_mb=memory,
            user_id=str(user_id),
            username=str(username),
            trigger=trigger,
            ts_code=str(ts_code).strip(),
            data_source=str(data_source).strip(),
            queue=parse_queue_name(queue) if queue not in (None, "") else "",
        )

    def identity(self) -> list[Any]:
        """What makes two specs the same work, without the params (which follow it in
        :meth:`dedup_digest`): plugin, type, dates, and the per-task code and data
        source when either is set."""
        ident: list[Any] = [self.plugin_name, self.task_type.value, list(self.trade_dates),
                            self.start_date, self.end_date]
        if self.ts_code or self.data_source:
            ident += [self.ts_code, self.data_source]
        return ident

    def dedup_digest(self) -> str:
        """Identity of the work: same plugin, type, dates, code, source and params =>
        same digest."""
        return hashlib.sha1(_digest_json([*self.identity(), self.params]).encode("utf-8")
                            ).hexdigest()

    def to_fields(self, task_id: str) -> dict[str, str]:
        """The hash fields the Lua scripts write for this spec (all strings)."""
        out = {
            "task_id": task_id,
            "plugin_name": self.plugin_name,
            "task_type": self.task_type.value,
            "trade_dates": _dates_json(self.trade_dates),
            "start_date": self.start_date,
            "end_date": self.end_date,
            "priority": str(int(self.priority)),
            "timeout_seconds": str(self.timeout_seconds),
            "max_attempts": str(self.max_attempts),
            "user_id": self.user_id,
            "username": self.username,
            "trigger": self.trigger,
            "dedup_key": self.dedup_digest(),
        }
        if self.params:
            out["params"] = _params_json(self.params)
        if self.memory_limit_mb:
            out["memory_limit_mb"] = str(self.memory_limit_mb)
        if self.ts_code:
            out["ts_code"] = self.ts_code
        if self.data_source:
            out["data_source"] = self.data_source
        if self.queue and self.queue != DEFAULT_QUEUE:
            out["queue"] = self.queue
        return out


# ---------------------------------------------------------------- decoding


def _int(raw: str | None, default: int = 0) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(float(raw))
    except (ValueError, OverflowError):  # "abc", "nan", "inf"
        return default


def _float(raw: str | None, default: float = 0.0) -> float:
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        return default


def _json(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def _when(raw: str | None) -> datetime | None:
    """ISO timestamps (aware or the original's naive local ones) or epoch ms."""
    if not raw:
        return None
    text = raw.strip()
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        value = datetime.fromisoformat(text)
        return value if value.tzinfo else value.astimezone()
    except (ValueError, OverflowError, OSError):  # not a date, or out of range
        return None


def _status(raw: str | None) -> TaskStatus:
    try:
        return TaskStatus(raw or "pending")
    except ValueError:
        return TaskStatus.PENDING


def _priority(raw: str | None) -> Priority:
    """A stored priority read as the Lua scripts read it (``prio_of`` in lib.lua): a
    number 0-2, anything else is normal.  (Parsing "high" here would report a priority
    the queue does not use when it requeues the task.)"""
    try:
        p = float(raw or 1)
    except ValueError:
        return Priority.NORMAL
    return Priority(int(p)) if 0 <= p <= 2 else Priority.NORMAL


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(slots=True)
class Task:
    """A task as stored in ``stock:task:{id}``."""

    task_id: str
    plugin_name: str
    task_type: str
    status: TaskStatus
    trade_dates: list[str]
    start_date: str
    end_date: str
    params: dict[str, Any]
    priority: Priority
    progress: float
    records_processed: int
    error_message: str
    last_error_type: str
    attempt: int
    max_attempts: int
    timeout_seconds: int
    created_at: datetime | None
    updated_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    next_run_at: datetime | None
    deadline_at: datetime | None
    execution_id: str
    user_id: str
    username: str
    trigger: str
    retry_of: str
    retried_by: str
    depends_on: list[str]
    waiting_on: int
    worker: str
    lease_token: str
    cancel_requested: bool
    progress_message: str
    checkpoint: str
    result: Any
    duration_ms: int | None
    schema: int
    memory_limit_mb: int = 0  # the task's own limit (0: the plugin's, else the worker's)
    # what the last attempt that ended printed (app/worker/output.py): the masked last
    # bytes, how many it printed in all, which attempt that was
    output: str = ""
    output_bytes: int = 0
    output_attempt: int = 0
    ts_code: str = ""  # the original producer's per-task fields
    data_source: str = ""
    queue: str = DEFAULT_QUEUE  # the named queue it waits in (capability routing)

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Task:
        params = _json(h.get("params"), {})
        dates = _json(h.get("trade_dates"), [])
        return cls(
            task_id=h.get("task_id", ""),
            plugin_name=h.get("plugin_name", ""),
            task_type=h.get("task_type", "") or "incremental",
            status=_status(h.get("status")),
            trade_dates=[str(d) for d in dates] if isinstance(dates, list) else [],
            start_date=h.get("start_date", ""),
            end_date=h.get("end_date", ""),
            params=params if isinstance(params, dict) else {},
            priority=_priority(h.get("priority")),
            progress=_float(h.get("progress")),
            records_processed=_int(h.get("records_processed")),
            error_message=h.get("error_message", ""),
            last_error_type=h.get("last_error_type", ""),
            attempt=_int(h.get("attempt")),
            max_attempts=_int(h.get("max_attempts"), 3),
            timeout_seconds=_int(h.get("timeout_seconds"), 3600) or 3600,
            created_at=_when(h.get("created_at")),
            updated_at=_when(h.get("updated_at")),
            started_at=_when(h.get("started_at")),
            completed_at=_when(h.get("completed_at")),
            next_run_at=_when(h.get("next_run_at")),
            deadline_at=_when(h.get("deadline_at")),
            execution_id=h.get("execution_id", ""),
            user_id=h.get("user_id", ""),
            username=h.get("username", ""),
            trigger=h.get("trigger", "") or ("legacy" if "schema" not in h else ""),
            retry_of=h.get("retry_of", ""),
            retried_by=h.get("retried_by", ""),
            depends_on=_json(h.get("depends_on"), []),
            waiting_on=_int(h.get("waiting")),
            worker=h.get("worker", ""),
            lease_token=h.get("lease_token", ""),
            cancel_requested=bool(h.get("cancel_requested")),
            progress_message=h.get("progress_message", ""),
            checkpoint=h.get("checkpoint", ""),
            result=_json(h.get("result"), None),
            duration_ms=_int(h.get("duration_ms")) if h.get("duration_ms") else None,
            schema=_int(h.get("schema")),
            memory_limit_mb=_int(h.get("memory_limit_mb")),
            output=h.get("output", ""),
            output_bytes=_int(h.get("output_bytes")),
            output_attempt=_int(h.get("output_attempt")),
            ts_code=h.get("ts_code", ""),
            data_source=h.get("data_source", ""),
            queue=h.get("queue") or DEFAULT_QUEUE,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (timestamps ISO 8601; the lease token is not exposed)."""
        out = {f.name: getattr(self, f.name) for f in _TASK_FIELDS}  # shallow: no deep copy
        out["trade_dates"] = list(self.trade_dates)
        out["params"] = dict(self.params)
        out["depends_on"] = list(self.depends_on)
        out["status"] = self.status.value
        out["priority"] = int(self.priority)
        out["priority_name"] = self.priority.name.lower()
        for key in ("created_at", "updated_at", "started_at", "completed_at", "next_run_at",
                    "deadline_at"):
            out[key] = _iso(getattr(self, key))
        return out


_TASK_FIELDS = tuple(f for f in fields(Task) if f.name != "lease_token")


class Leased(Protocol):
    """What a transition of a running attempt needs: the task and its lease token."""

    @property
    def task_id(self) -> str: ...

    @property
    def lease_token(self) -> str: ...


#: The fields of a claimed task a worker needs to run it, in the order ``claim_next``
#: (lib.lua: WORK_FIELDS) returns them for a worker claim.  ``attempt`` is the new one.
WORK_FIELDS = (
    "task_id", "plugin_name", "attempt", "execution_id", "timeout_seconds", "checkpoint",
    "records_processed", "task_type", "trade_dates", "start_date", "end_date", "params",
    "memory_limit_mb", "ts_code", "data_source",
)


@dataclass(slots=True)
class WorkItem:
    """A task claimed by a worker, as the supervisor needs it: what it logs and what the
    transitions of the attempt need (decoded), and the stored fields the child decodes
    to run it (:func:`app.worker.protocol.work_payload`) — a claim for a worker returns
    only these instead of the whole hash."""

    task_id: str
    plugin_name: str
    attempt: int
    execution_id: str
    timeout_seconds: int
    checkpoint: str
    lease_token: str
    fields: dict[str, str]  # WORK_FIELDS -> stored value ("" when absent)

    @classmethod
    def from_values(cls, values: list[Any], lease_token: str) -> WorkItem:
        """From claim_next's list of values (WORK_FIELDS order; None when absent)."""
        f = {k: v or "" for k, v in zip(WORK_FIELDS, values, strict=True)}
        return cls(
            task_id=f["task_id"], plugin_name=f["plugin_name"], attempt=_int(f["attempt"]),
            execution_id=f["execution_id"],
            timeout_seconds=_int(f["timeout_seconds"], 3600) or 3600,
            checkpoint=f["checkpoint"], lease_token=lease_token, fields=f,
        )


@dataclass(slots=True)
class Execution:
    """A batch of tasks as stored in ``stock:execution:{id}``."""

    execution_id: str
    status: ExecutionStatus
    trigger_type: str
    group_name: str
    date_range: str
    plugins: list[str]
    total: int
    completed: int
    failed: int
    cancelled: int
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    legacy_task_ids: list[str]
    schema: int

    @property
    def pending(self) -> int:
        return max(0, self.total - self.completed - self.failed - self.cancelled)

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Execution:
        try:
            status = ExecutionStatus(h.get("status") or "pending")
        except ValueError:
            status = ExecutionStatus.RUNNING
        plugins = _json(h.get("plugins"), [])
        legacy = _json(h.get("task_ids"), [])
        return cls(
            execution_id=h.get("execution_id", ""),
            status=status,
            trigger_type=h.get("trigger_type", ""),
            group_name=h.get("group_name", ""),
            date_range=h.get("date_range", ""),
            plugins=plugins if isinstance(plugins, list) else [],
            total=_int(h.get("total_plugins")),
            completed=_int(h.get("completed_plugins")),
            failed=_int(h.get("failed_plugins")),
            cancelled=_int(h.get("cancelled_plugins")),
            created_at=_when(h.get("created_at")),
            started_at=_when(h.get("started_at")),
            completed_at=_when(h.get("completed_at")),
            legacy_task_ids=legacy if isinstance(legacy, list) else [],
            schema=_int(h.get("schema")),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("legacy_task_ids")
        out["status"] = self.status.value
        out["pending"] = self.pending
        for key in ("created_at", "started_at", "completed_at"):
            out[key] = _iso(getattr(self, key))
        return out
