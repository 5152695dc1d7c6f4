"""``GET /api/v1/events``: live task events as Server-Sent Events (the dashboard's feed).

Where they come from.  The transition scripts publish one short message per status
change on the namespace's events channel (:attr:`app.keys.Keys.events`; lib.lua
``move_status``), one per progress write (``progress.lua``) and one per created
execution (``create_execution.lua``).  A ``PUBLISH`` stores nothing and costs Redis
under a microsecond when nobody listens (docs/benchmarks.md), so the hot path pays
almost nothing for a dashboard that is not open.  Messages::

    <status> <task id>                       pending, running, retrying, completed, ...
    progress <percent> <records> <task id>
    execution <execution id>                 an execution was created

The hub.  Each sidecar has one :class:`EventHub`: one Redis subscription, opened when
the first stream client arrives and closed :data:`LINGER_SECONDS` after the last one
left, feeding a ring of the latest :data:`RING_SIZE` events, each numbered.  Every
client follows the ring with a cursor of its own:

* **bounded per client**: a client holds only its cursor.  One that falls behind the
  ring (it reads slower than events come) skips ahead, with a ``resync`` event telling
  it to fetch what it shows again, instead of being buffered; a write the client does
  not take within :data:`WRITE_TIMEOUT` seconds drops it (``api.events_dropped``).  At
  most :data:`MAX_CLIENTS` streams per sidecar (503 ``too_many_streams`` beyond).
* **survives a Redis restart**: the subscription reconnects with backoff; meanwhile
  clients get ``redis`` ``{"status": "unavailable"}``, and once it is back ``redis``
  ``{"status": "ok"}`` and ``resync`` (what was published while the subscription was
  down is gone; re-reading the state covers it).
* **resume**: an event's SSE id is ``<hub>-<number>``; a client that reconnects with
  ``Last-Event-ID`` still in the ring continues after it (``hello`` says
  ``"resumed": true``); otherwise it starts at the newest event and should re-read
  the state (``resumed: false``).

Events sent (``data`` is JSON): ``hello`` ``{"redis", "resumed"}`` first (once the
subscription listens, so nothing published after it is missed), ``task`` ``{"task_id",
"status"}``, ``progress`` ``{"task_id", "progress", "records"}``, ``execution``
``{"execution_id"}``, ``resync`` ``{"reason"}``, ``redis`` ``{"status", "error"?}``,
and a comment line every :data:`KEEPALIVE_SECONDS` when nothing happens.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.errors import RedisUnavailable, StockqError
from app.keys import Keys
from app.logs import get_logger
from app.models import TaskStatus
from app.settings import Settings

log = get_logger("stockq.api")

RING_SIZE = 2000  # events kept for clients that are behind (and for resuming)
MAX_CLIENTS = 100  # streams per sidecar
WRITE_TIMEOUT = 10.0  # seconds a client has to take one write, else it is dropped
KEEPALIVE_SECONDS = 15.0  # a comment line when nothing happened for this long
LINGER_SECONDS = 60.0  # the subscription stays this long after the last client left
RETRY_MS = 2000  # what the client waits before reconnecting (the SSE retry field)
BACKOFF = (0.2, 5.0)  # first and longest wait between reconnections to Redis
SUBSCRIBE_WAIT = 5.0  # seconds a new client waits for the subscription before hello
STATUSES = frozenset(s.value for s in TaskStatus)


class TooManyStreams(StockqError):
    """The sidecar already serves MAX_CLIENTS event streams."""

    code = "too_many_streams"
    http_status = 503


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    name: str
    data: str  # JSON


def parse(message: str) -> tuple[str, dict[str, Any]] | None:
    """A message of the events channel as (event name, data); None when unknown."""
    kind, _, rest = message.partition(" ")
    if not rest:
        return None
    if kind in STATUSES:
        return "task", {"task_id": rest, "status": kind}
    if kind == "progress":
        parts = rest.split(" ", 2)
        if len(parts) != 3:
            return None
        try:
            percent, records = float(parts[0]), int(float(parts[1]))
        except ValueError:
            return None
        return "progress", {"task_id": parts[2], "progress": percent, "records": records}
    if kind == "execution":
        return "execution", {"execution_id": rest}
    return None


def frame(event: Event, hub_id: str) -> bytes:
    return f"id: {hub_id}-{event.seq}\nevent: {event.name}\ndata: {event.data}\n\n".encode()


def control(name: str, data: dict[str, Any]) -> bytes:
    """An event outside the ring (no id: a reconnect resumes from the last real one)."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class EventHub:
    """One subscription to the events channel, shared by this sidecar's streams."""

    def __init__(self, settings: Settings, *, ring_size: int = RING_SIZE,
                 linger: float = LINGER_SECONDS) -> None:
        self.settings = settings
        self.channel = Keys(settings.key_prefix).events
        self.hub_id = uuid.uuid4().hex[:8]
        self.ring: deque[Event] = deque(maxlen=ring_size)
        self.seq = 0
        self.clients = 0
        self.redis_status = "connecting"
        self.redis_error = ""
        self.linger = linger
        self.dropped = 0
        self._wake = asyncio.Event()
        self._listening = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ the ring
    def push(self, name: str, data: dict[str, Any]) -> None:
        self.seq += 1
        self.ring.append(Event(self.seq, name, json.dumps(data, ensure_ascii=False)))
        self._notify()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    def since(self, cursor: int) -> tuple[list[Event], bool]:
        """The events after ``cursor`` and whether some were lost (the ring moved past
        them): then the list starts at the oldest event kept."""
        if not self.ring or cursor >= self.seq:
            return [], False
        oldest = self.ring[0].seq
        if cursor < oldest - 1:
            return list(self.ring), True
        return list(self.ring)[cursor - oldest + 1:], False

    def resume_point(self, last_event_id: str | None) -> int | None:
        """The cursor after ``Last-Event-ID`` when that event is still in the ring (or
        is the newest), else None."""
        if not last_event_id:
            return None
        hub, _, number = last_event_id.strip().partition("-")
        if hub != self.hub_id or not number.isdigit():
            return None
        seq = int(number)
        oldest = self.ring[0].seq if self.ring else self.seq + 1
        return seq if oldest - 1 <= seq <= self.seq else None

    # ------------------------------------------------------------ clients
    @contextmanager
    def client(self) -> Iterator[None]:
        if self.clients >= MAX_CLIENTS:
            raise TooManyStreams(f"this sidecar already serves {MAX_CLIENTS} event streams")
        self.clients += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._task is None and not self._closing:
            self._listening.clear()
            self._task = asyncio.get_running_loop().create_task(self._listen())
        try:
            yield
        finally:
            self.clients -= 1
            if self.clients == 0 and self._task is not None and not self._closing:
                self._idle = asyncio.get_running_loop().call_later(self.linger, self._stop)

    async def wait_listening(self, timeout: float = SUBSCRIBE_WAIT) -> None:
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._listening.wait()

    def wake(self) -> asyncio.Event:
        return self._wake

    @property
    def closing(self) -> bool:
        return self._closing

    def _stop(self) -> None:
        """Unsubscribe (nobody listens any more).  Events published from now on are
        missed, so the hub takes a new id: an old Last-Event-ID cannot resume."""
        self._idle = None
        if self.clients == 0 and self._task is not None:
            self._task.cancel()
            self._task = None
            self.redis_status = "connecting"
            self.hub_id = uuid.uuid4().hex[:8]
            self.ring.clear()

    async def close(self) -> None:
        """End every stream (sidecar shutdown) and the subscription."""
        self._closing = True
        self._notify()
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ------------------------------------------------------------ the subscription
    def _set_redis(self, status: str, error: str = "") -> None:
        if status == self.redis_status:
            return
        was = self.redis_status
        self.redis_status, self.redis_error = status, error
        self.push("redis", {"status": status, **({"error": error} if error else {})})
        if status == "ok" and was == "unavailable":
            self.push("resync", {"reason": "the event feed reconnected to Redis; events "
                                           "published while it was away are not replayed"})

    async def _listen(self) -> None:
        delay = BACKOFF[0]
        while True:
            client = aioredis.Redis.from_url(
                self.settings.redis_url, decode_responses=True,
                socket_connect_timeout=self.settings.redis_connect_timeout,
                health_check_interval=KEEPALIVE_SECONDS,
                retry=Retry(NoBackoff(), 0))  # a lost connection must show: no quiet retry
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._set_redis("ok")
                self._listening.set()
                log.info("api.events_subscribed", channel=self.channel)
                delay = BACKOFF[0]
                while True:
                    message = await pubsub.get_message(timeout=KEEPALIVE_SECONDS)
                    if message is not None and message.get("type") == "message":
                        parsed = parse(str(message["data"]))
                        if parsed is not None:
                            self.push(*parsed)
            except (RedisError, OSError) as exc:
                error = RedisUnavailable(
                    f"Redis at {self.settings.redis_url_redacted} is unreachable: "
                    f"{type(exc).__name__}").message
                if self.redis_status != "unavailable":
                    log.warning("api.events_redis_lost", error=error, retry_in=delay)
                self._set_redis("unavailable", error)
                self._listening.set()  # waiting clients get hello with the bad news
            finally:
                with suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF[1])


