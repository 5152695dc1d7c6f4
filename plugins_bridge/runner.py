"""Running one task's plugin inside a worker child, and classifying how it ended.

Task types:

- a task with trade dates (any type) runs the plugin once per date, in date order, as
  ``run(trade_date=D, **params)``, reporting progress after each date with the date as
  checkpoint; a retry resumes after the task's checkpoint.  A plugin that sets
  ``per_trade_date = False`` runs once as ``run(trade_dates=[...], **params)``;
- otherwise the plugin runs once with ``params`` (plus ``start_date``/``end_date`` when
  the task has them);
- a plugin with ``plan_runs(task)`` says itself which calls a task makes
  (:class:`plugins_bridge.contract.RunPlan`): they run in order, with progress and the
  call's key as checkpoint, like dates.

A result whose ``status`` is not ``success``, or an exception, is a failed attempt.  The
records of a result are its load step's ``total_records``, else ``loaded_records``, else
the sum over ``tables_loaded``; a failure's message is its ``error`` with the errors of
its steps (``steps.load.error``, a failed validation).  A failed run's records are not
counted: the retry runs that call again.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugins_bridge import progress
from plugins_bridge.contract import RunCall, RunPlan
from plugins_bridge.errors import PluginError
from plugins_bridge.proxy import proxy_context
from plugins_bridge.registry import PluginRegistry

_NETWORK_WORDS = re.compile(
    r"(?i)(connection (refused|reset|aborted|error)|timed? ?out|temporarily unavailable|"
    r"name or service not known|max retries exceeded|remote end closed|50[234] )"
)
_RATE_WORDS = re.compile(
    r"(每分钟最多访问|每小时最多访问|每天最多访问|rate limit|too many requests|40203)",
    re.IGNORECASE,
)
RATE_LIMIT_WAIT = 60.0
_NET_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH,
               errno.ENETUNREACH, errno.ECONNABORTED, errno.EPIPE}


@dataclass(slots=True)
class Outcome:
    """How an attempt ended, as the supervisor needs it."""

    ok: bool
    records: int = 0
    error_type: str = ""
    error: str = ""
    retry_after: float | None = None
    checkpoint: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    def to_message(self, task_id: str) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "result", "task_id": task_id, "ok": self.ok,
                               "records": self.records}
        if not self.ok:
            msg.update(error_type=self.error_type, error=self.error)
        if self.retry_after:
            msg["retry_after"] = self.retry_after
        if self.checkpoint:
            msg["checkpoint"] = self.checkpoint
        if self.result:
            msg["result"] = self.result
        return msg


def classify_message(text: str) -> tuple[str, float | None]:
    """Error type of a failed result's message (plugins often return ``str(e)``)."""
    if _RATE_WORDS.search(text):
        return "rate_limit", RATE_LIMIT_WAIT
    if _NETWORK_WORDS.search(text):
        return "network", None
    return "plugin_error", None


def classify(exc: BaseException) -> tuple[str, str, float | None]:
    """``(error_type, message, retry_after)`` of an exception raised by a plugin."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PluginError):
        return exc.error_type, exc.message, exc.retry_after
    if isinstance(exc, MemoryError):  # numpy's _ArrayMemoryError too; a limit was hit
        return "memory_exceeded", message, None
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"ConnectionError", "Timeout", "TimeoutError", "ChunkedEncodingError"} or \
            isinstance(exc, socket.timeout | ConnectionError | TimeoutError):
        return "network", message, None
    if isinstance(exc, OSError) and exc.errno in _NET_ERRNOS:
        return "network", message, None
    if isinstance(exc, KeyError):
        return "schema_error", message, None
    if isinstance(exc, ValueError | TypeError):
        return "bad_params", message, None
    kind, retry_after = classify_message(str(exc))
    return ("error" if kind == "plugin_error" else kind), message, retry_after


_RECORD_KEYS = ("total_records", "loaded_records", "records")


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def records_of(result: dict[str, Any]) -> int:
    """Rows a result says it loaded (see the module docstring); 0 when it says none."""
    steps = result.get("steps")
    load = steps.get("load") if isinstance(steps, dict) else None
    if not isinstance(load, dict):
        return 0
    for key in _RECORD_KEYS:
        if key in load:
            return max(_number(load[key]) or 0, 0)
    tables = load.get("tables_loaded")
    if isinstance(tables, list):
        return sum(max(_number(t.get("records")) or 0, 0) for t in tables if isinstance(t, dict))
    return 0


def failure_text(result: dict[str, Any]) -> str:
    """The cause of a failed result: its ``error`` (and ``error_detail``), then what its
    steps say (``load: <error>``, ``validate: failed``), else its status."""
    parts: list[str] = []
    for text in (result.get("error") or result.get("message"), result.get("error_detail")):
        text = str(text or "").strip()
        if text and text not in parts:
            parts.append(text)
    steps = result.get("steps")
    for name, step in (steps.items() if isinstance(steps, dict) else ()):
        if not isinstance(step, dict):
            continue
        error = str(step.get("error") or "").strip()
        if error and not any(error in p for p in parts):
            parts.append(f"{name}: {error}")
        elif not error and step.get("status") == "failed":
            parts.append(f"{name}: failed")
    return "; ".join(parts) or f"status {result.get('status')!r}"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The task proxy of this worker (read once from the settings by the child)."""

    url: str = ""
    no_proxy: tuple[str, ...] = ()


