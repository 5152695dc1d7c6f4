"""The synchronous producer runs the same transitions as the async TaskQueue."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
import time
from dataclasses import replace

import pytest
import redis
import redis.asyncio as aioredis

import app.producer
from app.errors import Conflict, IllegalTransition, RedisUnavailable, TaskNotFound
from app.logs import configure_logging
from app.models import TaskSpec, TaskStatus
from app.producer import Producer, _Connection
from app.queue import TaskQueue
from app.settings import Settings
from tests.redis_server import RedisServer, free_port


def spec(**kw: object) -> TaskSpec:
    return TaskSpec.build("noop", **kw)  # type: ignore[arg-type]


def test_enqueue_dedup_get_cancel(settings: Settings) -> None:
    with Producer(settings) as p:
        tid, created = p.enqueue(spec(trade_dates=["2024-01-02"], params={"a": 1}))
        again, created_again = p.enqueue(spec(trade_dates=["20240102"], params={"a": 1}))
        assert created and not created_again and again == tid
        task = p.get(tid)
        assert task.status == TaskStatus.PENDING and task.trade_dates == ["20240102"]
        assert task.params == {"a": 1} and task.schema == 2
        assert p.cancel(tid) == "cancelled"
        with pytest.raises(IllegalTransition, match="already cancelled"):
            p.cancel(tid)
        with pytest.raises(TaskNotFound):
            p.get("missing")


async def test_tasks_it_writes_are_claimed_by_the_async_queue(settings: Settings,
                                                              queue: TaskQueue) -> None:
    with Producer(settings) as p:
        tid, _ = p.enqueue(spec(priority="high"))
    task = await queue.claim("w")
    assert task is not None and task.task_id == tid and task.attempt == 1


def test_selects_the_database_of_the_url(redis_url: str) -> None:
    with Producer(Settings(redis_url=redis_url.rsplit("/", 1)[0] + "/3")) as p:
        tid, _ = p.enqueue(spec())
    assert redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3").exists(f"stock:task:{tid}")
    assert not redis.Redis.from_url(redis_url).exists(f"stock:task:{tid}")


def test_mode_a_disabled_and_unreachable() -> None:
    with pytest.raises(RedisUnavailable, match="disabled"):
        Producer(Settings(redis_enabled=False))
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with Producer(Settings(redis_url=url)) as p, pytest.raises(RedisUnavailable) as info:
        p.enqueue(spec())
    assert time.monotonic() - started < 5
    assert "s3cret" not in info.value.message and "127.0.0.1" in info.value.message


def test_stopped_server_writes_nothing_and_recovers(own_redis: RedisServer) -> None:
    with Producer(Settings(redis_url=own_redis.url)) as p:
        p.enqueue(spec(params={"n": 0}))
        own_redis.stop()
        with pytest.raises(RedisUnavailable):
            p.enqueue(spec(params={"n": 1}))
        own_redis.start()
        assert redis.Redis.from_url(own_redis.url).dbsize() == 0  # nothing half-written
        tid, created = p.enqueue(spec(params={"n": 2}))
        assert created and p.get(tid).status == TaskStatus.PENDING


async def test_password_and_database_reach_the_script_connection(own_redis: RedisServer) -> None:
    """AUTH and SELECT happen on the lean script connection too (async and sync)."""
    admin = redis.Redis.from_url(own_redis.url)
    admin.config_set("requirepass", "s3cret")
    url = own_redis.url.replace("redis://", "redis://:s3cret@").rsplit("/", 1)[0] + "/4"
    settings = Settings(redis_url=url)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    async with TaskQueue(client, settings) as q:
        tid, created = await q.enqueue(spec(params={"via": "async"}))
        task = await q.claim("w")
        assert created and task is not None and task.task_id == tid
        await q.complete(task, records=1)
        assert (await q.get(tid)).status == TaskStatus.COMPLETED
    await client.aclose()
    with Producer(settings) as p:
        sync_id, _ = p.enqueue(spec(params={"via": "sync"}))
    db4 = redis.Redis.from_url(url)
    assert db4.exists(f"stock:task:{tid}") and db4.exists(f"stock:task:{sync_id}")
    assert redis.Redis.from_url(url.rsplit("/", 1)[0] + "/0").dbsize() == 0


@pytest.mark.parametrize("spin_us", [0, 200])
def test_with_and_without_polling_for_replies(settings: Settings, spin_us: int) -> None:
    """Both ways of waiting for a reply: polling first (the default), sleeping at once."""
    with Producer(replace(settings, producer_spin_us=spin_us)) as p:
        ids = [p.enqueue(spec(params={"spin": spin_us, "n": n}))[0] for n in range(50)]
        assert len(set(ids)) == 50
        assert all(p.get(t).status == TaskStatus.PENDING for t in ids)
        assert p.cancel(ids[0]) == "cancelled"


def test_a_server_that_stops_answering_times_out(own_redis: RedisServer) -> None:
    """A frozen Redis (SIGSTOP) makes the call fail after the I/O timeout (5 s) with
    RedisUnavailable, and the producer reconnects once the server answers again."""
    assert own_redis.proc is not None
    with Producer(Settings(redis_url=own_redis.url)) as p:
        p.enqueue(spec(params={"n": 0}))
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisUnavailable, match="no reply within 5 s"):
                p.enqueue(spec(params={"n": 1}))
            assert 4.5 < time.monotonic() - started < 15
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        tid, created = p.enqueue(spec(params={"n": 2}))
        assert created and p.get(tid).status == TaskStatus.PENDING
        # the timed-out request may still have run once Redis resumed: submitting the
        # same work again is safe, deduplication leaves exactly one task for it
        first, _ = p.enqueue(spec(params={"n": 1}))
        again, created_again = p.enqueue(spec(params={"n": 1}))
        assert again == first and not created_again


def test_polling_backs_off_when_replies_come_too_late(settings: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a server that answers after the poll window (2 ms here, a remote Redis
    in life), the connection stops polling after 8 misses and sleeps at once for the
    next 64 calls."""
    monkeypatch.setattr(app.producer, "_cpus", lambda: 2)  # polling is on, as on 2+ CPUs
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                time.sleep(0.002)
                conn.sendall(b"+PONG\r\n" * data.count(b"PING"))

    threading.Thread(target=serve, daemon=True).start()
    slow = _Connection(replace(settings, redis_url=f"redis://127.0.0.1:{port}/0",
                               producer_spin_us=200))
    assert slow._spin == pytest.approx(0.0002)
    try:
        for _ in range(7):
            assert slow.call("PING") == "PONG"
        assert slow._skip == 0 and slow._misses == 7
        slow.call("PING")
        assert slow._skip == 64 and slow._misses == 0
        slow.call("PING")
        assert slow._skip == 63  # slept at once: no poll, no miss counted
    finally:
        slow.close()
        listener.close()


