"""``stockq`` command line.

Exit codes: 0 success; 1 the operation did not succeed (e.g. the task cannot be
cancelled, or ``run`` found parts missing); 2 bad arguments or input; 3 Redis
unavailable; 4 not found; 5 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TextIO

from app import queries
from app.daemon_commands import add_parsers as add_daemon_parsers
from app.doctor import add_parser as add_doctor_parser
from app.errors import (
    ConfigError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    RedisUnavailable,
    StockqError,
)
from app.logs import configure_logging
from app.models import Task, TaskStatus
from app.purge import add_parser as add_purge_parser
from app.query_command import add_parser as add_query_parser
from app.queue import TaskQueue
from app.redis_client import create_client
from app.scheduler.commands import add_parsers as add_schedule_parsers
from app.settings import Settings, load_settings, use_namespace
from app.submission import build_spec
from plugins_bridge.registry import PluginRegistry

EXIT_FAILED, EXIT_USAGE, EXIT_REDIS, EXIT_NOT_FOUND, EXIT_CONFIG = 1, 2, 3, 4, 5


def _exit_code(err: StockqError) -> int:
    if isinstance(err, RedisUnavailable):
        return EXIT_REDIS
    if isinstance(err, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(err, InvalidInput):
        return EXIT_USAGE
    if isinstance(err, ConfigError):
        return EXIT_CONFIG
    return EXIT_FAILED


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


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True))


def _task_line(t: Task) -> str:
    extra = f" attempt {t.attempt}/{t.max_attempts}"
    if t.last_error_type:
        extra += f" [{t.last_error_type}]"
    created = t.created_at.isoformat(timespec="seconds") if t.created_at else "-"
    return (f"{t.task_id}  {t.status.value:<9} {t.plugin_name:<20} {t.task_type:<11} "
            f"{t.progress:5.1f}%  {created}{extra}")


_UNSET_WHEN_ZERO = ("memory_limit_mb", "output_bytes", "output_attempt")


def _show_task(t: Task) -> None:
    d = t.to_dict()
    output = d.pop("output", "")
    width = max(len(k) for k in d)
    for key in sorted(d):
        value = d[key]
        if value in (None, "", [], {}) or (value == 0 and key in _UNSET_WHEN_ZERO):
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        print(f"{key:<{width}}  {value}")
    if output:
        kept = len(output.encode("utf-8"))
        whole = "all" if kept >= t.output_bytes else f"the last {kept:,} of {t.output_bytes:,}"
        print(f"\noutput of attempt {t.output_attempt} ({whole} bytes, masked):")
        for line in output.splitlines():
            print(f"  | {line}")


# ------------------------------------------------------------------ commands
Command = Callable[[argparse.Namespace, Settings, TaskQueue], Awaitable[int]]


async def cmd_submit(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
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
        _print_json({**task.to_dict(), "created": created})
    elif created:
        print(f"submitted {task_id} ({spec.plugin_name}, {spec.task_type.value})", file=said)
    else:
        print(f"already queued: {task_id} is {task.status.value} with the same work",
              file=said)
    if not args.wait:
        return 0
    task = await follow(queue, task_id, timeout=args.wait_timeout, answer=said)
    if args.json:
        _print_json(task.to_dict())
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
        _print_json({**task.to_dict(), **({"waiting_reason": reason} if reason else {})})
    else:
        _show_task(task)
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
        _print_json(task.to_dict())
    else:
        resume = f", resuming after {task.checkpoint}" if task.checkpoint else ""
        print(f"retrying {args.task_id} as new task {new_id}{resume}")
    return 0


async def cmd_tasks(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    page = await queries.list_tasks(
        queue, status=args.status, plugin=args.plugin, execution_id=args.execution,
        limit=args.limit, cursor=args.cursor,
    )
    if args.json:
        _print_json({"items": [t.to_dict() for t in page.items], "next_cursor": page.next_cursor})
        return 0
    for t in page.items:
        print(_task_line(t))
    if not page.items:
        print("no tasks")
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    return 0


async def cmd_stats(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    stats = (await queries.queue_stats(queue)).to_dict()
    if args.json:
        _print_json(stats)
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


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stockq", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what a one-shot command does on stderr (-vv: debug); "
                             "long-running commands always log")
    parser.add_argument("--namespace", metavar="NAME",
                        help="the key namespace to work in (default STOCKQ_NAMESPACE, else "
                             "'stock'; `stockq run --demo` uses 'demo')")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("submit", help="queue a plugin run")
    p.add_argument("plugin")
    p.add_argument("--type", default="incremental", choices=["incremental", "full", "backfill"])
    p.add_argument("--date", action="append", metavar="YYYYMMDD", help="trade date (repeat)")
    p.add_argument("--start", metavar="D")
    p.add_argument("--end", metavar="D")
    p.add_argument("--priority", default="normal", help="high|normal|low or 0-2")
    p.add_argument("--timeout", type=int, metavar="S")
    p.add_argument("--max-attempts", type=int, metavar="N")
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_submit)

    for name, func, helptext in (
        ("status", cmd_status, "show a task"),
        ("cancel", cmd_cancel, "cancel a task"),
        ("retry", cmd_retry, "retry a failed or cancelled task as a new task"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("task_id")
        if name != "cancel":
            p.add_argument("--json", action="store_true")
        if name == "retry":
            p.add_argument("--from-start", action="store_true",
                           help="start again from the first date instead of after the "
                                "checkpoint of the task retried")
        p.set_defaults(func=func)

    p = sub.add_parser("tasks", help="list tasks, newest first")
    p.add_argument("--status")
    p.add_argument("--plugin")
    p.add_argument("--execution")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("stats", help="queue depths and counters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    add_daemon_parsers(sub)
    add_schedule_parsers(sub)
    add_query_parser(sub)
    add_doctor_parser(sub)
    add_purge_parser(sub)
    return parser


async def _run_async(func: Command, args: argparse.Namespace, settings: Settings) -> int:
    client = create_client(settings)
    try:
        async with TaskQueue(client, settings) as queue:
            return await func(args, settings, queue)
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.namespace is not None:
            use_namespace(args.namespace)
        if args.verbose:  # one-shot commands log nothing without it
            base = load_settings()
            configure_logging(replace(base, log_level="debug" if args.verbose > 1
                                      else base.log_level))
        if getattr(args, "sync_func", None):
            return int(args.sync_func(args))
        settings = load_settings()
        return asyncio.run(_run_async(args.func, args, settings))
    except StockqError as err:
        print(f"stockq: {err.message}", file=sys.stderr)
        if isinstance(err, IllegalTransition):
            return EXIT_FAILED
        return _exit_code(err)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
