"""The task commands: ``submit`` (and ``--wait``), ``status``, ``cancel``, ``retry``,
``tasks`` and ``stats``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from app.cli_format import TASK_COLUMNS, print_json, show_task, table, task_row
from app.models import Task, TaskStatus
from app.queue import TaskQueue
from app.settings import Settings

EXIT_FAILED = 1
Command = Callable[[argparse.Namespace, Settings, TaskQueue], Awaitable[int]]


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} must look like key=value")
    return key, value


def _kv_json(text: str) -> tuple[str, Any]:
    key, value = _kv(text)
    try:
        return key, json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not JSON") from None



async def cmd_submit(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    from app.submission import build_spec  # (at use: `stockq worker` starts sooner)
    from plugins_bridge.registry import PluginRegistry

    registry = PluginRegistry.from_settings(settings)
    params: dict[str, Any] = dict(args.param or [])
    params.update(dict(args.param_json or []))
    spec = build_spec(
        registry,
        settings,
        args.plugin,
        task_type=args.type,
        trade_dates=args.date or None,
        start_date=args.start,
        end_date=args.end,
        params=params,
        priority=args.priority,
        timeout_seconds=args.timeout,
        max_attempts=args.max_attempts,
        memory_limit_mb=args.memory_limit_mb,
        queue=args.queue,
        trigger="cli",
    )
    task_id, created = await queue.enqueue(spec)
    task = await queue.get(task_id)
    # with --json, stdout holds the JSON only (the task, or with --wait the task as it
    # ended); what --wait says on the way goes to stderr
    said = sys.stderr if args.json else sys.stdout
    if args.json and not args.wait:
        print_json({**task.to_dict(), "created": created})
    elif created:
        print(f"submitted {task_id} ({spec.plugin_name}, {spec.task_type.value})", file=said)
    else:
        print(f"already queued: {task_id} is {task.status.value} with the same work",
              file=said)
    if not args.wait:
        return 0
    task = await follow(queue, task_id, timeout=args.wait_timeout, answer=said)
    if args.json:
        print_json(task.to_dict())
    return 0 if task.status == TaskStatus.COMPLETED else EXIT_FAILED


def _progress_line(t: Task) -> str:
    filled = int(t.progress / 5)
    line = (f"{t.status.value:<9} [{'#' * filled}{'.' * (20 - filled)}] {t.progress:5.1f}%  "
            f"records {t.records_processed}  attempt {t.attempt}/{t.max_attempts}")
    if t.status == TaskStatus.RETRYING and t.last_error_type:
        line += f"  (retrying after {t.last_error_type})"
    return line


async def follow(queue: TaskQueue, task_id: str, interval: float = 0.25,
                 timeout: float | None = None, answer: TextIO | None = None) -> Task:
    """Show the task's progress on stderr until it ends (a bar on a terminal, a line per
    change otherwise); print how it ended.  While it waits for a worker that no live one
    is, say why at once (and again when that changes); after ``timeout`` seconds stop
    waiting (the task stays queued)."""
    tty = sys.stderr.isatty()
    last, said = "", ""
    loop = asyncio.get_running_loop()
    started = next_check = loop.time()
    while True:
        task = await queue.get(task_id)
        if loop.time() >= next_check:
            next_check = loop.time() + 5.0
            reason = await waiting_reason(queue, task)
            if reason != said:
                if reason:
                    print(("\n" if tty and last else "") + f"stockq: {reason}; waiting "
                          "(the task stays queued)", file=sys.stderr, flush=True)
                    last = ""
                said = reason
        line = _progress_line(task)
        if line != last:
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr,
                  flush=True)
            last = line
        if task.status.terminal:
            break
        if timeout is not None and loop.time() - started >= timeout:
            if tty:
                print(file=sys.stderr)
            print(f"{task.status.value} {task_id}: still {task.status.value} after "
                  f"{timeout:g} s (it stays queued; `stockq status {task_id}`)",
                  file=sys.stderr)
            return task
        await asyncio.sleep(interval)
    if tty:
        print(file=sys.stderr)
    if task.status == TaskStatus.COMPLETED:
        note = task.result.get("message") if isinstance(task.result, dict) else None
        print(f"completed {task_id}: {task.records_processed} records"
              + (f" ({note})" if note else ""), file=answer or sys.stdout)
    else:
        detail = f" [{task.last_error_type}] {task.error_message}" if task.error_message else ""
        print(f"{task.status.value} {task_id}{detail}", file=sys.stderr)
    return task


async def waiting_reason(queue: TaskQueue, task: Task) -> str:
    """Why a ready pending task waits for a worker ('' when a live one can run it, or
    the task is not ready)."""
    from app.liveness import live, waiting_reason

    if task.status != TaskStatus.PENDING or task.waiting_on:
        return ""
    return waiting_reason(await live(queue), task.plugin_name, task.queue)


async def cmd_status(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    task = await queue.get(args.task_id)
    reason = await waiting_reason(queue, task)
    if args.json:
        print_json({**task.to_dict(), **({"waiting_reason": reason} if reason else {})})
    else:
        show_task(task, settings.timezone)
        if reason:
            print(f"\nwaiting: {reason}")
    return 0


async def cmd_cancel(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    outcome = await queue.cancel(args.task_id)
    if outcome == "cancelled":
        print(f"cancelled {args.task_id}")
    else:
        print(f"cancel requested for running task {args.task_id}; its worker will stop it")
    return 0


async def cmd_retry(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    new_id = await queue.retry(args.task_id, trigger="retry", from_start=args.from_start)
    task = await queue.get(new_id)
    if args.json:
        print_json(task.to_dict())
    else:
        resume = f", resuming after {task.checkpoint}" if task.checkpoint else ""
        print(f"retrying {args.task_id} as new task {new_id}{resume}")
    return 0


async def cmd_tasks(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    from app import queries

    page = await queries.list_tasks(
        queue, status=args.status, plugin=args.plugin, execution_id=args.execution,
        limit=args.limit, cursor=args.cursor,
    )
    if args.json:
        print_json({"items": [t.to_dict() for t in page.items], "next_cursor": page.next_cursor})
        return 0
    if not page.items:
        print("no tasks")
    else:
        print(table(TASK_COLUMNS, [task_row(t, settings.timezone) for t in page.items]))
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    return 0


async def cmd_stats(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    from app import queries

    stats = (await queries.queue_stats(queue)).to_dict()
    if args.json:
        print_json(stats)
        return 0
    ready = stats["ready"]
    print(f"ready     high {ready['0']}  normal {ready['1']}  low {ready['2']}")
    print(f"delayed   {stats['delayed']}")
    if stats["parked_total"]:
        print(f"parked    {stats['parked_total']} (waiting for a worker that runs them: "
              + ", ".join(f"{r} {n}" for r, n in stats["parked"].items()) + ")")
    print(f"running   {stats['running']}")
    print("by status " + "  ".join(f"{k} {v}" for k, v in stats["by_status"].items()))
    print(f"executions {stats['executions']}")
    return 0


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("submit", help="queue a plugin run")
    p.add_argument("plugin", help="the plugin to run (stockq doctor lists them)")
    p.add_argument("--type", default="incremental", choices=["incremental", "full", "backfill"],
                   help="incremental (default): up to the latest day; full: everything; "
                        "backfill: the dates given")
    p.add_argument("--date", action="append", metavar="YYYYMMDD",
                   help="a trade date to load (repeat for more)")
    p.add_argument("--start", metavar="D", help="first date of a range (YYYYMMDD)")
    p.add_argument("--end", metavar="D", help="last date of a range (YYYYMMDD)")
    p.add_argument("--priority", default="normal", help="high, normal (default), low or 0-2")
    p.add_argument("--timeout", type=int, metavar="S",
                   help="seconds an attempt may run (default: the plugin's, else "
                        "STOCKQ_DEFAULT_TIMEOUT)")
    p.add_argument("--max-attempts", type=int, metavar="N",
                   help="attempts before it fails for good (default: the plugin's, else 3)")
    p.add_argument("--memory-limit-mb", type=int, metavar="MB",
                   help="memory limit of the task's worker child (default: the plugin's, "
                        "else STOCKQ_MEMORY_LIMIT_MB)")
    p.add_argument("--queue", metavar="NAME",
                   help="the named queue it waits in (default: the plugin's, else "
                        "'default'); only workers started with --queue NAME take it")
    p.add_argument("--param", action="append", type=_kv, metavar="K=V",
                   help="string parameter passed to the plugin (repeat)")
    p.add_argument("--param-json", action="append", type=_kv_json, metavar="K=JSON",
                   help="JSON parameter passed to the plugin (repeat)")
    p.add_argument("--wait", action="store_true",
                   help="follow the task with a progress bar; exit 0 only if it completes")
    p.add_argument("--wait-timeout", type=float, metavar="S",
                   help="with --wait: stop waiting after S seconds (exit 1; the task "
                        "stays queued)")
    _json_flag(p)
    p.set_defaults(func=cmd_submit)

    for name, func, helptext in (
        ("status", cmd_status, "show a task (and why it waits, when it does)"),
        ("cancel", cmd_cancel, "cancel a task"),
        ("retry", cmd_retry, "retry a failed or cancelled task as a new task"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("task_id", help="the task's id")
        if name != "cancel":
            _json_flag(p)
        if name == "retry":
            p.add_argument("--from-start", action="store_true",
                           help="start again from the first date instead of after the "
                                "checkpoint of the task retried")
        p.set_defaults(func=func)

    p = sub.add_parser("tasks", help="list tasks, newest first")
    p.add_argument("--status", help="pending, running, retrying, completed, failed or "
                                    "cancelled")
    p.add_argument("--plugin", help="only this plugin's tasks")
    p.add_argument("--execution", metavar="ID", help="only this execution's tasks")
    p.add_argument("--limit", type=int, default=50, help="tasks per page (1-500, default 50)")
    p.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    _json_flag(p)
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("stats", help="queue depths and counters")
    _json_flag(p)
    p.set_defaults(func=cmd_stats)
