from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import structlog

import app.logs
from app.environment import PROXY_ENVIRONMENT
from app.logs import configure_logging
from app.queue import TaskQueue
from app.settings import Settings
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = "plugins_bridge.examples:EXAMPLES"


class FakeClock:
    """A clock the tests step by hand (epoch seconds)."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00Z
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own (to stop and start)."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    # a clean database per test, on the suite's own server
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, plugins=(EXAMPLES,), builtin_plugins=False,
                    retry_base_seconds=10,
                    retry_max_seconds=300, lease_seconds=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield c
    await c.aclose()


@pytest.fixture
async def queue(client: aioredis.Redis, settings: Settings, clock: FakeClock
                ) -> AsyncIterator[TaskQueue]:
    q = TaskQueue(client, settings, clock=clock, rng=lambda: 0.0)
    yield q
    await q.aclose()


@pytest.fixture
def cli_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKQ_")}
    env.update(STOCKQ_REDIS_URL=redis_url, STOCKQ_PLUGINS=EXAMPLES, STOCKQ_LOG_FORMAT="json",
               STOCKQ_BUILTIN_PLUGINS="false",
               STOCKQ_DATA_DIR=tempfile.mkdtemp(prefix="stockq-test-"),
               PYTHONPATH=str(ROOT))
    return env


@pytest.fixture
def stockq_cmd() -> list[str]:
    return [sys.executable, "-m", "app.cli"]


@pytest.fixture
def no_ambient_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable from the machine's environment reaches the test."""
    for name in (*PROXY_ENVIRONMENT, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def json_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """structlog configured as in production (JSON lines) into a buffer; the previous
    configuration is restored afterwards."""
    saved, was = structlog.get_config(), app.logs._configured
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging(Settings(log_format="json"), force=True)
    yield buffer
    structlog.configure(**saved)
    app.logs._configured = was
