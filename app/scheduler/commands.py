"""``stockq scheduler``, ``stockq schedule list`` and ``stockq schedule run NAME``."""

from __future__ import annotations

import argparse
import asyncio
import json

from app.cli_format import local_time, table
from app.logs import configure_logging
from app.queue import TaskQueue
from app.settings import Settings, load_settings
from plugins_bridge.registry import PluginRegistry


def cmd_scheduler(args: argparse.Namespace) -> int:
    from app.scheduler.daemon import run_scheduler

    settings = load_settings()
    configure_logging(settings)
    return asyncio.run(run_scheduler(settings, PluginRegistry.from_settings(settings)))


async def cmd_schedule_list(args: argparse.Namespace, settings: Settings,
                            queue: TaskQueue) -> int:
    from app.scheduler.service import schedule_service  # APScheduler: only here

    service = schedule_service(queue, PluginRegistry.from_settings(settings))
    jobs = await service.describe()
    if args.json:
        print(json.dumps({"items": jobs}, ensure_ascii=False, indent=2))
        return 0
    rows = []
    for job in jobs:
        last = job["last_fire"]
        shown = "never"
        if last:
            shown = (f"{last['outcome']} "
                     f"{local_time(last['slot_at'] or last['fired_at'], settings.timezone)}")
            if last.get("execution_id"):
                shown += f" execution {last['execution_id']}"
            elif last.get("reason"):
                shown += f" ({last['reason']})"
        rows.append([job["name"], job["trigger"],
                     local_time(job["next_run_at"], settings.timezone),
                     ",".join(job["plugins"]) or "-", shown])
    print(table(("JOB", "TRIGGER", "NEXT RUN", "PLUGINS", "LAST FIRE"), rows))
    return 0


async def cmd_schedule_run(args: argparse.Namespace, settings: Settings,
                           queue: TaskQueue) -> int:
    from app.scheduler.service import schedule_service  # APScheduler: only here

    service = schedule_service(queue, PluginRegistry.from_settings(settings))
    fire = await service.run_now(args.name)
    if args.json:
        print(json.dumps(fire.to_dict(), ensure_ascii=False, indent=2))
    elif fire.outcome == "fired":
        print(f"{fire.job}: execution {fire.execution_id} ({fire.tasks} tasks) for trade "
              f"date {fire.trade_date}")
    else:
        print(f"{fire.job}: {fire.outcome}: {fire.reason}")
    return 0 if fire.outcome == "fired" else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("scheduler", help="run the scheduler (enqueues the scheduled syncs)")
    p.set_defaults(sync_func=cmd_scheduler)

    p = sub.add_parser("schedule", help="list the schedule's jobs or run one now")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                               help="list or run")
    q = actions.add_parser("list", help="jobs, their next run and last fire")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_schedule_list)
    q = actions.add_parser("run", help="run a job now, for the latest trading day whose "
                                       "data is published")
    q.add_argument("name", help="the job (stockq schedule list names them)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_schedule_run)
