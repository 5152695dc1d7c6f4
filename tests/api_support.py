"""Shared by the tests/test_api_*.py modules of the HTTP sidecar: the plugins the app is
built with, its fixtures (``api``, ``store``, ``worker``; import them into a test module
so pytest finds them) and the request helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from app.api.app import create_app
from app.queue import TaskQueue
from app.settings import Settings
from plugins_bridge.contract import Plugin
from plugins_bridge.registry import PluginRegistry

V1 = "/api/v1"


# ------------------------------------------------------------------ plugins
class Calendar(Plugin):
    name = "calendar"
    groups = ("reference",)


class Prices(Plugin):
    name = "prices"
    groups = ("daily",)
    default_timeout_seconds = 600
    default_max_attempts = 1


class Adjust(Plugin):
    name = "adjust"
    dependencies = ("prices",)
    optional_dependencies = ("calendar", "not_installed")
    groups = ("daily",)


class Report(Plugin):
    name = "report"
    dependencies = ("adjust",)
    groups = ("reports",)


class LoopA(Plugin):
    name = "loop_a"
    dependencies = ("loop_b",)


class LoopB(Plugin):
    name = "loop_b"
    dependencies = ("loop_c",)


class LoopC(Plugin):
    name = "loop_c"
    dependencies = ("loop_a",)


class OptA(Plugin):  # wants opt_b first when both run; opt_b needs opt_a: a cycle then
    name = "opt_a"
    optional_dependencies = ("opt_b",)


class OptB(Plugin):
    name = "opt_b"
    dependencies = ("opt_a",)


def registry() -> PluginRegistry:
    return PluginRegistry([Calendar(), Prices(), Adjust(), Report(), LoopA(), LoopB(),
                           LoopC(), OptA(), OptB()])


KNOWN = "adjust, calendar, loop_a, loop_b, loop_c, opt_a, opt_b, prices, report"


# ------------------------------------------------------------------ helpers
@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings, registry=registry()))) as client:
        yield client


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with serve(settings) as client:
        yield client


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test's database (to see what the API wrote)."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    r.close()


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[TaskQueue]:
    """A TaskQueue on the same Redis, playing the worker (claim / complete / fail)."""
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    queue = TaskQueue(client, settings)
    yield queue
    await queue.aclose()
    await client.aclose()


def assert_error_shape(body: Any) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"code", "message"}, body
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]


async def body_of(resp: ClientResponse, status: int) -> Any:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    return json.loads(text)


async def ok(client: TestClient[Any, Any], method: str, path: str, status: int = 200,
             **kw: Any) -> Any:
    async with client.request(method, path, **kw) as resp:
        return await body_of(resp, status)


async def fails(client: TestClient[Any, Any], method: str, path: str, status: int,
                code: str, **kw: Any) -> str:
    """Expect an error response; returns its message."""
    async with client.request(method, path, **kw) as resp:
        body = await body_of(resp, status)
    assert_error_shape(body)
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


async def submit(client: TestClient[Any, Any], plugin: str = "prices", **fields: Any) -> Any:
    return await ok(client, "POST", f"{V1}/tasks", 202, json={"plugin_name": plugin, **fields})
