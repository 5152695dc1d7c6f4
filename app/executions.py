"""Executions: batches of tasks created in one step, with dependencies between them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.errors import DependencyCycle, IllegalTransition, InvalidInput
from app.logs import get_logger
from app.models import TaskSpec, TaskStatus
from app.queries import execution_task_ids, get_execution, get_many
from app.queue import TaskQueue, new_id

log = get_logger("stockq.executions")


@dataclass(frozen=True, slots=True)
class BatchTask:
    """One task of an execution; ``depends_on`` holds indexes of earlier or later
    tasks in the same batch that must complete first."""

    spec: TaskSpec
    depends_on: tuple[int, ...] = field(default_factory=tuple)


def check_acyclic(names: Sequence[str], edges: Sequence[Sequence[int]]) -> None:
    """Raise DependencyCycle (naming the cycle) if the dependency graph has one."""
    state = [0] * len(names)  # 0 new, 1 on the path, 2 done
    path: list[int] = []

    def visit(start: int) -> None:
        stack: list[tuple[int, int]] = [(start, 0)]
        state[start] = 1
        path.append(start)
        while stack:
            node, i = stack.pop()
            if i < len(edges[node]):
                stack.append((node, i + 1))
                nxt = edges[node][i]
                if state[nxt] == 1:
                    cycle = path[path.index(nxt):] + [nxt]
                    raise DependencyCycle([names[j] for j in cycle])
                if state[nxt] == 0:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()

    for n in range(len(names)):
        if state[n] == 0:
            visit(n)


async def create_execution(
    queue: TaskQueue,
    tasks: Sequence[BatchTask],
    *,
    trigger_type: str = "manual",
    group_name: str = "",
    date_range: str = "",
    execution_id: str | None = None,
) -> tuple[str, list[str]]:
    """Create an execution atomically.  Returns ``(execution_id, task_ids)``."""
    if not tasks:
        raise InvalidInput("an execution needs at least one task")
    limit = queue.settings.max_execution_tasks
    if len(tasks) > limit:
        raise InvalidInput(f"an execution holds at most {limit} tasks (got {len(tasks)})")
    for i, bt in enumerate(tasks):
        for j in bt.depends_on:
            if not 0 <= j < len(tasks) or j == i:
                raise InvalidInput(f"task {i} depends on {j}, which is not another task of it")
    check_acyclic([bt.spec.plugin_name for bt in tasks], [bt.depends_on for bt in tasks])
    eid = execution_id or new_id()
    ids = _new_ids(len(tasks))
    shapes, records = _task_records(tasks, ids)
    plugins = list(dict.fromkeys(bt.spec.plugin_name for bt in tasks))
    meta = {
        "execution_id": eid,
        "trigger_type": trigger_type,
        "group_name": group_name,
        "date_range": date_range,
        "plugins": json.dumps(plugins[:200], ensure_ascii=False),
    }
    await queue.run(
        "create_execution",
        [queue.keys.execution(eid), queue.keys.execution_tasks(eid)],
        [json.dumps(meta, ensure_ascii=False), json.dumps(shapes, ensure_ascii=False),
         len(tasks), *records],
    )
    log.info("execution.created", execution_id=eid, tasks=len(ids), plugins=plugins[:20],
             trigger=trigger_type)
    return eid, ids


async def retry_execution(queue: TaskQueue, execution_id: str) -> list[str]:
    """Retry the execution's failed tasks, and the tasks cancelled because of them
    whose other dependencies completed, keeping their dependencies.  Returns the new
    task ids.  Tasks a user cancelled (and what waited on them) are not retried."""
    execution = await get_execution(queue, execution_id)
    tasks = [t for t in await get_many(queue, await execution_task_ids(queue, execution))
             if t is not None and not t.retried_by]
    by_id = {t.task_id: t for t in tasks}
    retry = {t.task_id for t in tasks if t.status == TaskStatus.FAILED}
    waiting = [t for t in tasks
               if t.status == TaskStatus.CANCELLED and t.last_error_type == "upstream_failed"]
    grew = True
    while grew:
        grew = False
        for t in waiting:
            if t.task_id in retry:
                continue
            deps = [by_id.get(d) for d in t.depends_on]
            if all(d is None or d.status == TaskStatus.COMPLETED or d.task_id in retry
                   for d in deps):
                retry.add(t.task_id)
                grew = True
    if not retry:
        raise IllegalTransition(f"execution {execution_id} has no failed tasks to retry")
    ordered = [t.task_id for t in tasks if t.task_id in retry]
    return await queue.retry_many(ordered)


async def cancel_execution(queue: TaskQueue, execution_id: str) -> dict[str, int]:
    """Cancel every active task of an execution.  Returns counts by outcome."""
    execution = await get_execution(queue, execution_id)
    counts = {"cancelled": 0, "cancel_requested": 0, "already_ended": 0}
    for task in await get_many(queue, await execution_task_ids(queue, execution)):
        if task is None or task.status.terminal:
            counts["already_ended"] += 1
            continue
        try:
            outcome = await queue.cancel(task.task_id, "execution cancelled")
        except IllegalTransition:  # ended meanwhile (e.g. cancelled with its upstream)
            counts["already_ended"] += 1
            continue
        counts[outcome] += 1
    if counts["cancelled"] == counts["cancel_requested"] == 0:
        raise IllegalTransition(f"execution {execution_id} has no active task to cancel")
    log.info("execution.cancelled", execution_id=execution_id, **counts)
    return counts
