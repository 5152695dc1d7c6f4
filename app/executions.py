"""Executions: batches of tasks created in one step, with dependencies between them."""

from __future__ import annotations

import dataclasses
import json
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from hashlib import sha1
from typing import Any

from app.errors import (
    DependencyCycle,
    ExecutionNotFound,
    IllegalTransition,
    InvalidInput,
    NotFound,
)
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
            out = edges[n]
            if not out or (len(out) == 1 and state[out[0]] == 2):
                state[n] = 2  # nothing new to explore from here: no cycle through it
            else:
                visit(n)


# ---- the payload of create_execution.lua, built with little work per task
#
# The script gets each task as a flat record (id, params, dedup_key, waiting and its
# dependencies) and the hash fields tasks share once per "shape" (a spec without its
# params).  A shape's fields are TaskSpec.to_fields of its first task; per task only
# params and the dedup digest are computed here, with the encodings to_fields and
# dedup_digest use (so to_fields must depend on params through those two fields only).
# The first task of each shape (with and without params) is checked against to_fields:
# should they ever disagree, those tasks take one to_fields call each.

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_SHAPE_OF = operator.attrgetter(
    *(f.name for f in dataclasses.fields(TaskSpec) if f.name != "params"))
_PER_TASK = frozenset({"task_id", "params", "dedup_key", "depends_on"})


def _json_encoder(**options: Any) -> Callable[[Any], str]:
    """``encode(obj) == json.dumps(obj, **options)``.  json.dumps builds its C encoder
    anew for every call (most of its cost for a small object); this builds it once,
    without the circular-reference check (specs hold JSON data), and falls back to
    JSONEncoder.encode should the C encoder be missing or differ."""
    enc = json.JSONEncoder(**options)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None or enc.indent is not None:
        return enc.encode
    try:
        c_encode = make(
            None, enc.default,
            json.encoder.encode_basestring_ascii if enc.ensure_ascii
            else json.encoder.encode_basestring,
            enc.indent, enc.key_separator, enc.item_separator, enc.sort_keys,
            enc.skipkeys, enc.allow_nan,
        )
        join = "".join

        def encode(obj: Any) -> str:
            return join(c_encode(obj, 0))

        sample = {"b": [1, -2.5, None, True, {"y": "\u00e9\u2028", "x": 1e300}], "a": '"\n'}
        if encode(sample) == json.dumps(sample, **options):
            return encode
    except Exception:  # any surprise: the plain encoder
        pass
    return enc.encode


