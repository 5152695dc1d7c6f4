"""A synchronous producer for code that is not asyncio: scripts, cron jobs, and the
existing synchronous web application that enqueued through the original ``TaskQueue``.

    from app.producer import Producer
    from app.models import TaskSpec

    with Producer.from_settings() as producer:
        task_id, created = producer.enqueue(TaskSpec.build("daily", trade_dates=["20240102"]))

It runs the same Lua transitions as :class:`app.queue.TaskQueue` over one blocking
connection (hiredis packs and parses), which is also the fastest way for one client to
submit tasks one at a time.  Mode A holds: a disabled or unreachable Redis raises
:class:`RedisUnavailable` within the connect timeout, and nothing is written.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ResponseError

from app.errors import ConfigError, RedisUnavailable, TaskNotFound
from app.failures import bound_message
from app.keys import Keys, fixed_keys
from app.logs import get_logger
from app.models import Task, TaskSpec
from app.queue import Clock, clock_args, enqueue_call, log_enqueued, new_id
from app.scripts import map_response_error, script_sha, script_source
from app.settings import Settings, load_settings


class _Connection:
    """One blocking connection; no command is ever sent twice."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace",
                                      replyError=ResponseError)

    def _connect(self) -> socket.socket:
        s = self._settings
        url = urlsplit(s.redis_url)
        try:
            if url.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(s.redis_connect_timeout)
                sock.connect(url.path)
            elif url.scheme == "redis":
                sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379),
                                                timeout=s.redis_connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                raise ConfigError("the synchronous producer supports redis:// and unix:// "
                                  "URLs; use app.queue.TaskQueue for rediss://")
            sock.settimeout(max(5.0, s.redis_connect_timeout))
        except OSError as exc:
            raise self._unavailable(exc) from None
        self._sock = sock
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace",
                                      replyError=ResponseError)
        try:
            if url.password:
                auth = [unquote(url.username)] if url.username else []
                self._roundtrip(("AUTH", *auth, unquote(url.password)))
            db = url.path.strip("/") if url.scheme == "redis" else ""
            if db and db != "0":
                self._roundtrip(("SELECT", int(db)))
        except ResponseError as exc:
            self.close()
            raise self._unavailable(exc) from None
        return sock

    def _unavailable(self, exc: BaseException) -> RedisUnavailable:
        return RedisUnavailable(
            f"Redis at {self._settings.redis_url_redacted} is unreachable: {exc}"
        )

    def _roundtrip(self, args: tuple[Any, ...]) -> Any:
        sock = self._sock
        assert sock is not None
        try:
            sock.sendall(hiredis.pack_command(args))
            while True:
                reply = self._reader.gets()
                if reply is not False:
                    break
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed by Redis")
                self._reader.feed(data)
        except OSError as exc:
            self.close()
            raise self._unavailable(exc) from None
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def call(self, *args: Any) -> Any:
        if self._sock is None:
            self._connect()
        return self._roundtrip(args)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Producer:
    """Submit, cancel and read tasks synchronously (the producer half of TaskQueue)."""

    def __init__(self, settings: Settings, *, clock: Clock = time.time) -> None:
        if not settings.redis_enabled:
            raise RedisUnavailable(
                "Redis is disabled (STOCKQ_REDIS_ENABLED or REDIS_ENABLED is false); "
                "stockq needs Redis to queue tasks"
            )
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.clock: Callable[[], float] = clock
        self._fixed = fixed_keys(self.keys)
        self._conn = _Connection(settings)
        self.log = get_logger("stockq.queue")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Producer:
        return cls(settings or load_settings())

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        argv = [*clock_args(self.keys, self.clock()), *args]
        allkeys = self._fixed + keys
        try:
            try:
                return self._conn.call("EVALSHA", script_sha(name), len(allkeys), *allkeys,
                                       *argv)
            except ResponseError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
            self._conn.call("SCRIPT", "LOAD", script_source(name))
            return self._conn.call("EVALSHA", script_sha(name), len(allkeys), *allkeys, *argv)
        except ResponseError as exc:
            mapped = map_response_error(exc)
            if mapped is not None:
                raise mapped from None
            raise RedisUnavailable(
                f"Redis at {self.settings.redis_url_redacted} refused the operation: {exc}"
            ) from None

    def enqueue(self, spec: TaskSpec, *, task_id: str | None = None) -> tuple[str, bool]:
        """As :meth:`app.queue.TaskQueue.enqueue`."""
        created, found = self._run("enqueue", *enqueue_call(self.keys, spec,
                                                            task_id or new_id()))
        log_enqueued(self.log, spec, str(found), bool(created))
        return str(found), bool(created)

    def cancel(self, task_id: str, reason: str = "cancelled by user") -> str:
        """As :meth:`app.queue.TaskQueue.cancel`."""
        outcome = str(self._run("cancel", [self.keys.task(task_id)],
                                [task_id, bound_message(reason),
                                 max(1, int(self.settings.retention_seconds))]))
        self.log.info("task.cancelled" if outcome == "cancelled" else "task.cancel_requested",
                      task_id=task_id, reason=reason)
        return outcome

    def get(self, task_id: str) -> Task:
        flat = self._conn.call("HGETALL", self.keys.task(task_id))
        if not flat:
            raise TaskNotFound(task_id)
        return Task.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
