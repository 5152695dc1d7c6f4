"""Running one task's plugin inside a worker child, and classifying how it ended.

Task types:

- a task with trade dates (any type) runs the plugin once per date, in date order, as
  ``run(trade_date=D, **params)``, reporting progress after each date with the date as
  checkpoint; a retry resumes after the task's checkpoint.  A plugin that sets
  ``per_trade_date = False`` runs once as ``run(trade_dates=[...], **params)``;
- otherwise the plugin runs once with ``params`` (plus ``start_date``/``end_date`` when
  the task has them).

A result whose ``status`` is not ``success``, or an exception, is a failed attempt.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugins_bridge import progress
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


def records_of(result: dict[str, Any]) -> int:
    try:
        return int(result.get("steps", {}).get("load", {}).get("total_records", 0) or 0)
    except (AttributeError, TypeError, ValueError):
        return 0


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
        text = str(result.get("error") or result.get("message")
                   or f"status {result.get('status')!r}")
        kind, retry_after = classify_message(text)
        return Outcome(False, records=records, error_type=str(result.get("error_type") or kind),
                       error=text, retry_after=retry_after)
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
    )
    progress.bind(ctx, reporter)
    try:
        if dates and not getattr(plugin, "per_trade_date", True):
            return _run_once(plugin.run, {**params, "trade_dates": dates}, proxy)
        if not dates:
            kwargs = dict(params)
            if ctx.start_date:
                kwargs.setdefault("start_date", ctx.start_date)
            if ctx.end_date:
                kwargs.setdefault("end_date", ctx.end_date)
            return _run_once(plugin.run, kwargs, proxy)
        base = int(task.get("records_processed") or 0) if ctx.checkpoint else 0
        return _run_dates(plugin.run, ctx, dates, params, base, proxy)
    finally:
        progress.bind(None, None)


def _run_dates(func: Callable[..., Any], ctx: progress.TaskContext, dates: list[str],
               params: dict[str, Any], records: int, proxy: ProxyConfig) -> Outcome:
    """One run per date after the checkpoint; ``records`` starts from earlier attempts."""
    todo = [d for d in sorted(dates) if not ctx.checkpoint or d > ctx.checkpoint]
    done = len(dates) - len(todo)
    checkpoint = ctx.checkpoint
    for date in todo:
        out = _run_once(func, {**params, "trade_date": date}, proxy)
        records += out.records
        if not out.ok:
            out.records = records
            out.checkpoint = checkpoint
            out.error = f"{date}: {out.error}"
            return out
        done += 1
        checkpoint = date
        progress.report_progress(100.0 * done / len(dates), records, date,
                                 checkpoint=date, force=True)
    return Outcome(True, records=records, checkpoint=checkpoint,
                   result={"status": "success", "dates": len(todo)})
