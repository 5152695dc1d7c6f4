"""What a running plugin can ask and tell: the current task, and its progress.

Inside a worker child, :func:`report_progress` sends progress to the supervisor, which
writes it to the task (coalesced to a few writes a second).  Outside a worker (a plugin
called directly) it does nothing, so plugins can call it unconditionally::

    from plugins_bridge.progress import report_progress
    report_progress(40.0, records=1200, message="20240105")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Reporter = Callable[[dict[str, Any]], None]

_MIN_INTERVAL = 0.05  # seconds between progress messages a child sends
MESSAGE_SENT = 2000  # characters of a progress message sent (500 are stored)


@dataclass(slots=True)
class TaskContext:
    """The task a plugin is running (read-only for plugins)."""

    task_id: str
    plugin_name: str
    task_type: str
    attempt: int
    trade_dates: list[str] = field(default_factory=list)
    start_date: str = ""
    end_date: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = ""
    ts_code: str = ""  # the original producer's per-task fields
    data_source: str = ""


@dataclass(slots=True)
class _State:
    task: TaskContext | None = None
    reporter: Reporter | None = None
    last_sent: float = 0.0


_state = _State()


def current_task() -> TaskContext | None:
    return _state.task


def report_progress(percent: float, records: int | None = None, message: str = "",
                    *, checkpoint: str = "", force: bool = False) -> None:
    task, reporter = _state.task, _state.reporter
    if task is None or reporter is None:
        return
    now = time.monotonic()
    if not force and percent < 100 and now - _state.last_sent < _MIN_INTERVAL:
        return
    _state.last_sent = now
    msg: dict[str, Any] = {"type": "progress", "task_id": task.task_id,
                           "percent": max(0.0, min(100.0, float(percent)))}
    if records is not None:
        msg["records"] = int(records)
    if message:
        # the supervisor masks secrets, then keeps 500 characters: cut here only far
        # beyond that, so that a secret across the 500th character is masked whole
        msg["message"] = str(message)[:MESSAGE_SENT]
    if checkpoint:
        msg["checkpoint"] = checkpoint
    reporter(msg)


def bind(task: TaskContext | None, reporter: Reporter | None) -> None:
    """Used by the worker child around each task."""
    _state.task = task
    _state.reporter = reporter
    _state.last_sent = 0.0
