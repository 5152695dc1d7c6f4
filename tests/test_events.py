"""``GET /api/v1/events``: what the transition scripts publish reaches a stream as
Server-Sent Events, in order; a stream resumes from Last-Event-ID; a slow client skips
ahead, a stuck one is dropped; the feed outlives a Redis restart; the token guards it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from app.api import events
from app.api.app import create_app
from app.api.events import EVENT_HUB, EventHub, parse
from app.executions import BatchTask, create_execution
from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from tests.api_support import registry
from tests.api_support import worker as worker  # a fixture: pytest finds it by name here
from tests.redis_server import RedisServer
from tests.sidecar_support import GOOD_TOKEN

V1 = "/api/v1"


@dataclass
class Sse:
    name: str
    data: dict[str, Any]
    id: str = ""


class Stream:
    """An open event stream, read event by event."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 10) -> Sse:
        name, data, eid = "message", "", ""
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.response.content.readline()).decode()
                if line == "":
                    raise EOFError("the stream ended")
                line = line.rstrip("\n")
                if line == "":
                    if data:
                        return Sse(name, json.loads(data), eid)
                    continue
                field, _, value = line.partition(": ")
                if field == "event":
                    name = value
                elif field == "data":
                    data = value
                elif field == "id":
                    eid = value

    async def until(self, name: str, timeout: float = 10, **match: Any) -> Sse:
        """The next event called ``name`` whose data holds ``match`` (others skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if event.name == name and all(event.data.get(k) == v
                                              for k, v in match.items()):
                    return event


@asynccontextmanager
async def sidecar(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings, registry=registry()))) as client:
        yield client


@asynccontextmanager
async def stream(client: TestClient[Any, Any], **headers: str) -> AsyncIterator[Stream]:
    async with client.get(f"{V1}/events", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        yield Stream(response)


def noop(**kw: Any) -> TaskSpec:
    return TaskSpec.build("prices", **kw)


def test_messages_parse_into_events() -> None:
    assert parse("running 7f3a") == ("task", {"task_id": "7f3a", "status": "running"})
    assert parse("completed id with spaces") == ("task", {"task_id": "id with spaces",
                                                          "status": "completed"})
    assert parse("progress 42.50 1200 7f3a") == ("progress", {
        "task_id": "7f3a", "progress": 42.5, "records": 1200})
    assert parse("execution e1") == ("execution", {"execution_id": "e1"})
    assert parse("progress 1 x") is None and parse("unknown x") is None
    assert parse("pending") is None


async def test_a_task_lifecycle_arrives_in_order(settings: Settings, worker: TaskQueue) -> None:
    async with sidecar(settings) as client, stream(client) as events_:
        hello = await events_.next()
        assert hello.name == "hello" and hello.data == {"redis": "ok", "resumed": False}
        tid, _ = await worker.enqueue(noop())
        task = await worker.claim("w")
        assert task is not None and task.task_id == tid
        await worker.progress(task, 40, records=12)
        await worker.complete(task, records=30)
        seen = [await events_.next() for _ in range(4)]
        assert [(e.name, e.data) for e in seen] == [
            ("task", {"task_id": tid, "status": "pending"}),
            ("task", {"task_id": tid, "status": "running"}),
            ("progress", {"task_id": tid, "progress": 40.0, "records": 12}),
            ("task", {"task_id": tid, "status": "completed"}),
        ]
        numbers = [int(e.id.rsplit("-", 1)[1]) for e in seen]
        assert numbers == sorted(numbers) and len(set(numbers)) == 4

        eid, (a, b) = await create_execution(
            worker, [BatchTask(noop(params={"n": 1})), BatchTask(noop(params={"n": 2}), (0,))])
        assert (await events_.until("execution")).data == {"execution_id": eid}
        await worker.cancel(a, "no")
        # the dependent ends with it: both transitions are published
        got = {(await events_.next()).data["task_id"] for _ in range(2)}
        assert got == {a, b}


async def test_the_channel_belongs_to_the_namespace(redis_url: str, settings: Settings
                                                    ) -> None:
    other = replace(settings, key_prefix="other")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("other:events", "stock:events")
    try:
        async with TaskQueue(client, other) as queue:
            tid, _ = await queue.enqueue(noop())
        message = None
        async with asyncio.timeout(5):
            while message is None:
                message = await pubsub.get_message(timeout=1)
        assert message["channel"] == "other:events" and message["data"] == f"pending {tid}"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def test_a_stream_resumes_after_its_last_event_id(settings: Settings,
                                                        worker: TaskQueue) -> None:
    async with sidecar(settings) as client:
        async with stream(client) as first:
            await first.next()
            a, _ = await worker.enqueue(noop(params={"n": 1}))
            seen = await first.until("task", task_id=a)
        b, _ = await worker.enqueue(noop(params={"n": 2}))  # while nobody is connected
        async with stream(client, **{"Last-Event-ID": seen.id}) as again:
            hello = await again.next()
            assert hello.name == "hello" and hello.data["resumed"] is True
            assert (await again.next()).data == {"task_id": b, "status": "pending"}
        async with stream(client, **{"Last-Event-ID": "someone-else-12"}) as fresh:
            assert (await fresh.next()).data["resumed"] is False


async def test_a_slow_client_skips_ahead_and_a_stuck_one_is_dropped(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that stops reading holds its writes back; meanwhile the ring (here 50
    events) moves on.  Reading again, it gets ``resync`` and the newest events, never the
    backlog; one that never reads again is dropped after the write timeout."""
    monkeypatch.setattr(events, "WRITE_TIMEOUT", 3.0)
    app = create_app(settings, registry=registry())
    app[EVENT_HUB] = hub = EventHub(settings, ring_size=50)
    async with TestClient(TestServer(app)) as client:
        reader, writer = await open_stream(client)
        await read_until(reader, b"event: hello")
        publisher = aioredis.Redis.from_url(settings.redis_url)
        try:
            big = "x" * 2000  # 3,000 events of 2 KB: far more than the sockets hold
            for i in range(3000):
                await publisher.publish("stock:events", f"pending {big}-{i}")
            async with asyncio.timeout(20):
                while hub.seq < 3000:
                    await asyncio.sleep(0.05)
            assert len(hub.ring) == 50
            received = await read_until(reader, f"{big}-2999".encode(), limit=2_000_000)
            assert b"event: resync" in received
            skipped = received.count(b"event: task")
            assert skipped < 3000  # what the sockets held plus the ring, not everything
            # a stuck client: never reads again
            for i in range(3000):
                await publisher.publish("stock:events", f"pending {big}-again-{i}")
            async with asyncio.timeout(30):
                while hub.dropped == 0 or hub.clients:
                    await asyncio.sleep(0.1)
        finally:
            writer.close()
            await publisher.aclose()


