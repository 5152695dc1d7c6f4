"""Capability routing in the claim script: a worker claims only the tasks whose plugin
it runs and whose named queue it serves; what it cannot run is parked for a worker that
can, keeps its place, and stays pending (never failed by the wrong worker)."""

from __future__ import annotations

import redis.asyncio as aioredis

from app.executions import BatchTask, create_execution
from app.models import Priority, TaskSpec, TaskStatus
from app.queue import TaskQueue, capability_string
from app.settings import Settings
from tests.conftest import FakeClock


def spec(plugin: str = "noop", **kw: object) -> TaskSpec:
    return TaskSpec.build(plugin, **kw)  # type: ignore[arg-type]


def routed(client: aioredis.Redis, settings: Settings, clock: FakeClock, plugins: list[str],
           queues: tuple[str, ...] = ("default",)) -> TaskQueue:
    q = TaskQueue(client, settings, clock=clock, rng=lambda: 0.0)
    q.advertise(plugins, queues)
    return q


def test_capability_string_lists_plugins_then_queues() -> None:
    assert capability_string(["sleep", "noop", "noop"], ["default"]) == \
        ",noop,sleep,@default,"
    assert capability_string([], []) == ","


async def test_a_worker_never_claims_a_plugin_it_does_not_run(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    tushare = routed(client, settings, clock, ["tushare_daily"])
    examples = routed(client, settings, clock, ["noop", "sleep", "fail"])
    daily, _ = await queue.enqueue(spec("tushare_daily", trade_dates=["20240102"]))
    noop, _ = await queue.enqueue(spec("noop"))
    try:
        # the examples worker meets the TuShare task first: it parks it and takes noop
        got = await examples.claim_work("examples")
        assert got is not None and got.task_id == noop
        assert (await queue.get(daily)).status == TaskStatus.PENDING
        assert await client.zrange("stock:parked", 0, -1) == ["default:tushare_daily"]
        assert await client.zrange("stock:parked:default:tushare_daily", 0, -1) == [daily]
        assert await examples.claim_work("examples") is None  # nothing it can run
        # the TuShare worker finds it where it was parked; nothing is left parked
        got = await tushare.claim_work("tushare")
        assert got is not None and got.task_id == daily
        assert await client.exists("stock:parked", "stock:parked:default:tushare_daily") == 0
    finally:
        await tushare.aclose()
        await examples.aclose()


async def test_parked_tasks_keep_priority_and_order(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    other = routed(client, settings, clock, ["noop"])
    worker = routed(client, settings, clock, ["sleep"])
    low, _ = await queue.enqueue(spec("sleep", params={"n": 1}, priority=Priority.LOW))
    first, _ = await queue.enqueue(spec("sleep", params={"n": 2}))
    second, _ = await queue.enqueue(spec("sleep", params={"n": 3}))
    try:
        assert await other.claim_work("other") is None  # parks all three
        assert await client.llen("stock:task_queue:1") == 0
        clock.advance(1)
        later, _ = await queue.enqueue(spec("sleep", params={"n": 4}))  # still queued
        high, _ = await queue.enqueue(spec("sleep", params={"n": 5}, priority=Priority.HIGH))
        order = []
        while (item := await worker.claim_work("w")) is not None:
            order.append(item.task_id)
        assert order == [high, first, second, later, low]
    finally:
        await other.aclose()
        await worker.aclose()


async def test_named_queues_route_to_the_workers_serving_them(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    default_only = routed(client, settings, clock, ["noop"])
    heavy = routed(client, settings, clock, ["noop"], ("heavy",))
    tid, _ = await queue.enqueue(spec("noop", queue="heavy"))
    assert await client.hget(f"stock:task:{tid}", "queue") == "heavy"
    try:
        assert await default_only.claim_work("d") is None
        assert await client.zrange("stock:parked", 0, -1) == ["heavy:noop"]
        got = await heavy.claim_work("h")
        assert got is not None and got.task_id == tid
        plain, _ = await queue.enqueue(spec("noop", params={"x": 1}))
        assert await heavy.claim_work("h") is None  # it serves "heavy" only
        got = await default_only.claim_work("d")
        assert got is not None and got.task_id == plain
    finally:
        await default_only.aclose()
        await heavy.aclose()


async def test_cancel_takes_a_parked_task_out_of_its_set(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    other = routed(client, settings, clock, ["noop"])
    tid, _ = await queue.enqueue(spec("sleep"))
    try:
        assert await other.claim_work("o") is None
        assert await queue.cancel(tid) == "cancelled"
        assert await client.exists("stock:parked", "stock:parked:default:sleep") == 0
        assert (await queue.get(tid)).status == TaskStatus.CANCELLED
    finally:
        await other.aclose()


async def test_original_format_pushes_are_routed_too(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    """A task the original producer wrote (no schema, LPUSH only) and one queued by the
    previous version (in the shared list) are parked or claimed like any other."""
    await client.hset("stock:task:legacy-1", mapping={  # type: ignore[misc]
        "task_id": "legacy-1", "plugin_name": "sleep", "status": "pending",
        "priority": "1", "created_at": "2026-01-01T08:00:00"})
    await client.lpush("stock:task_queue:1", "legacy-1")  # type: ignore[misc]
    other = routed(client, settings, clock, ["noop"])
    sleeper = routed(client, settings, clock, ["sleep"])
    try:
        assert await other.claim_work("o") is None
        got = await sleeper.claim_work("s")
        assert got is not None and got.task_id == "legacy-1"
    finally:
        await other.aclose()
        await sleeper.aclose()


async def test_execution_tasks_and_dependents_released_later_are_routed(
    queue: TaskQueue, client: aioredis.Redis, settings: Settings, clock: FakeClock
) -> None:
    examples = routed(client, settings, clock, ["noop"])
    sleeper = routed(client, settings, clock, ["sleep"])
    eid, (a, b) = await create_execution(queue, [BatchTask(spec("noop")),
                                                 BatchTask(spec("sleep"), (0,))])
    try:
        assert await sleeper.claim_work("s") is None  # b waits for a
        got = await examples.claim_work("e")
        assert got is not None and got.task_id == a
        nxt = await examples.complete(got, claim_for="e")  # releases b, cannot take it
        assert nxt is None
        got = await sleeper.claim_work("s")
        assert got is not None and got.task_id == b
    finally:
        await examples.aclose()
        await sleeper.aclose()


async def test_an_unrouted_claim_takes_anything(queue: TaskQueue) -> None:
    """Callers that run no plugins (tests, benchmarks) advertise nothing and claim as
    before."""
    tid, _ = await queue.enqueue(spec("whatever_plugin"))
    got = await queue.claim("w")
    assert got is not None and got.task_id == tid


async def test_the_api_takes_a_named_queue(settings: Settings) -> None:
    from tests.test_api_health import sidecar

    async with sidecar(settings) as http:
        resp = await http.post("/api/v1/tasks", json={"plugin_name": "noop", "queue": "heavy"})
        assert resp.status == 202
        assert (await resp.json())["queue"] == "heavy"
        resp = await http.post("/api/v1/executions", json={"plugins": ["noop"],
                                                           "queue": "heavy",
                                                           "params": {"n": 1}})
        assert resp.status == 202
        [tid] = (await resp.json())["task_ids"]
        assert (await (await http.get(f"/api/v1/tasks/{tid}")).json())["queue"] == "heavy"
        resp = await http.post("/api/v1/tasks", json={"plugin_name": "noop", "queue": "a b"})
        assert resp.status == 400
        assert "queue 'a b' must be 1-64 letters" in (await resp.json())["error"]["message"]
        plain = await (await http.post("/api/v1/tasks", json={"plugin_name": "sleep"})).json()
        assert plain["queue"] == "default"


async def test_health_warns_about_tasks_no_live_worker_can_run(
    settings: Settings, client: aioredis.Redis
) -> None:
    from tests.test_api_health import get_health, sidecar

    async with TaskQueue(client, settings) as now:  # the real clock: a live heartbeat
        await now.heartbeat("h:1:abc", {"host": "h", "pid": 1,
                                        "plugins": '["noop"]', "queues": '["default"]'},
                            ttl=15)
        tid, _ = await now.enqueue(TaskSpec.build("tushare_daily"))
        now.advertise(["noop"], ["default"])
        assert await now.claim_work("h:1:abc") is None  # parked
    async with sidecar(settings) as http:
        status, body = await get_health(http)
    assert status == 200 and body["status"] == "degraded"
    assert body["queue"]["parked"] == {"default:tushare_daily": 1}
    assert "1 pending task of tushare_daily waits: no live worker can run tushare_daily " \
           "(the live workers run: noop)" in body["warnings"]
    assert body["workers"]["items"][0]["plugins"] == ["noop"]
