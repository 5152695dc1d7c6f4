"""The plugin contract.

A plugin is any object with a ``name`` and ``run(**params) -> dict`` whose result has
the shape of the original ``BasePlugin.run``::

    {"status": "success" | "failed" | ..., "steps": {"load": {"total_records": N}},
     "error": "..."}

(``loaded_records`` or ``tables_loaded`` count too, see
:func:`plugins_bridge.runner.records_of`).  It may declare defaults the queue uses when a
submission does not say otherwise (timeout, per task type too, attempts, a named queue),
what a worker needs to run it (``requires``), a rate limit, dependencies and a
schedule, and plan its own calls for a task (``plan_runs(task) -> RunPlan``).
Subclassing :class:`Plugin` is convenient but not required.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class PluginLike(Protocol):
    name: str

    def run(self, **params: Any) -> dict[str, Any]: ...


class Plugin:
    """Convenience base class with every optional declaration."""

    name: str = ""
    description: str = ""
    default_timeout_seconds: int | None = None
    default_max_attempts: int | None = None
    rate_limit_per_minute: int | None = None
    dependencies: tuple[str, ...] = ()
    optional_dependencies: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    schedule: str | None = None
    # False: a task with trade dates runs the plugin once with ``trade_dates=[...]``
    # instead of once per date (for sources that are not queried by date)
    per_trade_date: bool = True
    # timeouts by task type (``{"full": 7200}``); others take default_timeout_seconds
    task_timeouts: Mapping[str, int] = {}
    # what a worker needs to run it: "tushare_token" (a TuShare token), "warehouse" (a
    # ClickHouse the worker loads rows into); a worker without them does not claim it
    requires: tuple[str, ...] = ()
    # the named queue its tasks wait in when a submission names none (None: "default")
    queue: str | None = None

    def run(self, **params: Any) -> dict[str, Any]:
        raise NotImplementedError(f"plugin {self.name!r} does not implement run()")


def success(records: int = 0, **extra: Any) -> dict[str, Any]:
    """A result in the original shape for ``records`` loaded."""
    return {"status": "success", "steps": {"load": {"total_records": records}}, **extra}


def failure(error: str, **extra: Any) -> dict[str, Any]:
    return {"status": "failed", "error": error, **extra}


@dataclass(frozen=True, slots=True)
class RunCall:
    """One ``run(**kwargs)`` of a plan.  ``key`` orders the calls and is the task's
    checkpoint once the call succeeded (a retry resumes after it); ``""`` for none."""

    key: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What a task asks of a plugin that plans its own runs (``plan_runs(task)``, given
    the :class:`plugins_bridge.progress.TaskContext`): the calls in order, or none with
    ``note`` saying why (the task then completes with 0 records)."""

    calls: tuple[RunCall, ...]
    note: str = ""
