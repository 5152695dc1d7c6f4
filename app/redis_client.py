"""Creating the Redis client, and Mode A: Redis is required, with no other path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.errors import RedisUnavailable, StockqError
from app.settings import Settings


def create_client(settings: Settings) -> aioredis.Redis:
    """An async client for ``settings.redis_url``; raises RedisUnavailable when disabled.

    The client fails fast: a short connect timeout and one quick reconnect attempt, so
    a submit against a dead Redis returns a clear error within a few seconds.
    """
    if not settings.redis_enabled:
        raise RedisUnavailable(
            "Redis is disabled (STOCKQ_REDIS_ENABLED or REDIS_ENABLED is false); "
            "stockq needs Redis to queue tasks"
        )
    return aioredis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=settings.redis_connect_timeout,
        socket_timeout=max(5.0, settings.redis_connect_timeout),
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def unavailable(settings: Settings, exc: BaseException) -> RedisUnavailable:
    return RedisUnavailable(f"Redis at {settings.redis_url_redacted} is unreachable: {exc}")


_REFUSALS = ("OOM", "READONLY", "MISCONF", "BUSY", "LOADING", "MASTERDOWN", "NOREPLICAS",
             "NOAUTH", "NOPERM", "CLUSTERDOWN", "TRYAGAIN")


@contextmanager
def redis_errors(settings: Settings) -> Iterator[None]:
    """Turn connection failures and refusals inside the block into RedisUnavailable
    (stockq's own script errors are mapped before they get here)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
        raise unavailable(settings, exc) from None
    except ResponseError as exc:
        # Without the password, Redis answers a long command (every script call: 11+
        # keys) with a protocol error instead of NOAUTH, then drops the connection.
        if str(exc).startswith(("NOAUTH", "Protocol error: unauthenticated")):
            raise unavailable(settings, exc) from None
        # READONLY replica, OOM, MISCONF, ...: Redis is there but cannot take the change
        # (also when a script's write is refused); anything else from a script is ours
        if "user_script" in str(exc) and not str(exc).startswith(_REFUSALS):
            raise StockqError(f"internal error in a stockq script: {exc}") from None
        raise RedisUnavailable(
            f"Redis at {settings.redis_url_redacted} refused the operation: {exc}"
        ) from None


async def ping(client: aioredis.Redis, settings: Settings) -> None:
    """Raise RedisUnavailable unless Redis answers."""
    with redis_errors(settings):
        await client.ping()  # type: ignore[misc]
