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
from typing import Any

from app import queries
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
from app.models import Task
from app.query_command import add_parser as add_query_parser
from app.queue import TaskQueue
from app.redis_client import create_client
from app.scheduler.commands import add_parsers as add_schedule_parsers
from app.settings import Settings, load_settings
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


def _show_task(t: Task) -> None:
    d = t.to_dict()
    width = max(len(k) for k in d)
    for key in sorted(d):
        value = d[key]
        if value in (None, "", [], {}):
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        print(f"{key:<{width}}  {value}")


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
        trigger="cli",
    )
    task_id, created = await queue.enqueue(spec)
    task = await queue.get(task_id)
    if args.json:
        _print_json({**task.to_dict(), "created": created})
    elif created:
        print(f"submitted {task_id} ({spec.plugin_name}, {spec.task_type.value})")
    else:
        print(f"already queued: {task_id} is {task.status.value} with the same work")
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    task = await queue.get(args.task_id)
    if args.json:
        _print_json(task.to_dict())
    else:
        _show_task(task)
    return 0


async def cmd_cancel(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    outcome = await queue.cancel(args.task_id)
    if outcome == "cancelled":
        print(f"cancelled {args.task_id}")
    else:
        print(f"cancel requested for running task {args.task_id}; its worker will stop it")
    return 0


async def cmd_retry(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    new_id = await queue.retry(args.task_id, trigger="retry")
    if args.json:
        _print_json((await queue.get(new_id)).to_dict())
    else:
        print(f"retrying {args.task_id} as new task {new_id}")
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
    print(f"running   {stats['running']}")
    print("by status " + "  ".join(f"{k} {v}" for k, v in stats["by_status"].items()))
    print(f"executions {stats['executions']}")
    return 0


NOT_BUILT = ("the built-in TuShare plugins and the ClickHouse audit",)


def cmd_worker(args: argparse.Namespace) -> int:
    from app.worker.main import run_worker
    from app.worker.supervisor import PoolOptions

    settings = load_settings()
    configure_logging(settings)
    options = PoolOptions(shutdown_grace=args.shutdown_grace)
    if args.concurrency is not None:
        options.concurrency = args.concurrency
    if args.max_tasks_per_child is not None:
        options.max_tasks_per_child = args.max_tasks_per_child
    return asyncio.run(run_worker(settings, options, wait=args.wait_for_redis))


def cmd_api(args: argparse.Namespace) -> int:
    from app.daemon import serve_api

    settings = load_settings()
    configure_logging(settings)
    return asyncio.run(serve_api(settings, args.host or settings.api_host,
                                 args.port or settings.api_port))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 86400 * 7:
        raise argparse.ArgumentTypeError("must be between 0 and a week")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    """The all-in-one daemon: the HTTP sidecar, the scheduler and a worker pool in one
    process."""
    from app.daemon import run_all
    from app.worker.supervisor import PoolOptions

    settings = load_settings()
    configure_logging(settings)
    parts = [*([] if args.no_api else ["the sidecar"]),
             *([] if args.no_scheduler else ["the scheduler"]), "a worker pool"]
    print(f"stockq run: starting {', '.join(parts)}; not built yet: " + "; ".join(NOT_BUILT),
          file=sys.stderr)
    options = PoolOptions()
    if args.workers is not None:
        options.concurrency = args.workers
    return asyncio.run(run_all(settings, options, api=not args.no_api,
                               scheduler=not args.no_scheduler,
                               host=args.host or settings.api_host,
                               port=args.port or settings.api_port))


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stockq", description=__doc__.splitlines()[0])
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
    p.add_argument("--param", action="append", type=_kv, metavar="K=V",
                   help="string parameter passed to the plugin (repeat)")
    p.add_argument("--param-json", action="append", type=_kv_json, metavar="K=JSON",
                   help="JSON parameter passed to the plugin (repeat)")
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

    p = sub.add_parser("worker", help="run a worker pool (supervisor + child processes)")
    p.add_argument("--concurrency", type=_positive_int, help="children (default: CPU count)")
    p.add_argument("--max-tasks-per-child", type=_positive_int,
                   help="recycle a child after this many tasks (default 10000)")
    p.add_argument("--shutdown-grace", type=_seconds, default=30.0,
                   help="seconds running tasks get to finish after SIGTERM (default 30)")
    p.add_argument("--wait-for-redis", action="store_true",
                   help="wait for Redis at start instead of exiting")
    p.set_defaults(sync_func=cmd_worker)

    p = sub.add_parser("api", help="run the HTTP sidecar")
    p.add_argument("--host", help="bind address (default STOCKQ_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, help="port (default STOCKQ_API_PORT or 8080)")
    p.set_defaults(sync_func=cmd_api)

    add_schedule_parsers(sub)
    add_query_parser(sub)
    add_doctor_parser(sub)

    p = sub.add_parser("run", help="run the all-in-one daemon (sidecar, scheduler, worker pool)")
    p.add_argument("--workers", type=_positive_int, help="worker children (default: CPU count)")
    p.add_argument("--host", help="sidecar bind address (default STOCKQ_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, help="sidecar port (default 8080)")
    p.add_argument("--no-api", action="store_true", help="run without the HTTP sidecar")
    p.add_argument("--no-scheduler", action="store_true", help="run without the scheduler")
    p.set_defaults(sync_func=cmd_run)
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
        if getattr(args, "sync_func", None):
            return int(args.sync_func(args))
        settings = load_settings()
        configure_logging(settings)
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
