"""A claiming call whose reply never comes back: Redis ran it (a task is now running under
the worker's lease token) and the connection broke before the answer.  The worker takes
that task at its next claim instead of leaving it to the reaper (a lease later, one
attempt spent without running).  The replies are lost for real: a TCP proxy between the
queue and a Redis of the suite's own swallows one answer and cuts the connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.errors import RedisUnavailable
from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from tests.redis_server import RedisServer


class LossyProxy:
    """Forwards TCP both ways; after :meth:`lose_next_reply` the next chunk Redis sends
    is dropped and the client's connection aborted (the command did run)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.lost = 0
        self._lose = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_next_reply(self) -> None:
        self._lose = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # both ends of every connection: the pumps end
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if self._lose:
                    self._lose = False
                    self.lost += 1
                    writer.transport.abort()
                    up_writer.close()
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
                up_writer.close()


@pytest.fixture
async def lossy(own_redis: RedisServer) -> AsyncIterator[LossyProxy]:
    proxy = LossyProxy(own_redis.port)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def direct(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(lossy: LossyProxy) -> AsyncIterator[TaskQueue]:
    settings = Settings(redis_url=lossy.url, plugins=(), builtin_plugins=False,
                        lease_seconds=30)
    client = aioredis.Redis.from_url(lossy.url, decode_responses=True)
    q = TaskQueue(client, settings)
    yield q
    await q.aclose()
    await client.aclose()


async def enqueue(queue: TaskQueue, n: int) -> list[str]:
    ids = []
    for i in range(n):
        task_id, _ = await queue.enqueue(TaskSpec.build("noop", params={"n": i},
                                                        max_attempts=1))
        ids.append(task_id)
    return ids


async def test_a_finish_and_claim_whose_reply_is_lost(queue: TaskQueue, lossy: LossyProxy,
                                                      direct: aioredis.Redis) -> None:
    a, b, c = await enqueue(queue, 3)
    first = await queue.claim_work("w1")
    assert first is not None and first.task_id == a
    second = await queue.complete(first, 1, claim_for="w1")  # the script is loaded now
    assert second is not None and second.task_id == b
    lossy.lose_next_reply()
    with pytest.raises(RedisUnavailable):
        await queue.complete(second, 1, claim_for="w1")
    assert lossy.lost == 1
    # Redis ran it: b ended, c runs under w1 with a token the worker never got
    assert await direct.hget(queue.keys.task(b), "status") == "completed"
    stored = await direct.hgetall(queue.keys.task(c))
    assert (stored["status"], stored["worker"], stored["attempt"]) == ("running", "w1", "1")
    # the worker's next claim is that task, under that token, on its first attempt
    third = await queue.claim_work("w1")
    assert third is not None and third.task_id == c
    assert (third.lease_token, third.attempt) == (stored["lease_token"], 1)
    lease = await direct.zscore(queue.keys.leases, c)
    assert lease is not None and lease > int(stored["started_ms"])  # renewed
    assert await queue.complete(third, 1) is None
    done = await direct.hgetall(queue.keys.task(c))
    assert (done["status"], done["attempt"]) == ("completed", "1")
    assert await queue.reap() == [] and await queue.claim_work("w1") is None


async def test_a_claim_whose_reply_is_lost(queue: TaskQueue, lossy: LossyProxy,
                                           direct: aioredis.Redis) -> None:
    assert await queue.claim_work("w0") is None  # loads the script; nothing to take yet
    a, b = await enqueue(queue, 2)
    lossy.lose_next_reply()
    with pytest.raises(RedisUnavailable):
        await queue.claim_work("w1")
    claimed = await queue.claim_work("w1")
    assert claimed is not None and claimed.task_id in (a, b) and claimed.attempt == 1
    assert claimed.lease_token == await direct.hget(queue.keys.task(claimed.task_id),
                                                    "lease_token")
    # the other one is still there for the next claim; nothing is left to recover
    other = await queue.claim_work("w1")
    assert other is not None and {claimed.task_id, other.task_id} == {a, b}


async def test_an_unanswered_call_that_never_ran_recovers_nothing(
        queue: TaskQueue, lossy: LossyProxy, own_redis: RedisServer) -> None:
    """Redis down: the call never ran; the next claim finds nothing to recover and
    claims as usual."""
    [a] = await enqueue(queue, 1)
    own_redis.stop()
    with pytest.raises(RedisUnavailable):
        await queue.claim_work("w1")
    own_redis.start()
    assert await queue.claim_work("w1") is None  # a Redis without data: nothing at all
    [b] = await enqueue(queue, 1)
    claimed = await queue.claim_work("w1")
    assert claimed is not None and claimed.task_id == b and a != b