def _run_once(func: Callable[..., Any], kwargs: dict[str, Any], proxy: ProxyConfig) -> Outcome:
    try:
        with proxy_context(proxy.url, proxy.no_proxy):
            result = func(**kwargs)
    except Exception as exc:  # the plugin's failure, classified; never a crash
        kind, message, retry_after = classify(exc)
        return Outcome(False, error_type=kind, error=message, retry_after=retry_after)
    if not isinstance(result, dict):
        return Outcome(False, error_type="invalid_result",
                       error=f"run() returned {type(result).__name__}, not a result dict")
    records = records_of(result)
    if result.get("status") != "success":
        text = failure_text(result)
        kind, retry_after = classify_message(text)
        stated = _number(result.get("retry_after"))
        return Outcome(False, records=records, error_type=str(result.get("error_type") or kind),
                       error=text, retry_after=float(stated) if stated else retry_after)
    summary = {k: v for k, v in result.items() if k in ("status", "steps", "message")}
    return Outcome(True, records=records, result=summary)


def run_task(registry: PluginRegistry, task: dict[str, Any],
             reporter: progress.Reporter | None, proxy: ProxyConfig | None = None) -> Outcome:
    """Run the plugin of ``task`` (a decoded task dict) and return its outcome."""
    name = str(task.get("plugin_name", ""))
    if name not in registry:
        return Outcome(False, error_type="plugin_not_found",
                       error=f"plugin {name!r} is not registered in this worker "
                             f"(known: {', '.join(registry.names()) or 'none'})")
    plugin = registry.get(name)
    proxy = proxy or ProxyConfig()
    params = dict(task.get("params") or {})
    dates = [str(d) for d in task.get("trade_dates") or []]
    ctx = progress.TaskContext(
        task_id=str(task["task_id"]), plugin_name=name, task_type=str(task.get("task_type")),
        attempt=int(task.get("attempt", 1)), trade_dates=dates,
        start_date=str(task.get("start_date") or ""), end_date=str(task.get("end_date") or ""),
        params=params, checkpoint=str(task.get("checkpoint") or ""),
        ts_code=str(task.get("ts_code") or ""), data_source=str(task.get("data_source") or ""),
    )
    base = int(task.get("records_processed") or 0) if ctx.checkpoint else 0
    progress.bind(ctx, reporter)
    try:
        planner = getattr(plugin, "plan_runs", None)
        if callable(planner):
            return _run_plan(plugin.run, planner, ctx, base, proxy)
        if dates and not getattr(plugin, "per_trade_date", True):
            return _run_once(plugin.run, {**params, "trade_dates": dates}, proxy)
        if not dates:
            kwargs = dict(params)
            if ctx.start_date:
                kwargs.setdefault("start_date", ctx.start_date)
            if ctx.end_date:
                kwargs.setdefault("end_date", ctx.end_date)
            return _run_once(plugin.run, kwargs, proxy)
        calls = [RunCall(d, {**params, "trade_date": d}) for d in sorted(dates)]
        return _run_calls(plugin.run, ctx, calls, base, proxy)
    finally:
        progress.bind(None, None)


def _run_plan(func: Callable[..., Any], planner: Callable[..., Any],
              ctx: progress.TaskContext, records: int, proxy: ProxyConfig) -> Outcome:
    try:
        plan = planner(ctx)
    except Exception as exc:  # the plan itself failed (e.g. a bad date): classified
        kind, message, retry_after = classify(exc)
        return Outcome(False, error_type=kind, error=message, retry_after=retry_after)
    if not isinstance(plan, RunPlan):
        return Outcome(False, error_type="invalid_result",
                       error=f"plan_runs() returned {type(plan).__name__}, not a RunPlan")
    if not plan.calls:
        return Outcome(True, result={"status": "success",
                                     "message": plan.note or "nothing to run"})
    return _run_calls(func, ctx, list(plan.calls), records, proxy)


def _run_calls(func: Callable[..., Any], ctx: progress.TaskContext, calls: list[RunCall],
               records: int, proxy: ProxyConfig) -> Outcome:
    """The calls after the checkpoint, in order; ``records`` starts from earlier attempts
    (a failed call's records are not counted: the retry runs it again)."""
    todo = [c for c in calls if not ctx.checkpoint or not c.key or c.key > ctx.checkpoint]
    done = len(calls) - len(todo)
    checkpoint = ctx.checkpoint
    message = ""
    for call in todo:
        out = _run_once(func, call.kwargs, proxy)
        if not out.ok:
            out.records = records
            out.checkpoint = checkpoint
            if call.key:
                out.error = f"{call.key}: {out.error}"
            return out
        records += out.records
        message = str(out.result.get("message") or "")
        done += 1
        checkpoint = call.key or checkpoint
        progress.report_progress(100.0 * done / len(calls), records, call.key,
                                 checkpoint=call.key, force=True)
    result: dict[str, Any] = {"status": "success", "dates": len(todo)}
    if len(todo) == 1 and message:
        result["message"] = message
    return Outcome(True, records=records, checkpoint=checkpoint, result=result)