def test_log_lines_of_new_and_deduplicated_submissions(settings: Settings,
                                                       json_log: io.StringIO) -> None:
    """The line of a new task is rendered while Redis works and written once the reply
    says the task was created; a duplicate logs task.deduplicated instead, and a call
    that fails logs neither."""
    with Producer(settings) as p:
        tid, _ = p.enqueue(spec(params={"log": 1}, priority="high"))
        again, _ = p.enqueue(spec(params={"log": 1}, priority="high"))
        with pytest.raises(Conflict):
            p.enqueue(spec(params={"log": 2}), task_id=tid)  # the id is taken
    lines = [json.loads(x) for x in json_log.getvalue().splitlines() if x.strip()]
    events = [(e["event"], e["task_id"]) for e in lines if e["event"].startswith("task.")]
    assert events == [("task.enqueued", tid), ("task.deduplicated", tid)] and again == tid
    first = next(e for e in lines if e["event"] == "task.enqueued")
    assert first["plugin"] == "noop" and first["priority"] == 0 and first["level"] == "info"
    assert first["component"] == "stockq.queue" and first["timestamp"].endswith("Z")


def test_no_log_line_when_info_is_filtered(settings: Settings, json_log: io.StringIO) -> None:
    configure_logging(replace(settings, log_format="json", log_level="warning"), force=True)
    with Producer(settings) as p:
        p.enqueue(spec(params={"quiet": 1}))
    assert json_log.getvalue() == ""


def test_no_polling_on_one_cpu_or_when_turned_off(settings: Settings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.producer, "_cpus", lambda: 1)
    assert _Connection(replace(settings, producer_spin_us=200))._spin == 0
    monkeypatch.setattr(app.producer, "_cpus", lambda: 2)
    assert _Connection(replace(settings, producer_spin_us=0))._spin == 0
    assert _Connection(replace(settings, producer_spin_us=150))._spin == pytest.approx(0.00015)
    assert _Connection(replace(settings, producer_spin_us=10**9))._spin == pytest.approx(0.01)