EVENT_HUB = web.AppKey("event_hub", EventHub)


async def _send(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT):
        await response.write(data)


async def event_stream(request: web.Request) -> web.StreamResponse:
    """The handler of ``GET /api/v1/events``."""
    hub = request.app[EVENT_HUB]
    if not hub.settings.redis_enabled:
        raise RedisUnavailable("Redis is disabled (STOCKQ_REDIS_ENABLED or REDIS_ENABLED is "
                               "false); there are no events")
    with hub.client():
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await hub.wait_listening()
        cursor = hub.resume_point(request.headers.get("Last-Event-ID"))
        resumed = cursor is not None
        if cursor is None:
            cursor = hub.seq
        try:
            await _send(response, f"retry: {RETRY_MS}\n".encode() + control(
                "hello", {"redis": hub.redis_status, "resumed": resumed}))
            await _follow(hub, response, cursor)
        except TimeoutError:
            hub.dropped += 1
            log.warning("api.events_dropped", reason=f"a write waited {WRITE_TIMEOUT:g} s",
                        remote=request.remote)
        except ConnectionError:
            pass  # the client went away
    return response


async def _follow(hub: EventHub, response: web.StreamResponse, cursor: int) -> None:
    while not hub.closing:
        wake = hub.wake()
        events, lost = hub.since(cursor)
        if events:
            head = control("resync", {"reason": "this stream fell behind; events were "
                                                "skipped"}) if lost else b""
            cursor = events[-1].seq
            await _send(response, head + b"".join(frame(e, hub.hub_id) for e in events))
            continue
        try:
            async with asyncio.timeout(KEEPALIVE_SECONDS):
                await wake.wait()
        except TimeoutError:
            await _send(response, b": keep-alive\n\n")
