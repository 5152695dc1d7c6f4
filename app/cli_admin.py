"""``stockq workers`` (what is alive and what it runs) and ``stockq executions`` (list,
show, retry, cancel): the same reads and services as ``GET /health`` and the
``/api/v1/executions`` routes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from app.cli_format import TASK_COLUMNS, ago, local_time, print_json, table, task_row
from app.models import Execution, ExecutionStatus
from app.queue import TaskQueue, iso_time
from app.redis_client import redis_errors
from app.settings import Settings

if TYPE_CHECKING:
    from app.liveness import Beat


async def _running_by_worker(queue: TaskQueue) -> dict[str, list[tuple[str, str]]]:
    """worker id -> [(task id, plugin)] of the tasks running now."""
    with redis_errors(queue.settings):
        ids = sorted(await queue.client.smembers(queue.keys.running))  # type: ignore[misc]
        async with queue.client.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.hmget(queue.keys.task(tid), ["worker", "plugin_name"])
            rows = await pipe.execute()
    out: dict[str, list[tuple[str, str]]] = {}
    for tid, (worker, plugin) in zip(ids, rows, strict=True):
        if worker:
            out.setdefault(worker, []).append((tid, plugin or ""))
    return out


def _worker_dict(w: Beat, running: list[tuple[str, str]]) -> dict[str, Any]:
    return {"worker_id": w.id, "host": w.host, "pid": w.pid, "concurrency": w.concurrency,
            "plugins": list(w.plugins), "queues": list(w.queues),
            "not_runnable": w.not_runnable, "running": w.running,
            "running_tasks": [{"task_id": t, "plugin": p} for t, p in running],
            "processed": w.processed, "started_at": w.started_at or None,
            "last_heartbeat": local_time_iso(w.last_seen_ms), "demo": w.demo}


def local_time_iso(ms: int) -> str:
    """A heartbeat time (epoch ms) as JSON shows times: ISO 8601 with the offset."""
    return iso_time(ms / 1000)


async def cmd_workers(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    from app.liveness import live  # (at use: `stockq worker` starts sooner)

    workers = await live(queue, "worker")
    schedulers, apis = await live(queue, "scheduler"), await live(queue, "api")
    running = await _running_by_worker(queue)
    if args.json:
        print_json({"workers": [_worker_dict(w, running.get(w.id, [])) for w in workers],
                    "schedulers": [{"scheduler_id": s.id, "host": s.host, "pid": s.pid,
                                    "last_heartbeat": local_time_iso(s.last_seen_ms)}
                                   for s in schedulers],
                    "sidecars": [{"api_id": a.id, "host": a.host, "pid": a.pid, "url": a.url,
                                  "last_heartbeat": local_time_iso(a.last_seen_ms)}
                                 for a in apis]})
        return 0
    now = queue.now_ms()
    if not workers:
        print(f"no live worker in namespace {queue.keys.prefix!r}")
    else:
        rows = []
        for w in workers:
            tasks = running.get(w.id, [])
            rows.append([w.host, w.pid, w.concurrency, ", ".join(w.plugins) or "-",
                         ", ".join(w.queues),
                         ", ".join(f"{t[:8]} {p}" for t, p in tasks) or "-",
                         f"{local_time(local_time_iso(w.last_seen_ms), settings.timezone)} "
                         f"({ago(w.last_seen_ms, now)})"])
        print(table(("HOST", "PID", "SLOTS", "PLUGINS", "QUEUES", "RUNNING",
                     "LAST HEARTBEAT"), rows))
        for w in workers:
            for plugin, why in sorted(w.not_runnable.items()):
                print(f"{w.host} pid {w.pid} does not run {plugin}: {why}")
    print(f"schedulers: {len(schedulers)} live"
          + "".join(f"; {s.host} pid {s.pid}" for s in schedulers))
    print(f"sidecars: {len(apis)} live" + "".join(f"; {a.url} (pid {a.pid})" for a in apis))
    return 0


EXECUTION_COLUMNS = ("EXECUTION ID", "STATUS", "TRIGGER", "GROUP", "DONE", "FAILED",
                     "CANCELLED", "TOTAL", "CREATED", "ENDED")


def _execution_row(e: Execution, zone: str) -> list[Any]:
    return [e.execution_id, e.status.value, e.trigger_type or "-", e.group_name or "-",
            e.completed, e.failed, e.cancelled, e.total, local_time(e.created_at, zone),
            local_time(e.completed_at, zone)]


async def cmd_executions_list(args: argparse.Namespace, settings: Settings,
                              queue: TaskQueue) -> int:
    from app import queries

    page = await queries.list_executions(
        queue, status=args.status, trigger_types=args.trigger or (), group=args.group,
        limit=args.limit, cursor=args.cursor)
    if args.json:
        print_json({"items": [e.to_dict() for e in page.items],
                    "next_cursor": page.next_cursor})
        return 0
    if not page.items:
        print("no executions")
    else:
        print(table(EXECUTION_COLUMNS, [_execution_row(e, settings.timezone)
                                        for e in page.items]))
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    return 0


async def cmd_executions_show(args: argparse.Namespace, settings: Settings,
                              queue: TaskQueue) -> int:
    from app import queries

    execution = await queries.get_execution(queue, args.execution_id)
    ids = await queries.execution_task_ids(queue, execution)
    tasks = [t for t in await queries.get_many(queue, ids) if t is not None]
    if args.json:
        print_json({**execution.to_dict(), "task_ids": ids,
                    "tasks": [t.to_dict() for t in tasks]})
        return 0
    zone = settings.timezone
    e = execution
    print(f"execution  {e.execution_id}\nstatus     {e.status.value}\ntrigger    "
          f"{e.trigger_type or '-'}\ngroup      {e.group_name or '-'}\ndates      "
          f"{e.date_range or '-'}\nplugins    {', '.join(e.plugins) or '-'}\ntasks      "
          f"{e.completed} completed, {e.failed} failed, {e.cancelled} cancelled, "
          f"{e.pending} to go, {e.total} in all\ncreated    {local_time(e.created_at, zone)}"
          f"\nstarted    {local_time(e.started_at, zone)}\nended      "
          f"{local_time(e.completed_at, zone)}\n")
    print(table(TASK_COLUMNS, [task_row(t, zone) for t in tasks]) if tasks else "no tasks")
    for t in tasks:
        if t.error_message and t.status.terminal and t.status.value != "completed":
            print(f"{t.task_id} {t.plugin_name}: [{t.last_error_type}] {t.error_message}")
    return 0


async def cmd_executions_retry(args: argparse.Namespace, settings: Settings,
                               queue: TaskQueue) -> int:
    from app.executions import retry_execution

    new_ids = await retry_execution(queue, args.execution_id, from_start=args.from_start)
    if args.json:
        print_json({"execution_id": args.execution_id, "task_ids": new_ids})
    else:
        print(f"retrying {len(new_ids)} task(s) of execution {args.execution_id}: "
              + ", ".join(new_ids))
    return 0


async def cmd_executions_cancel(args: argparse.Namespace, settings: Settings,
                                queue: TaskQueue) -> int:
    from app.executions import cancel_execution

    counts = await cancel_execution(queue, args.execution_id)
    if args.json:
        print_json({"execution_id": args.execution_id, **counts})
    else:
        print(f"execution {args.execution_id}: {counts['cancelled']} cancelled, "
              f"{counts['cancel_requested']} running told to stop, "
              f"{counts['already_ended']} already ended")
    return 0


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("workers", help="the live worker pools: what they run, what runs now")
    _json_flag(p)
    p.set_defaults(func=cmd_workers)

    p = sub.add_parser("executions", help="list, show, retry or cancel executions")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                               help="list, show, retry or cancel")
    q = actions.add_parser("list", help="executions, newest first")
    q.add_argument("--status", choices=[s.value for s in ExecutionStatus],
                   help="only executions in this status")
    q.add_argument("--trigger", action="append", metavar="TYPE",
                   help="only this trigger type: scheduled, catch_up, manual, api, cli, "
                        "... (repeat)")
    q.add_argument("--group", help="only this group (or schedule job) name")
    q.add_argument("--limit", type=int, default=20,
                   help="executions per page (1-500, default 20)")
    q.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    _json_flag(q)
    q.set_defaults(func=cmd_executions_list)
    for name, func, helptext in (
            ("show", cmd_executions_show, "an execution and its tasks"),
            ("retry", cmd_executions_retry, "retry its failed tasks (and what they held up)"),
            ("cancel", cmd_executions_cancel, "cancel its pending and running tasks")):
        q = actions.add_parser(name, help=helptext)
        q.add_argument("execution_id", help="the execution's id")
        if name == "retry":
            q.add_argument("--from-start", action="store_true",
                           help="start each task again from its first date instead of "
                                "after its checkpoint")
        _json_flag(q)
        q.set_defaults(func=func)
