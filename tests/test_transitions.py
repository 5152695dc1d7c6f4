"""Every transition of the task state machine, and every illegal one, on a real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from app.errors import IllegalTransition, InvalidInput, NotFound, StaleLease
from app.models import Priority, TaskSpec, TaskStatus
from app.queue import TaskQueue
from app.worker.protocol import work_payload
from tests.conftest import FakeClock


def spec(plugin: str = "noop", **kw: object) -> TaskSpec:
    return TaskSpec.build(plugin, **kw)  # type: ignore[arg-type]


async def test_enqueue_claim_complete(queue: TaskQueue, client: aioredis.Redis,
                                      clock: FakeClock) -> None:
    tid, created = await queue.enqueue(spec(trade_dates=["2024-01-02"]))
    assert created
    t = await queue.get(tid)
    assert t.status == TaskStatus.PENDING and t.attempt == 0 and t.schema == 2
    assert t.trade_dates == ["20240102"]
    assert await client.lrange("stock:task_queue:1", 0, -1) == [tid]
    assert await client.llen("stock:doorbell") == 1

    claimed = await queue.claim("w1", "tok-1")
    assert claimed is not None and claimed.task_id == tid
    assert claimed.status == TaskStatus.RUNNING and claimed.attempt == 1
    assert claimed.lease_token == "tok-1" and claimed.worker == "w1"
    assert await client.sismember("stock:running_tasks", tid)
    lease = await client.zscore("stock:leases", tid)
    assert lease == pytest.approx(clock.now * 1000 + 30_000)
    assert claimed.deadline_at is not None
    assert claimed.deadline_at.timestamp() == pytest.approx(clock.now + 3600)

    clock.advance(2)
    assert await queue.progress(claimed, 40, 7, "half way") is False
    mid = await queue.get(tid)
    assert mid.progress == 40 and mid.records_processed == 7 and mid.progress_message == "half way"

    clock.advance(1)
    await queue.complete(claimed, records=12, result={"status": "success"})
    done = await queue.get(tid)
    assert done.status == TaskStatus.COMPLETED and done.records_processed == 12
    assert done.progress == 100 and done.duration_ms == 3000
    assert done.result == {"status": "success"}
    assert not await client.sismember("stock:running_tasks", tid)
    assert await client.zscore("stock:leases", tid) is None
    ttl = await client.ttl(f"stock:task:{tid}")
    assert 0 < ttl <= 7 * 86400
    assert await queue.claim("w1") is None


async def test_claim_priority_order(queue: TaskQueue) -> None:
    low, _ = await queue.enqueue(spec(params={"n": 1}, priority="low"))
    normal, _ = await queue.enqueue(spec(params={"n": 2}))
    high, _ = await queue.enqueue(spec(params={"n": 3}, priority=Priority.HIGH))
    normal2, _ = await queue.enqueue(spec(params={"n": 4}, priority=1))
    order = []
    while (t := await queue.claim("w")) is not None:
        order.append(t.task_id)
    assert order == [high, normal, normal2, low]


async def test_dedup_returns_active_task_and_releases_when_ended(queue: TaskQueue) -> None:
    a, created_a = await queue.enqueue(spec(trade_dates=["20240102"], params={"x": 1}))
    b, created_b = await queue.enqueue(spec(trade_dates=["2024-01-02"], params={"x": 1}))
    assert created_a and not created_b and a == b
    other, created = await queue.enqueue(spec(trade_dates=["20240103"], params={"x": 1}))
    assert created and other != a
    t = await queue.claim("w")
    assert t is not None and t.task_id == a
    again, created = await queue.enqueue(spec(trade_dates=["20240102"], params={"x": 1}))
    assert again == a and not created  # running counts as active
    await queue.complete(t)
    fresh, created = await queue.enqueue(spec(trade_dates=["20240102"], params={"x": 1}))
    assert created and fresh != a


async def test_code_and_data_source_are_stored_part_of_the_work_and_kept_on_retry(
    queue: TaskQueue, client: aioredis.Redis
) -> None:
    """ts_code and data_source (the original producer's fields) are written to the hash,
    make different work (not deduplicated together), reach the worker's claim and go
    with a manual retry; without them the digest is what it always was."""
    plain = spec(trade_dates=["20240102"])
    assert plain.dedup_digest() == spec(trade_dates=["20240102"], ts_code="",
                                        data_source="").dedup_digest()
    a, _ = await queue.enqueue(plain)
    b, created_b = await queue.enqueue(spec(trade_dates=["20240102"], ts_code="600000.SH"))
    c, created_c = await queue.enqueue(spec(trade_dates=["20240102"], ts_code="600000.SH",
                                            data_source="qmt"))
    d, created_d = await queue.enqueue(spec(trade_dates=["20240102"], ts_code=" 600000.SH ",
                                            data_source="qmt"))
    assert created_b and created_c and not created_d and len({a, b, c}) == 3 and d == c
    stored = await client.hgetall(f"stock:task:{c}")  # type: ignore[misc]
    assert stored["ts_code"] == "600000.SH" and stored["data_source"] == "qmt"
    assert "ts_code" not in await client.hgetall(f"stock:task:{a}")  # type: ignore[misc]
    task = await queue.get(c)
    assert (task.ts_code, task.data_source) == ("600000.SH", "qmt")
    assert task.to_dict()["ts_code"] == "600000.SH"
    with pytest.raises(InvalidInput, match="ts_code must be a string"):
        spec(ts_code=["600000.SH"])
    claimed = [await queue.claim_work("w") for _ in range(3)]
    work = {w.task_id: w for w in claimed if w is not None}
    assert work[c].fields["ts_code"] == "600000.SH" and work[c].fields["data_source"] == "qmt"
    await queue.fail(work[c], "bad_params", "no such code", retryable=False)
    again = await queue.get(await queue.retry(c))
    assert (again.ts_code, again.data_source) == ("600000.SH", "qmt")


async def test_fail_backoff_is_exponential_capped_and_honoured(
    queue: TaskQueue, clock: FakeClock
) -> None:
    tid, _ = await queue.enqueue(spec(max_attempts=5))
    expected = [5_000, 10_000, 20_000, 40_000]  # equal jitter with rng 0: half of 10s*2^(n-1)
    for attempt, delay in enumerate(expected, start=1):
        t = await queue.claim("w")
        assert t is not None and t.attempt == attempt
        out = await queue.fail(t, "network", "connection reset")
        assert out.status == TaskStatus.RETRYING and out.attempt == attempt
        assert out.next_run_at_ms == int(clock.now * 1000) + delay
        stored = await queue.get(tid)
        assert stored.status == TaskStatus.RETRYING and stored.last_error_type == "network"
        # not claimable before the backoff ends ...
        clock.advance(delay / 1000 - 0.001)
        assert await queue.claim("w") is None
        # ... and claimable once it has
        clock.advance(0.001)
    t = await queue.claim("w")
    assert t is not None and t.attempt == 5
    out = await queue.fail(t, "network", "still down")
    assert out.status == TaskStatus.FAILED
    final = await queue.get(tid)
    assert final.status == TaskStatus.FAILED and final.attempt == 5
    assert final.error_message == "still down"


async def test_backoff_cap_and_jitter(client: aioredis.Redis, settings: object,
                                      clock: FakeClock) -> None:
    q = TaskQueue(client, settings, clock=clock, rng=lambda: 0.999)  # type: ignore[arg-type]
    await q.enqueue(spec(max_attempts=20))
    delays = []
    for _ in range(8):
        t = await q.claim("w")
        assert t is not None
        out = await q.fail(t, "timeout", "slow")
        assert out.next_run_at_ms is not None
        delays.append(out.next_run_at_ms - int(clock.now * 1000))
        clock.advance((delays[-1] + 1) / 1000)
    # full = min(300s, 10s * 2^(n-1)); delay = full/2 + full/2 * 0.999
    fulls = [min(300_000, 10_000 * 2**n) for n in range(8)]
    assert delays == [int(f / 2 + f / 2 * 0.999) for f in fulls]
    assert max(delays) < 300_000
    await q.aclose()


async def test_rate_limit_retry_after(queue: TaskQueue, clock: FakeClock) -> None:
    await queue.enqueue(spec())
    t = await queue.claim("w")
    assert t is not None
    out = await queue.fail(t, "rate_limit", "quota", retry_after_seconds=60)
    assert out.next_run_at_ms == int(clock.now * 1000) + 60_000


@pytest.mark.parametrize("etype", ["config_error", "plugin_not_found", "bad_params",
                                   "schema_error"])
async def test_non_retryable_fails_at_once(queue: TaskQueue, etype: str) -> None:
    tid, _ = await queue.enqueue(spec(max_attempts=5))
    t = await queue.claim("w")
    assert t is not None
    out = await queue.fail(t, etype, "no token set")
    assert out.status == TaskStatus.FAILED and out.attempt == 1
    assert (await queue.get(tid)).last_error_type == etype


async def test_stale_lease_cannot_overwrite_newer_attempt(
    queue: TaskQueue, clock: FakeClock
) -> None:
    tid, _ = await queue.enqueue(spec())
    first = await queue.claim("w1", "old")
    assert first is not None
    clock.advance(31)  # lease expired: the reaper gives the task to someone else
    assert await queue.reap() == [(tid, "requeued")]
    second = await queue.claim("w2", "new")
    assert second is not None and second.attempt == 2
    with pytest.raises(StaleLease):
        await queue.complete(first)
    with pytest.raises(StaleLease):
        await queue.fail(first, "network", "late")
    with pytest.raises(StaleLease):
        await queue.progress(first, 50)
    await queue.complete(second, records=1)
    assert (await queue.get(tid)).status == TaskStatus.COMPLETED
    with pytest.raises(IllegalTransition):
        await queue.complete(second)


async def test_cancel_pending_retrying_running(queue: TaskQueue, client: aioredis.Redis) -> None:
    pending, _ = await queue.enqueue(spec(params={"n": 1}))
    assert await queue.cancel(pending) == "cancelled"
    assert await client.llen("stock:task_queue:1") == 0
    assert (await queue.get(pending)).status == TaskStatus.CANCELLED

    retrying, _ = await queue.enqueue(spec(params={"n": 2}))
    t = await queue.claim("w")
    assert t is not None
    await queue.fail(t, "network", "x")
    assert await client.zscore("stock:delayed", retrying) is not None
    assert await queue.cancel(retrying) == "cancelled"
    assert await client.zscore("stock:delayed", retrying) is None

    running, _ = await queue.enqueue(spec(params={"n": 3}))
    t = await queue.claim("w")
    assert t is not None
    assert await queue.cancel(running) == "cancel_requested"
    assert (await queue.get(running)).status == TaskStatus.RUNNING
    assert await queue.progress(t, 10) is True
    renewed = await queue.renew({running: t.lease_token})
    assert renewed.cancel_requested == [running] and renewed.lost == []
    await queue.acknowledge_cancel(t)
    assert (await queue.get(running)).status == TaskStatus.CANCELLED

    for tid in (pending, retrying, running):
        with pytest.raises(IllegalTransition, match="already cancelled"):
            await queue.cancel(tid)
    with pytest.raises(NotFound):
        await queue.cancel("no-such-task")


async def test_cancel_completed_is_illegal(queue: TaskQueue) -> None:
    tid, _ = await queue.enqueue(spec())
    t = await queue.claim("w")
    assert t is not None
    await queue.complete(t)
    with pytest.raises(IllegalTransition, match="already completed"):
        await queue.cancel(tid)


async def test_acknowledge_cancel_without_request_is_illegal(queue: TaskQueue) -> None:
    await queue.enqueue(spec())
    t = await queue.claim("w")
    assert t is not None
    with pytest.raises(IllegalTransition, match="no cancel request"):
        await queue.acknowledge_cancel(t)


async def test_fail_after_cancel_request_ends_cancelled(queue: TaskQueue) -> None:
    tid, _ = await queue.enqueue(spec(max_attempts=3))
    t = await queue.claim("w")
    assert t is not None
    await queue.cancel(tid)
    out = await queue.fail(t, "network", "killed")
    assert out.status == TaskStatus.CANCELLED


async def test_reap_requeues_then_fails_when_exhausted(queue: TaskQueue, clock: FakeClock,
                                                       client: aioredis.Redis) -> None:
    tid, _ = await queue.enqueue(spec(max_attempts=2))
    t = await queue.claim("w1")
    assert t is not None
    clock.advance(29)
    assert await queue.reap() == []  # lease still valid
    clock.advance(2)
    assert await queue.reap() == [(tid, "requeued")]
    back = await queue.get(tid)
    assert back.status == TaskStatus.PENDING and back.last_error_type == "worker_lost"
    assert not await client.sismember("stock:running_tasks", tid)
    t = await queue.claim("w2")
    assert t is not None and t.attempt == 2
    clock.advance(31)
    assert await queue.reap() == [(tid, "failed")]
    final = await queue.get(tid)
    assert final.status == TaskStatus.FAILED and final.last_error_type == "worker_lost"
    assert (await client.hget("stock:stats", "worker_lost")) == "2"


async def test_renew_extends_lease_and_reports_lost(queue: TaskQueue, clock: FakeClock) -> None:
    tid, _ = await queue.enqueue(spec())
    t = await queue.claim("w")
    assert t is not None
    clock.advance(20)
    assert (await queue.renew({tid: t.lease_token})).lost == []
    clock.advance(20)  # 40s after claim, 20s after renewal: still leased
    assert await queue.reap() == []
    assert (await queue.renew({tid: "wrong"})).lost == [tid]


async def test_requeue_does_not_consume_an_attempt(queue: TaskQueue,
                                                   client: aioredis.Redis) -> None:
    tid, _ = await queue.enqueue(spec())
    t = await queue.claim("w")
    assert t is not None and t.attempt == 1
    await queue.requeue(t)
    back = await queue.get(tid)
    assert back.status == TaskStatus.PENDING and back.attempt == 0
    assert await client.zscore("stock:leases", tid) is None
    again = await queue.claim("w")
    assert again is not None and again.attempt == 1


async def test_manual_retry_creates_linked_task(queue: TaskQueue) -> None:
    tid, _ = await queue.enqueue(spec(params={"k": "v"}, max_attempts=1, trade_dates=["20240105"]))
    t = await queue.claim("w")
    assert t is not None
    await queue.fail(t, "network", "down")
    new = await queue.retry(tid)
    assert new != tid
    fresh = await queue.get(new)
    assert fresh.retry_of == tid and fresh.status == TaskStatus.PENDING
    assert fresh.params == {"k": "v"} and fresh.trade_dates == ["20240105"]
    assert fresh.trigger == "retry" and fresh.attempt == 0
    assert (await queue.get(tid)).retried_by == new
    with pytest.raises(IllegalTransition, match="already retried"):
        await queue.retry(tid)
    with pytest.raises(IllegalTransition, match="only failed or cancelled"):
        await queue.retry(new)
    with pytest.raises(NotFound):
        await queue.retry("missing")


async def test_delete(queue: TaskQueue, client: aioredis.Redis) -> None:
    tid, _ = await queue.enqueue(spec())
    with pytest.raises(IllegalTransition, match="cancel it first"):
        await queue.delete(tid)
    await queue.cancel(tid)
    await queue.delete(tid)
    assert not await client.exists(f"stock:task:{tid}")
    assert await client.zscore("stock:index:all", tid) is None
    assert await client.zscore("stock:index:status:cancelled", tid) is None
    assert await client.zscore("stock:index:plugin:noop", tid) is None
    with pytest.raises(NotFound):
        await queue.delete(tid)


async def test_transitions_on_unknown_or_pending_tasks_are_errors(queue: TaskQueue) -> None:
    tid, _ = await queue.enqueue(spec())
    pending = await queue.get(tid)
    with pytest.raises(IllegalTransition, match="is pending, not running"):
        await queue.complete(pending)
    with pytest.raises(IllegalTransition):
        await queue.fail(pending, "network", "x")
    with pytest.raises(IllegalTransition):
        await queue.requeue(pending)
    pending.task_id = "nope"
    with pytest.raises(NotFound):
        await queue.complete(pending)


async def test_worker_claims_return_what_running_needs(queue: TaskQueue) -> None:
    """claim_work and complete/fail(claim_for=...) return a WorkItem (lib.lua's
    WORK_FIELDS order): the same values as the stored hash, decoded for the child."""
    first, _ = await queue.enqueue(spec(trade_dates=["2024-01-03", "2024-01-02"],
                                        params={"x": 1}, timeout_seconds=90,
                                        memory_limit_mb=256))
    second, _ = await queue.enqueue(spec(start_date="2024-01-01", end_date="2024-01-31"))
    third, _ = await queue.enqueue(spec(params={"y": "z"}))
    item = await queue.claim_work("w1", "tok-a")
    assert item is not None and item.task_id == first and item.lease_token == "tok-a"
    assert item.attempt == 1 and item.timeout_seconds == 90 and item.plugin_name == "noop"
    stored = await queue.get(first)
    payload = work_payload(item.fields)
    assert payload == {
        "task_id": first, "plugin_name": "noop", "task_type": stored.task_type,
        "trade_dates": ["20240102", "20240103"], "start_date": "", "end_date": "",
        "params": {"x": 1}, "attempt": 1, "checkpoint": "", "records_processed": 0,
        "execution_id": "", "memory_limit_mb": 256, "ts_code": "", "data_source": "",
    }
    nxt = await queue.complete(item, 3, checkpoint="20240103", claim_for="w1")
    assert nxt is not None and nxt.task_id == second and nxt.lease_token
    assert (await queue.get(second)).lease_token == nxt.lease_token
    p2 = work_payload(nxt.fields)
    assert p2["start_date"] == "20240101" and p2["end_date"] == "20240131"
    done = await queue.get(first)
    assert done.status == TaskStatus.COMPLETED and done.records_processed == 3
    assert done.checkpoint == "20240103" and done.progress == 100
    res = await queue.fail(nxt, "network", "boom", claim_for="w1")
    assert res.status == TaskStatus.RETRYING and res.next_task is not None
    assert res.next_task.task_id == third and work_payload(res.next_task.fields)["params"] == {
        "y": "z"}
    assert await queue.claim_work("w1") is None
