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

Waiting for a reply: a call's reply comes back from a local Redis ~50-100 µs after the
request is sent.  A thread that sleeps in ``recv`` for that long is woken by the kernel,
which on a small VM costs about as much again.  So the connection first polls the
socket without sleeping for up to ``STOCKQ_PRODUCER_SPIN_US`` (default 200 µs), then
sleeps as usual: one CPU is busy while a reply is on its way, and a loop of submits
runs ~1.5x faster (bench.bench_core shows both).  It never polls when the process may
run on one CPU only (Redis on the same machine would need that CPU), nor with 0; when
replies keep coming later than that (a remote Redis), it stops polling for a while.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ResponseError

from app.errors import ConfigError, RedisUnavailable, TaskNotFound
from app.failures import bound_message
from app.keys import Keys, fixed_keys
from app.logs import get_logger
from app.models import Task, TaskSpec
from app.queue import (
    Clock,
    clock_args,
    enqueue_call,
    enqueued_fields,
    log_enqueued,
    new_id,
)
from app.redaction import redactor_for
from app.scripts import map_response_error, script_sha, script_source
from app.settings import Settings, load_settings

_MAX_SPIN_US = 10_000  # a larger STOCKQ_PRODUCER_SPIN_US is read as this
_MISSES_TO_BACK_OFF = 8
_BACK_OFF_CALLS = 64


def _cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Connection:
    """One blocking connection; no command is ever sent twice."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace",
                                      replyError=ResponseError)
        self._timeout = max(5.0, settings.redis_connect_timeout)
        spin_us = min(settings.producer_spin_us, _MAX_SPIN_US)
        self._spin = spin_us / 1e6 if _cpus() > 1 else 0.0
        self._misses = 0  # polls in a row that ended without the reply
        self._spin_until = 0.0  # when polling for the pending reply stops
        self._skip = 0  # calls left that sleep at once (replies come too late to poll)

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
            self._set_io_timeout(sock)
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

    def _set_io_timeout(self, sock: socket.socket) -> None:
        """Blocking mode with kernel timeouts (SO_RCVTIMEO/SO_SNDTIMEO) rather than
        Python's socket timeout, which polls before every send and receive and would
        make a non-blocking receive (MSG_DONTWAIT) wait."""
        sec = int(self._timeout)
        timeval = struct.pack("ll", sec, int((self._timeout - sec) * 1e6))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        except (OSError, struct.error):  # not Linux-like: Python's timeout, no polling
            sock.settimeout(self._timeout)
            self._spin = 0.0
            return
        sock.settimeout(None)

    def _unavailable(self, exc: BaseException) -> RedisUnavailable:
        return RedisUnavailable(
            f"Redis at {self._settings.redis_url_redacted} is unreachable: {exc}"
        )

    def _roundtrip(self, args: tuple[Any, ...]) -> Any:
        self._send(args)
        return self.receive()

    def _send(self, args: tuple[Any, ...]) -> None:
        sock = self._sock
        assert sock is not None
        self._spin_until = 0.0
        if self._spin:
            if self._skip:
                self._skip -= 1
            else:
                self._spin_until = time.perf_counter() + self._spin
        try:
            sock.sendall(hiredis.pack_command(args))
        except BlockingIOError:  # SO_SNDTIMEO ran out
            self._fail(TimeoutError(f"could not send within {self._timeout:g} s"))
        except OSError as exc:
            self._fail(exc)

    def receive(self) -> Any:
        """The reply to the command sent last (after :meth:`send`)."""
        sock = self._sock
        assert sock is not None
        reader = self._reader
        spin_until = self._spin_until
        try:
            while True:
                reply = reader.gets()
                if reply is not False:
                    if spin_until:
                        self._misses = 0
                    break
                if spin_until:
                    try:
                        data = sock.recv(65536, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        if time.perf_counter() > spin_until:
                            spin_until = 0.0
                            self._missed()
                        continue
                else:
                    data = sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed by Redis")
                reader.feed(data)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            self._fail(TimeoutError(f"no reply within {self._timeout:g} s"))
        except OSError as exc:
            self._fail(exc)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _fail(self, exc: BaseException) -> NoReturn:
        self.close()
        raise self._unavailable(exc) from None

    def _missed(self) -> None:
        """A poll ran out before the reply came (a remote or busy Redis): after
        _MISSES_TO_BACK_OFF in a row, sleep at once for _BACK_OFF_CALLS calls."""
        self._misses += 1
        if self._misses >= _MISSES_TO_BACK_OFF:
            self._misses = 0
            self._skip = _BACK_OFF_CALLS

    def call(self, *args: Any) -> Any:
        if self._sock is None:
            self._connect()
        return self._roundtrip(args)

    def send(self, *args: Any) -> None:
        """Send one command; its reply is read by :meth:`receive`."""
        if self._sock is None:
            self._connect()
        self._send(args)

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
        self._pending: tuple[str, list[str], list[Any]] = ("", [], [])  # the call sent last

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
        self._send(name, keys, args)
        return self._receive()

    def _send(self, name: str, keys: list[str], args: list[Any]) -> None:
        argv = [*clock_args(self.keys, self.clock()), *args]
        allkeys = self._fixed + keys
        self._pending = (name, allkeys, argv)
        self._conn.send("EVALSHA", script_sha(name), len(allkeys), *allkeys, *argv)

    def _receive(self) -> Any:
        name, allkeys, argv = self._pending
        try:
            try:
                return self._conn.receive()
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
        tid = task_id or new_id()
        self._send("enqueue", *enqueue_call(self.keys, spec, tid))
        # While Redis runs the script, render the log line of the usual outcome (a new
        # task); it is written only if that is what happened.
        write = self.log.prepare("info", "task.enqueued", **enqueued_fields(spec, tid))
        created, found = self._receive()
        if not created:
            log_enqueued(self.log, spec, str(found), False)
        elif write is not None:  # (None: the info level is not logged)
            write()
        return str(found), bool(created)

    def cancel(self, task_id: str, reason: str = "cancelled by user") -> str:
        """As :meth:`app.queue.TaskQueue.cancel`."""
        outcome = str(self._run("cancel", [self.keys.task(task_id)],
                                [task_id, bound_message(redactor_for(self.settings)(reason)),
                                 max(1, int(self.settings.retention_seconds))]))
        self.log.info("task.cancelled" if outcome == "cancelled" else "task.cancel_requested",
                      task_id=task_id, reason=reason)
        return outcome

    def get(self, task_id: str) -> Task:
        flat = self._conn.call("HGETALL", self.keys.task(task_id))
        if not flat:
            raise TaskNotFound(task_id)
        return Task.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
