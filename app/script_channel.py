"""A lean, pipelined Redis connection for the transition scripts.

Every task transition is one EVALSHA.  Through redis-py's asyncio client one such call
costs ~150-250 µs of client CPU on a small VM (command packing in Python, a task per
call for the socket timeout, connection checkout); here it costs ~50 µs: commands are
packed by hiredis, written to one connection shared by all callers of the process
(concurrent callers are pipelined for free), and replies are parsed by hiredis and
matched to their callers in order.  Single-task reads (``HGETALL`` of a task, the
sidecar's hottest read) use it too; blocking waits (BLPOP), pipelined list reads and
everything else go through redis-py.

Nothing here retries a command: a script is never run twice because a reply was lost.
A connection that fails or times out fails every call in flight (the caller sees
``ConnectionError``, turned into RedisUnavailable); the next call reconnects.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import hiredis
from redis.exceptions import ResponseError


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace",
                                     replyError=ResponseError)
        self.waiters: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()  # looked up once, not at every request

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not self.waiters:  # a reply nobody asked for: the stream is broken
                self.abort(ConnectionError("unexpected reply from Redis"))
                return
            fut, _ = self.waiters.popleft()
            if fut.done():
                continue
            if isinstance(reply, ResponseError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _fail_all(self, exc: Exception) -> None:
        while self.waiters:
            fut, _ = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def abort(self, exc: Exception) -> None:
        self.closed = True
        self._fail_all(exc)
        if self.transport is not None:
            self.transport.abort()

    def request(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self.closed or self.transport is None:
            fut.set_exception(ConnectionError("connection to Redis is closed"))
            return fut
        packed = hiredis.pack_command(args)  # may raise: then nothing is queued or sent
        self.waiters.append((fut, loop.time()))
        self.transport.write(packed)
        return fut


class ScriptChannel:
    """One connection per event loop for script calls; reconnects on demand."""

    def __init__(self, connection_kwargs: dict[str, Any], *, timeout: float = 5.0,
                 connect_timeout: float = 2.0) -> None:
        self._kw = connection_kwargs
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._proto: _Protocol | None = None
        self._lock: asyncio.Lock | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def supports(cls, connection_kwargs: dict[str, Any]) -> bool:
        """TCP or unix socket Redis with plain settings (others use redis-py)."""
        return "host" in connection_kwargs or "path" in connection_kwargs

    async def call(self, *args: Any) -> Any:
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connect()
        return await proto.request(args)

    async def _connect(self) -> _Protocol:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._proto is not None and not self._proto.closed:
                return self._proto
            loop = asyncio.get_running_loop()
            kw = self._kw
            if kw.get("path"):
                coro = loop.create_unix_connection(_Protocol, kw["path"])
            else:
                ctx = ssl.create_default_context() if kw.get("ssl") else None
                coro = loop.create_connection(_Protocol, kw.get("host", "127.0.0.1"),
                                              int(kw.get("port", 6379)), ssl=ctx)
            _, proto = await asyncio.wait_for(coro, self._connect_timeout)
            try:
                if kw.get("password"):
                    auth = [kw["username"]] if kw.get("username") else []
                    await asyncio.wait_for(proto.request(("AUTH", *auth, kw["password"])),
                                           self._connect_timeout)
                if int(kw.get("db") or 0):
                    await asyncio.wait_for(proto.request(("SELECT", int(kw["db"]))),
                                           self._connect_timeout)
            except BaseException:
                proto.abort(ConnectionError("Redis connection setup failed"))
                raise
            self._proto = proto
            self._arm_watchdog()
            return proto

    def _arm_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(max(0.05, self._timeout / 4), self._check)

    def _check(self) -> None:
        """Fail the connection when its oldest call waits longer than the timeout."""
        proto = self._proto
        if proto is None or proto.closed:
            self._watchdog = None
            return
        if proto.waiters:
            _, sent = proto.waiters[0]
            if asyncio.get_running_loop().time() - sent > self._timeout:
                proto.abort(TimeoutError(f"Redis did not answer within {self._timeout} s"))
                self._watchdog = None
                return
        self._arm_watchdog()

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.closed = True
            proto.transport.close()
            proto._fail_all(ConnectionError("script channel closed"))
            await asyncio.sleep(0)  # let the transport finish closing
