"""Who is alive in a namespace and what it can run: read from the heartbeats.

Worker pools, schedulers and sidecars each keep a heartbeat hash (TTL 15 s) and an
entry in their role's registry (app/keys.py).  A pool's heartbeat lists the plugins it
runs and the named queues it serves (app/worker/capabilities.py), so any process can
tell why a pending task waits: no live worker at all, or none that runs its plugin
(``/health``, ``stockq status``, ``stockq submit --wait``, ``stockq workers``,
``stockq doctor``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.keys import DEFAULT_QUEUE, Keys, split_route
from app.queue import TaskQueue
from app.redis_client import redis_errors

LIVE_WINDOW_SECONDS = 15.0  # live: a heartbeat this recent (3 x the 5 s interval)
MAX_LISTED = 200
ROLES = ("worker", "scheduler", "api")


def _json(raw: str | None, default: Any) -> Any:
    try:
        value = json.loads(raw) if raw else default
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def _int(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class Beat:
    """One live process of a role, as its heartbeat describes it."""

    role: str  # worker | scheduler | api
    id: str
    host: str
    pid: int
    started_at: str  # ISO 8601
    last_seen_ms: int
    demo: bool = False
    # workers
    concurrency: int = 0
    running: int = 0
    processed: int = 0
    plugins: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    not_runnable: dict[str, str] = field(default_factory=dict)
    load_error: str = ""
    unavailable: list[dict[str, str]] = field(default_factory=list)
    warehouse: str = ""  # its ClickHouse (redacted URL), '' for none
    # sidecars
    url: str = ""

    @classmethod
    def from_hash(cls, role: str, member: str, score: float, h: dict[str, str]) -> Beat:
        return cls(
            role=role, id=member, host=h.get("host", ""), pid=_int(h.get("pid")),
            started_at=h.get("started_at", ""), last_seen_ms=int(score),
            demo=h.get("demo") == "1", concurrency=_int(h.get("concurrency")),
            running=_int(h.get("running")), processed=_int(h.get("processed")),
            plugins=tuple(_json(h.get("plugins"), [])),
            queues=tuple(_json(h.get("queues"), [])) or (DEFAULT_QUEUE,),
            not_runnable=_json(h.get("not_runnable"), {}),
            load_error=h.get("load_error", ""),
            unavailable=_json(h.get("unavailable"), []),
            warehouse=h.get("warehouse", ""), url=h.get("url", ""),
        )

    def can_run(self, plugin: str, queue: str = DEFAULT_QUEUE) -> bool:
        return plugin in self.plugins and (queue or DEFAULT_QUEUE) in self.queues


def _registry(k: Keys, role: str) -> tuple[str, Any]:
    if role == "worker":
        return k.workers, k.worker
    if role == "scheduler":
        return k.schedulers, k.scheduler
    return k.apis, k.api


async def live(queue: TaskQueue, role: str = "worker", *,
               window: float = LIVE_WINDOW_SECONDS, keys: Keys | None = None) -> list[Beat]:
    """The live processes of ``role``, most recent heartbeat first (at most 200), in
    the queue's namespace (or that of ``keys``)."""
    registry, key = _registry(keys or queue.keys, role)
    since = queue.now_ms() - int(window * 1000)
    with redis_errors(queue.settings):
        members = await queue.client.zrevrangebyscore(registry, "+inf", since, start=0,
                                                      num=MAX_LISTED, withscores=True)
        async with queue.client.pipeline(transaction=False) as pipe:
            for member, _ in members:
                pipe.hgetall(key(member))
            hashes = await pipe.execute()
    return [Beat.from_hash(role, str(m), float(s), h)
            for (m, s), h in zip(members, hashes, strict=True) if h]


def waiting_reason(workers: Iterable[Beat], plugin: str, queue: str = DEFAULT_QUEUE
                   ) -> str:
    """Why a ready task of ``plugin`` in ``queue`` would wait for a worker ('' when a
    live worker can run it)."""
    workers = list(workers)
    if not workers:
        return "no live worker: start `stockq worker` (or `stockq run`)"
    if any(w.can_run(plugin, queue) for w in workers):
        return ""
    where = f" in queue {queue!r}" if queue and queue != DEFAULT_QUEUE else ""
    lacking = sorted({w.not_runnable[plugin] for w in workers if plugin in w.not_runnable})
    if lacking:
        detail = f": the live workers that load it have {'; '.join(lacking)}"
    elif where and any(plugin in w.plugins for w in workers):
        detail = (": the workers that run it serve "
                  + ", ".join(sorted({q for w in workers if plugin in w.plugins
                                      for q in w.queues}))
                  + f" (start one with --queue {queue})")
    else:
        runs = sorted({p for w in workers for p in w.plugins})
        detail = f" (the live workers run: {', '.join(runs) if runs else 'nothing'})"
    return f"no live worker can run {plugin}{where}{detail}"


async def parked(queue: TaskQueue) -> dict[str, int]:
    """Routes with parked tasks (app/keys.py) and how many wait in each."""
    k = queue.keys
    with redis_errors(queue.settings):
        routes = [str(r) for r in await queue.client.zrange(k.parked_index, 0, 999)]
        async with queue.client.pipeline(transaction=False) as pipe:
            for route in routes:
                pipe.zcard(k.parked(route))
            counts = await pipe.execute()
    return {r: int(n) for r, n in zip(routes, counts, strict=True) if n}


async def stuck(queue: TaskQueue, workers: Iterable[Beat] | None = None
                ) -> list[tuple[str, str, int, str]]:
    """Parked tasks no live worker can run: ``(plugin, queue, count, reason)``."""
    beats = list(workers) if workers is not None else await live(queue)
    out = []
    for route, count in sorted((await parked(queue)).items()):
        queue_name, plugin = split_route(route)
        reason = waiting_reason(beats, plugin, queue_name)
        if reason:
            out.append((plugin, queue_name, count, reason))
    return out
