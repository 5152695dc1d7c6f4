"""The cost of capability routing on the worker's hot path (``bench.bench_core``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from app.models import TaskSpec
from app.queue import TaskQueue
from app.redis_client import create_client
from bench._measure import Results, ab_rows, enqueue_seq, spec


async def phase_routing_ab(q: TaskQueue, res: Results, n: int, plugins: list[str]) -> None:
    """What capability routing costs the worker's hot path, in alternating slices of
    complete-and-claim chains: claims that advertise ``plugins`` (the demo daemon's
    eight) vs claims that take anything, and advertising claims while a task they
    cannot run is parked (each claim then reads the parked index and checks its one
    route; in database 1 of the same server).  Only for a TaskQueue that routes."""
    if not hasattr(q, "advertise"):
        return
    client = q.client
    where = client.connection_pool.connection_kwargs
    settings = replace(q.settings, redis_url=f"redis://{where.get('host', '127.0.0.1')}:"
                                             f"{where['port']}/1")
    parked_client = create_client(settings)
    routed, anything = TaskQueue(client, q.settings), TaskQueue(client, q.settings)
    beside = TaskQueue(parked_client, settings)
    for queue in (routed, beside):
        queue.advertise(plugins, ["default"])
    try:
        await client.flushall()
        await enqueue_seq(q, [spec() for _ in range(2 * n + 4)])
        await beside.enqueue(TaskSpec.build("not_advertised"))
        await enqueue_seq(beside, [spec() for _ in range(n + 2)])
        heads: dict[str, Any] = {"routed": await routed.claim_work("bench-routed"),
                                 "anything": await anything.claim_work("bench-any"),
                                 "parked": await beside.claim_work("bench-parked")}
        assert await parked_client.exists(beside.keys.parked_index)  # the stranger

        def chain(queue: TaskQueue, name: str, worker: str) -> Callable[[int],
                                                                        Awaitable[None]]:
            async def op(i: int) -> None:
                heads[name] = await queue.complete(heads[name], claim_for=worker)
                assert heads[name] is not None
            return op

        res.rows += await ab_rows(client, {
            "complete-and-claim chained, A/B: routed (8 plugins advertised)":
                chain(routed, "routed", "bench-routed"),
            "complete-and-claim chained, A/B: unrouted (claims anything)":
                chain(anything, "anything", "bench-any"),
            "complete-and-claim chained, A/B: routed, 1 task parked it cannot run":
                chain(beside, "parked", "bench-parked"),
        }, n, 10, "0 pending")
    finally:
        for queue in (routed, anything, beside):
            await queue.aclose()
        await parked_client.flushdb()
        await parked_client.aclose()