async def open_stream(client: TestClient[Any, Any]
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection with a small receive buffer, so that not reading stalls the
    server's writes quickly."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", client.port or 0))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
    writer.write(f"GET {V1}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_until(reader: asyncio.StreamReader, marker: bytes, limit: int = 100_000
                     ) -> bytes:
    data = b""
    async with asyncio.timeout(30):
        while marker not in data:
            chunk = await reader.read(65536)
            assert chunk, "the stream ended"
            data += chunk
            assert len(data) < limit * 10
    return data


async def test_the_feed_outlives_a_redis_restart(own_redis: RedisServer,
                                                 settings: Settings) -> None:
    own = replace(settings, redis_url=own_redis.url)
    async with sidecar(own) as client, stream(client) as feed:
        assert (await feed.next()).data["redis"] == "ok"
        own_redis.stop()
        lost = await feed.until("redis", timeout=20, status="unavailable")
        assert "unreachable" in lost.data["error"]
        own_redis.start()
        await feed.until("redis", timeout=30, status="ok")
        assert (await feed.next()).name == "resync"
        queue_client = aioredis.Redis.from_url(own.redis_url, decode_responses=True)
        async with TaskQueue(queue_client, own) as queue:
            tid, _ = await queue.enqueue(noop())
        await queue_client.aclose()
        assert (await feed.until("task")).data == {"task_id": tid, "status": "pending"}


async def test_streams_are_limited_and_end_with_the_sidecar(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "MAX_CLIENTS", 1)
    app = create_app(settings, registry=registry())
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        response = await client.get(f"{V1}/events")
        assert (await Stream(response).next()).name == "hello"
        async with client.get(f"{V1}/events") as second:
            assert second.status == 503
            assert (await second.json())["error"]["code"] == "too_many_streams"
    finally:
        async with asyncio.timeout(10):  # the open stream does not hold the shutdown
            await client.close()
    assert app[EVENT_HUB].clients == 0


async def test_the_token_guards_the_stream(settings: Settings) -> None:
    async with sidecar(replace(settings, api_token=GOOD_TOKEN)) as client:
        async with client.get(f"{V1}/events") as response:
            assert response.status == 401
        async with stream(client, Authorization=f"Bearer {GOOD_TOKEN}") as feed:
            assert (await feed.next()).name == "hello"
