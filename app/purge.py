"""``stockq purge``: the cleanup ``celery purge`` and ``rq empty`` give, in three sizes.

* ``queue [NAME]`` cancels the waiting (pending and retrying) tasks of one named queue,
  or of every queue (``purge.lua``; the tasks waiting on them end ``upstream_failed``);
* ``finished`` deletes the ended tasks and executions now instead of at the end of
  their retention (``cleanup.lua`` with the cutoff now);
* ``namespace [NAME]`` deletes every key of a namespace (refused while a worker,
  scheduler or sidecar of it is alive, unless ``--force``).

Each asks for confirmation (``--yes`` to skip it; without a terminal it is required).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from app.errors import InvalidInput, StockqError
from app.keys import Keys
from app.liveness import ROLES, live
from app.models import TaskStatus
from app.queue import TaskQueue
from app.redis_client import redis_errors
from app.settings import NAMESPACE_PATTERN, Settings

BATCH = 500
LIST_REWRITE_LIMIT = 100_000  # ready lists longer than this keep their stale entries


@dataclass(frozen=True, slots=True)
class Purged:
    tasks: int = 0
    executions: int = 0
    keys: int = 0


def confirm(question: str, yes: bool) -> bool:
    """True when the user agrees (or ``--yes``); InvalidInput without a terminal."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InvalidInput(f"{question} -- confirm with --yes (stdin is not a terminal)")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


async def purge_queue(queue: TaskQueue, name: str = "", *,
                      reason: str = "purged by stockq purge") -> Purged:
    """Cancel the waiting tasks of queue ``name`` ('' = every queue)."""
    k = queue.keys
    retention = max(1, int(queue.settings.retention_seconds))
    cancelled = 0
    for status in (TaskStatus.PENDING.value, TaskStatus.RETRYING.value):
        index, offset = k.status_index(status), 0
        while True:
            with redis_errors(queue.settings):
                ids = await queue.client.zrange(index, offset, offset + BATCH - 1)
            if not ids:
                break
            done, kept = await queue.run("purge", [], [name, retention, reason, "tasks",
                                                       *ids])
            cancelled += int(done)
            offset += int(kept)  # the cancelled ones left the index
    done, _ = await queue.run("purge", [], [name, retention, reason, "lists",
                                            LIST_REWRITE_LIMIT])
    return Purged(tasks=cancelled + int(done))


async def purge_finished(queue: TaskQueue) -> Purged:
    """Delete every ended task and execution now."""
    tasks = executions = 0
    cutoff = queue.now_ms() + 1
    while True:
        t, e = await queue.run("cleanup", [], [cutoff, 1000, "1"])
        tasks, executions = tasks + int(t), executions + int(e)
        if not int(t) and not int(e):
            return Purged(tasks=tasks, executions=executions)


def _pattern(namespace: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in namespace) + ":*"


async def count_keys(queue: TaskQueue, namespace: str) -> int:
    n = 0
    with redis_errors(queue.settings):
        async for _ in queue.client.scan_iter(match=_pattern(namespace), count=1000):
            n += 1
    return n


async def purge_namespace(queue: TaskQueue, namespace: str) -> Purged:
    """Delete every key of ``namespace`` (SCAN, UNLINK in batches)."""
    deleted = 0
    batch: list[str] = []
    with redis_errors(queue.settings):
        async for key in queue.client.scan_iter(match=_pattern(namespace), count=1000):
            batch.append(key)
            if len(batch) >= BATCH:
                deleted += int(await queue.client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await queue.client.unlink(*batch))
    return Purged(keys=deleted)


async def alive_in(queue: TaskQueue, namespace: str) -> list[str]:
    """The live processes of ``namespace``: ``role id`` each."""
    keys = Keys(namespace)
    return [f"{beat.role} {beat.id}" for role in ROLES
            for beat in await live(queue, role, keys=keys)]


async def cmd_purge(args: argparse.Namespace, settings: Settings, queue: TaskQueue) -> int:
    ns = queue.keys.prefix
    what = args.what
    if what == "queue":
        scope = f"queue {args.name!r}" if args.name else "every queue"
        stats = [await queue.client.zcard(queue.keys.status_index(s))
                 for s in ("pending", "retrying")]
        if not confirm(f"cancel the waiting tasks of {scope} in namespace {ns!r} "
                       f"({stats[0]} pending and {stats[1]} retrying in all queues)?",
                       args.yes):
            print("nothing purged")
            return 1
        done = await purge_queue(queue, args.name or "")
        print(f"cancelled {done.tasks} waiting tasks of {scope} in namespace {ns!r} "
              "(and the tasks waiting on them)")
        return 0
    if what == "finished":
        ended = [await queue.client.zcard(queue.keys.status_index(s))
                 for s in ("completed", "failed", "cancelled")]
        if not confirm(f"delete {sum(ended)} ended tasks (and the ended executions) of "
                       f"namespace {ns!r} now?", args.yes):
            print("nothing purged")
            return 1
        done = await purge_finished(queue)
        print(f"deleted {done.tasks} ended tasks and {done.executions} executions of "
              f"namespace {ns!r}")
        return 0
    target = args.name or ns
    if not NAMESPACE_PATTERN.fullmatch(target):
        raise InvalidInput(f"namespace {target!r} must be 1-64 letters, digits, '_', '.' "
                           "or '-'")
    alive = await alive_in(queue, target)
    if alive and not args.force:
        raise StockqError(f"namespace {target!r} is in use by {len(alive)} live "
                          f"process(es) ({', '.join(alive[:5])}): stop them first, or "
                          "pass --force")
    n = await count_keys(queue, target)
    if not n:
        print(f"namespace {target!r} has no keys")
        return 0
    if not confirm(f"delete all {n} keys of namespace {target!r} (tasks, executions, "
                   "schedules, statistics)?", args.yes):
        print("nothing purged")
        return 1
    done = await purge_namespace(queue, target)
    print(f"deleted {done.keys} keys of namespace {target!r}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "purge", help="cancel a queue's waiting tasks, delete ended tasks, or a namespace",
        description="Clean up: 'queue [NAME]' cancels the waiting (pending and retrying) "
                    "tasks of a named queue, or of every queue; 'finished' deletes the "
                    "ended tasks and executions now; 'namespace [NAME]' deletes every key "
                    "of a namespace (default: the current one).  Each asks first.")
    p.add_argument("what", choices=("queue", "finished", "namespace"),
                   help="what to purge")
    p.add_argument("name", nargs="?", default="",
                   help="the queue (queue) or namespace (namespace) to purge")
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask for confirmation (required without a terminal)")
    p.add_argument("--force", action="store_true",
                   help="namespace: purge even while processes of it are alive")
    p.set_defaults(func=cmd_purge)