# TaskSpec.to_fields: json.dumps(params, sort_keys=True, ensure_ascii=False)
_PARAMS_JSON = _json_encoder(sort_keys=True, ensure_ascii=False)
# TaskSpec.dedup_digest
_DIGEST_JSON = _json_encoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _new_ids(n: int) -> list[str]:
    """``n`` random ids formatted as ``str(uuid.uuid4())`` (version 4, RFC 4122
    variant), from one urandom call."""
    raw = os.urandom(16 * n).hex()
    v = _VARIANT
    return [f"{raw[i:i + 8]}-{raw[i + 8:i + 12]}-4{raw[i + 13:i + 16]}-"
            f"{v[raw[i + 16]]}{raw[i + 17:i + 20]}-{raw[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]


def _shape_fields(fields: dict[str, str]) -> list[str]:
    """A shape for the script: plugin, priority, then the non-empty shared fields."""
    shape = [fields["plugin_name"], fields.get("priority", "")]
    for k, v in fields.items():
        if k not in _PER_TASK and v != "":
            shape += (k, v)
    return shape


def _digest_prefix(spec: TaskSpec) -> str:
    """The dedup_digest JSON of ``spec`` up to its params (which come last)."""
    return _DIGEST_JSON(spec.identity())[:-1] + ","


def _task_records(tasks: Sequence[BatchTask], ids: list[str]
                  ) -> tuple[list[list[str]], list[int], list[str]]:
    """(shapes, runs, task records) for create_execution.lua (see its header)."""
    shapes: list[list[str]] = []
    shape_index: dict[tuple[str, ...], int] = {}
    # (shape key, no params) -> (shape index, digest prefix); index 0: use to_fields
    cache: dict[tuple[object, bool], tuple[int, str]] = {}
    runs: list[int] = []
    records: list[str] = []
    params_json, digest_json, shape_of = _PARAMS_JSON, _DIGEST_JSON, _SHAPE_OF
    last = 0

    def add_shape(fields: dict[str, str]) -> int:
        shape = _shape_fields(fields)
        key = tuple(shape)
        idx = shape_index.get(key)
        if idx is None:
            shapes.append(shape)
            idx = shape_index[key] = len(shapes)
        return idx

    for tid, bt in zip(ids, tasks, strict=True):
        spec = bt.spec
        params = spec.params
        ckey = (shape_of(spec), not params)
        hit = cache.get(ckey)
        if hit is None:  # first task of its kind: check the fast path against to_fields
            fields = spec.to_fields(tid)
            prefix = _digest_prefix(spec)
            ok = (fields.get("params", "") == (params_json(params) if params else "")
                  and fields.get("dedup_key") == sha1(
                      (prefix + digest_json(params) + "]").encode()).hexdigest())
            hit = cache[ckey] = (add_shape(fields), prefix) if ok else (0, "")
        idx, prefix = hit
        if idx == 0:  # the slow path: to_fields per task
            fields = spec.to_fields(tid)
            idx, pj, digest = add_shape(fields), fields.get("params", ""), \
                fields.get("dedup_key", "")
        elif params:
            pj = params_json(params)
            digest = sha1((prefix + digest_json(params) + "]").encode()).hexdigest()
        else:
            pj = ""
            digest = sha1((prefix + "{}]").encode()).hexdigest()
        if idx == last:
            runs[-1] += 1
        else:
            runs += (idx, 1)
            last = idx
        dep_ix = bt.depends_on
        if not dep_ix:
            records += (tid, pj, digest, "")
        elif len(dep_ix) == 1:
            dep = ids[dep_ix[0]]
            records += (tid, pj, digest, "1", f'["{dep}"]', dep)
        else:
            deps = [ids[j] for j in dict.fromkeys(dep_ix)]
            # == json.dumps(deps): the ids are uuid strings, nothing to escape
            records += (tid, pj, digest, str(len(deps)), '["' + '", "'.join(deps) + '"]',
                        *deps)
    return shapes, runs, records


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
    edges = [bt.depends_on for bt in tasks]
    n = len(tasks)
    for i, deps in enumerate(edges):
        for j in deps:
            if not 0 <= j < n or j == i:
                raise InvalidInput(f"task {i} depends on {j}, which is not another task of it")
    if any(edges):
        check_acyclic([bt.spec.plugin_name for bt in tasks], edges)
    eid = execution_id or new_id()
    ids = _new_ids(len(tasks))
    shapes, runs, records = _task_records(tasks, ids)
    plugins = list(dict.fromkeys(shape[0] for shape in shapes))
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
         json.dumps(runs), *records],
    )
    log.info("execution.created", execution_id=eid, tasks=len(ids), plugins=plugins[:20],
             trigger=trigger_type)
    return eid, ids


async def retry_execution(queue: TaskQueue, execution_id: str, *,
                          from_start: bool = False) -> list[str]:
    """Retry the execution's failed tasks, and the tasks cancelled because of them
    whose other dependencies completed, keeping their dependencies (each resumes after
    its checkpoint unless ``from_start``).  Returns the new task ids.  Tasks a user
    cancelled (and what waited on them) are not retried."""
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
    return await queue.retry_many(ordered, from_start=from_start)


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


async def delete_execution(queue: TaskQueue, execution_id: str) -> None:
    """Remove an ended execution now (``delete_execution.lua``: its hash, task list and
    index entry); its tasks stay.  A pending or running one must be cancelled first."""
    try:
        await queue.run("delete_execution", [queue.keys.execution(execution_id),
                                             queue.keys.execution_tasks(execution_id)],
                        [execution_id])
    except NotFound:  # the scripts' not_found names a task
        raise ExecutionNotFound(execution_id) from None
    log.info("execution.deleted", execution_id=execution_id)
