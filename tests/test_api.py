"""The HTTP sidecar on a real Redis: every /api/v1 route and every error it promises,
auth, CORS, the access log, Redis disabled / stopped / back, /openapi.json, and a
bounded fuzz of the request bodies and query strings (never a 5xx for bad input).

/health and /metrics are not tested here (they have their own tests)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import structlog
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from openapi_spec_validator import validate

import app.logs
from app.api.app import create_app
from app.api.routes import ROUTES
from app.logs import configure_logging
from app.models import TaskStatus
from app.queue import TaskQueue
from app.settings import Settings
from plugins_bridge.contract import Plugin
from plugins_bridge.registry import PluginRegistry
from tests.redis_server import RedisServer

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


# ------------------------------------------------------------------ tasks
async def test_submit_get_and_duplicate(api: TestClient[Any, Any]) -> None:
    task = await submit(api, trade_dates=["2024-01-03", "20240102"], priority="high",
                        params={"symbol": "000001.SZ"}, user_id="u1")
    assert task["created"] is True and task["status"] == "pending"
    assert re.fullmatch(r"[0-9a-f-]{36}", task["task_id"])
    assert task["plugin_name"] == "prices" and task["trigger"] == "api"
    assert task["trade_dates"] == ["20240102", "20240103"]
    assert task["priority"] == 0 and task["priority_name"] == "high"
    assert task["timeout_seconds"] == 600 and task["max_attempts"] == 1  # plugin defaults
    assert "lease_token" not in task

    again = await submit(api, trade_dates=["20240102", "2024-01-03"], priority="high",
                         params={"symbol": "000001.SZ"}, user_id="u1")
    assert again["created"] is False and again["task_id"] == task["task_id"]

    got = await ok(api, "GET", f"{V1}/tasks/{task['task_id']}")
    assert got["task_id"] == task["task_id"] and got["status"] == "pending"
    assert got["params"] == {"symbol": "000001.SZ"} and "created" not in got

    explicit = await submit(api, "adjust", start_date="2024-01-01", end_date="20240131",
                            task_type="full", priority=2, timeout_seconds=60, max_attempts=5)
    assert explicit["created"] is True
    assert (explicit["start_date"], explicit["end_date"]) == ("20240101", "20240131")
    assert explicit["task_type"] == "full" and explicit["priority_name"] == "low"
    assert (explicit["timeout_seconds"], explicit["max_attempts"]) == (60, 5)


BAD_TASKS: list[tuple[Any, str, str]] = [
    ({"plugin_name": "nope"}, "unknown_plugin", f"known plugins: {KNOWN}"),
    ({}, "invalid_input", "plugin_name is required"),
    ({"plugin_name": 5}, "invalid_input", "plugin_name must be string"),
    ({"plugin_name": "   "}, "invalid_input", "plugin_name"),
    ({"plugin_name": "prices", "colour": "red"}, "invalid_input", "unknown field(s): colour"),
    ({"plugin_name": "prices", "trade_dates": ["20240230"]}, "invalid_input", "real date"),
    ({"plugin_name": "prices", "trade_dates": ["2023-02-29"]}, "invalid_input", "real date"),
    ({"plugin_name": "prices", "trade_dates": ["2024-13-01"]}, "invalid_input", "real date"),
    ({"plugin_name": "prices", "trade_dates": ["2024/01/02"]}, "invalid_input", "real date"),
    ({"plugin_name": "prices", "trade_dates": ["202401021"]}, "invalid_input", "real date"),
    ({"plugin_name": "prices", "trade_dates": []}, "invalid_input", "must not be empty"),
    ({"plugin_name": "prices", "trade_dates": ["20240102"] * 10_001}, "invalid_input",
     "more than 10000"),
    ({"plugin_name": "prices", "trade_dates": [20240102]}, "invalid_input", "list of string"),
    ({"plugin_name": "prices", "trade_dates": "20240102"}, "invalid_input", "must be array"),
    ({"plugin_name": "prices", "start_date": "2024-02-30"}, "invalid_input", "start_date"),
    ({"plugin_name": "prices", "end_date": "yesterday"}, "invalid_input", "end_date"),
    ({"plugin_name": "prices", "start_date": "20240201", "end_date": "20240101"},
     "invalid_input", "after end_date"),
    ({"plugin_name": "prices", "start_date": 20240101}, "invalid_input", "must be string"),
    ({"plugin_name": "prices", "priority": "urgent"}, "invalid_input", "priority"),
    ({"plugin_name": "prices", "priority": 3}, "invalid_input", "at most 2"),
    ({"plugin_name": "prices", "priority": -1}, "invalid_input", "at least 0"),
    ({"plugin_name": "prices", "priority": True}, "invalid_input", "priority"),
    ({"plugin_name": "prices", "priority": 1.0}, "invalid_input", "priority"),
    ({"plugin_name": "prices", "timeout_seconds": 0}, "invalid_input", "at least 1"),
    ({"plugin_name": "prices", "timeout_seconds": 7 * 24 * 3600 + 1}, "invalid_input",
     "at most"),
    ({"plugin_name": "prices", "timeout_seconds": "60"}, "invalid_input", "integer"),
    ({"plugin_name": "prices", "timeout_seconds": 10**40}, "invalid_input", "at most"),
    ({"plugin_name": "prices", "max_attempts": 0}, "invalid_input", "at least 1"),
    ({"plugin_name": "prices", "max_attempts": 21}, "invalid_input", "at most 20"),
    ({"plugin_name": "prices", "max_attempts": None}, "invalid_input", "max_attempts"),
    ({"plugin_name": "prices", "task_type": "weekly"}, "invalid_input", "task_type"),
    ({"plugin_name": "prices", "params": [1]}, "invalid_input", "params must be object"),
    ({"plugin_name": "prices", "user_id": "u" * 201}, "invalid_input", "user_id"),
    ([], "invalid_input", "JSON object"),
    ("prices", "invalid_input", "JSON object"),
    (None, "invalid_input", "JSON object"),
    (7, "invalid_input", "JSON object"),
]


@pytest.mark.parametrize(("body", "code", "fragment"), BAD_TASKS,
                         ids=[f"bad{i}" for i in range(len(BAD_TASKS))])
async def test_submit_rejects_bad_input(api: TestClient[Any, Any], store: redis.Redis,
                                        body: Any, code: str, fragment: str) -> None:
    message = await fails(api, "POST", f"{V1}/tasks", 400, code, json=body)
    assert fragment in message
    assert store.dbsize() == 0  # nothing created


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"", "empty"),
    (b"not json", "not valid JSON"),
    (b'{"plugin_name": "prices"', "not valid JSON"),
    (b"\xff\xfe{\x00", "not valid JSON"),
    (b'{"plugin_name": "prices", "params": {"x": NaN}}', "not valid JSON"),
    (b'{"plugin_name": "prices", "params": {"x": -Infinity}}', "not valid JSON"),
    (b'{"plugin_name": "prices", "params": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
     "request body"),
    (b'{"plugin_name": "prices", "params": {"x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}}",
     "request body"),
    (b'{"plugin_name": "prices", "params": {"x": ' + b"[" * 900 + b"]" * 900 + b"}}",
     "request body"),
    (b'{"plugin_name": "prices", "user_id": "\\ud800"}', "request body"),
    (b'{"plugin_name": "prices", "params": {"\\udfff": 1}}', "request body"),
], ids=["empty", "text", "truncated", "binary", "nan", "infinity", "deep", "deep5000",
        "deep900", "surrogate", "surrogate-key"])
async def test_submit_rejects_non_json(api: TestClient[Any, Any], store: redis.Redis,
                                       raw: bytes, fragment: str) -> None:
    message = await fails(api, "POST", f"{V1}/tasks", 400, "invalid_input", data=raw,
                          headers={"Content-Type": "application/json"})
    assert fragment in message
    assert store.dbsize() == 0
    await submit(api)  # and the app (and its Redis connections) still work


async def test_nesting_limit(api: TestClient[Any, Any], store: redis.Redis) -> None:
    def nested(levels: int) -> Any:
        value: Any = []
        for _ in range(levels - 1):
            value = [value]
        return value

    # the body is level 1, params level 2: 62 lists inside reach the limit of 64
    deepest = nested(62)
    deepest_leaf: Any = ["leaf", 1, None]  # scalars inside level 64
    for _ in range(61):
        deepest_leaf = [deepest_leaf]
    for params in ({"x": deepest}, {"x": deepest_leaf}):
        task = await submit(api, params=params)
        got = await ok(api, "GET", f"{V1}/tasks/{task['task_id']}")
        assert got["params"] == params
    before = store.dbsize()
    message = await fails(api, "POST", f"{V1}/tasks", 400, "invalid_input",
                          json={"plugin_name": "prices", "params": {"x": nested(63)}})
    assert "more than 64 levels" in message
    await fails(api, "POST", f"{V1}/executions", 400, "invalid_input",
                json={"plugins": ["prices"], "params": {"x": nested(63)}})
    assert store.dbsize() == before


async def test_body_size_limit(settings: Settings, store: redis.Redis) -> None:
    assert Settings().api_max_body == 1024 * 1024
    padded = {"plugin_name": "prices", "params": {"pad": "x" * 1500}}
    async with serve(Settings(redis_url=settings.redis_url, api_max_body=2048)) as client:
        message = await fails(client, "POST", f"{V1}/tasks", 413, "body_too_large",
                              json={**padded, "params": {"pad": "x" * 3000}})
        assert "2048 bytes" in message
        message = await fails(client, "POST", f"{V1}/executions", 413, "body_too_large",
                              json={"plugins": ["prices"], "params": {"pad": "x" * 3000}})
        assert store.dbsize() == 0
        assert (await submit(client, params=padded["params"]))["created"] is True
    def stream(body: Any) -> io.BytesIO:  # large bodies: aiohttp wants a file object
        return io.BytesIO(json.dumps(body).encode())

    async with serve(settings) as client:  # the default: 1 MiB
        await fails(client, "POST", f"{V1}/tasks", 413, "body_too_large", data=stream(
            {"plugin_name": "prices", "params": {"pad": "x" * (1024 * 1024)}}))
        big = await ok(client, "POST", f"{V1}/tasks", 202, data=stream(
            {"plugin_name": "prices", "params": {"pad": "y" * (1024 * 1024 - 1000)}}))
        assert big["created"] is True


async def test_get_unknown_task_and_unknown_routes(api: TestClient[Any, Any]) -> None:
    message = await fails(api, "GET", f"{V1}/tasks/nope", 404, "task_not_found")
    assert "'nope'" in message
    await fails(api, "GET", f"{V1}/nothing-here", 404, "not_found")
    await fails(api, "DELETE", f"{V1}/tasks/nope", 405, "method_not_allowed")
    await fails(api, "PUT", f"{V1}/tasks", 405, "method_not_allowed")


async def test_cancel_and_retry_task(api: TestClient[Any, Any], worker: TaskQueue) -> None:
    pending = await submit(api, params={"n": 1})
    tid = pending["task_id"]
    out = await ok(api, "POST", f"{V1}/tasks/{tid}/cancel")
    assert out["task_id"] == tid and out["outcome"] == "cancelled"
    assert out["task"]["status"] == "cancelled"
    assert "already cancelled" in await fails(api, "POST", f"{V1}/tasks/{tid}/cancel", 409,
                                              "illegal_transition")

    retried = await ok(api, "POST", f"{V1}/tasks/{tid}/retry", 202)
    assert retried["task_id"] != tid and retried["retry_of"] == tid
    assert retried["status"] == "pending" and retried["params"] == {"n": 1}
    assert (await ok(api, "GET", f"{V1}/tasks/{tid}"))["retried_by"] == retried["task_id"]
    assert "already retried" in await fails(api, "POST", f"{V1}/tasks/{tid}/retry", 409,
                                            "illegal_transition")
    assert "only failed or cancelled" in await fails(
        api, "POST", f"{V1}/tasks/{retried['task_id']}/retry", 409, "illegal_transition")

    running = await worker.claim("w1")
    assert running is not None and running.task_id == retried["task_id"]
    out = await ok(api, "POST", f"{V1}/tasks/{running.task_id}/cancel")
    assert out["outcome"] == "cancel_requested" and out["task"]["status"] == "running"

    done_id = (await submit(api, params={"n": 2}))["task_id"]
    claimed = await worker.claim("w1")
    assert claimed is not None and claimed.task_id == done_id
    await worker.complete(claimed, records=3)
    assert "already completed" in await fails(api, "POST", f"{V1}/tasks/{done_id}/cancel",
                                              409, "illegal_transition")
    await fails(api, "POST", f"{V1}/tasks/{done_id}/retry", 409, "illegal_transition")

    await fails(api, "POST", f"{V1}/tasks/nope/cancel", 404, "not_found")
    await fails(api, "POST", f"{V1}/tasks/nope/retry", 404, "not_found")


async def test_retry_failed_task(api: TestClient[Any, Any], worker: TaskQueue) -> None:
    tid = (await submit(api))["task_id"]
    claimed = await worker.claim("w1")
    assert claimed is not None and claimed.task_id == tid
    outcome = await worker.fail(claimed, "DataError", "bad rows", retryable=False)
    assert outcome.status == TaskStatus.FAILED
    failed = await ok(api, "GET", f"{V1}/tasks/{tid}")
    assert failed["status"] == "failed" and failed["error_message"] == "bad rows"
    new = await ok(api, "POST", f"{V1}/tasks/{tid}/retry", 202)
    assert new["retry_of"] == tid and new["status"] == "pending" and new["trigger"] == "retry"


# ------------------------------------------------------------------ listing
async def test_list_paging_and_filters(api: TestClient[Any, Any], worker: TaskQueue) -> None:
    ids = []
    for n in range(7):
        ids.append((await submit(api, params={"n": n}))["task_id"])
        await asyncio.sleep(0.002)  # distinct creation times: a stable newest-first order
    other = (await submit(api, "calendar"))["task_id"]
    newest_first = [other, *reversed(ids)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await ok(api, "GET", f"{V1}/tasks", params=query)
        seen += [t["task_id"] for t in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
        assert len(page["items"]) == 3
    assert seen == newest_first and pages in (3, 4)

    page = await ok(api, "GET", f"{V1}/tasks", params={"plugin": "calendar"})
    assert [t["task_id"] for t in page["items"]] == [other] and page["next_cursor"] is None
    claimed = await worker.claim("w")
    assert claimed is not None
    page = await ok(api, "GET", f"{V1}/tasks", params={"status": "running"})
    assert [t["task_id"] for t in page["items"]] == [claimed.task_id]
    page = await ok(api, "GET", f"{V1}/tasks",
                    params={"status": "pending", "plugin": "prices", "limit": "50"})
    assert len(page["items"]) == 6 and all(t["plugin_name"] == "prices" for t in page["items"])
    page = await ok(api, "GET", f"{V1}/tasks", params={"plugin": "unknown_plugin"})
    assert page == {"items": [], "next_cursor": None}

    ex = await ok(api, "POST", f"{V1}/executions", 202,
                  json={"plugins": ["report"], "include_optional": True})
    seen, cursor = [], None
    while True:
        query = {"execution_id": ex["execution_id"], "limit": "2",
                 **({"cursor": cursor} if cursor else {})}
        page = await ok(api, "GET", f"{V1}/tasks", params=query)
        seen += [t["task_id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ex["task_ids"]
    page = await ok(api, "GET", f"{V1}/tasks",
                    params={"execution_id": ex["execution_id"], "plugin": "adjust"})
    assert [t["plugin_name"] for t in page["items"]] == ["adjust"]


@pytest.mark.parametrize(("query", "status", "code"), [
    ({"status": "bogus"}, 400, "invalid_input"),
    ({"limit": "0"}, 400, "invalid_input"),
    ({"limit": "501"}, 400, "invalid_input"),
    ({"limit": "-1"}, 400, "invalid_input"),
    ({"limit": "abc"}, 400, "invalid_input"),
    ({"limit": "1.5"}, 400, "invalid_input"),
    ({"limit": "\u00b2"}, 400, "invalid_input"),
    ({"limit": "9" * 50}, 400, "invalid_input"),
    ({"cursor": "nan:x"}, 400, "invalid_input"),
    ({"cursor": "inf:x"}, 400, "invalid_input"),
    ({"cursor": "abc"}, 400, "invalid_input"),
    ({"execution_id": "nope"}, 404, "execution_not_found"),
], ids=lambda v: str(v))
async def test_list_rejects_bad_query(api: TestClient[Any, Any], query: dict[str, str],
                                      status: int, code: str) -> None:
    await fails(api, "GET", f"{V1}/tasks", status, code, params=query)


@pytest.mark.parametrize("cursor", ["-1", "abc", "1.5", "9" * 30, "\u00b2"])
async def test_list_execution_rejects_bad_cursor(api: TestClient[Any, Any],
                                                 cursor: str) -> None:
    ex = await ok(api, "POST", f"{V1}/executions", 202, json={"plugins": ["prices"]})
    await fails(api, "GET", f"{V1}/tasks", 400, "invalid_input",
                params={"execution_id": ex["execution_id"], "cursor": cursor})


# ------------------------------------------------------------------ executions
async def test_execution_dependency_order(api: TestClient[Any, Any]) -> None:
    ex = await ok(api, "POST", f"{V1}/executions", 202,
                  json={"plugins": ["report"], "trade_dates": ["2024-01-02"],
                        "task_type": "backfill", "priority": "low"})
    assert ex["plugins"] == ["prices", "adjust", "report"]
    assert len(ex["task_ids"]) == 3 and len(set(ex["task_ids"])) == 3
    by_plugin = {}
    for tid, plugin in zip(ex["task_ids"], ex["plugins"], strict=True):
        task = await ok(api, "GET", f"{V1}/tasks/{tid}")
        assert task["plugin_name"] == plugin and task["execution_id"] == ex["execution_id"]
        assert task["trade_dates"] == ["20240102"] and task["task_type"] == "backfill"
        assert task["priority_name"] == "low" and task["trigger"] == "api"
        by_plugin[plugin] = task
    assert by_plugin["prices"]["depends_on"] == []
    assert by_plugin["adjust"]["depends_on"] == [by_plugin["prices"]["task_id"]]
    assert by_plugin["report"]["depends_on"] == [by_plugin["adjust"]["task_id"]]
    assert by_plugin["prices"]["status"] == "pending"

    opt = await ok(api, "POST", f"{V1}/executions", 202,
                   json={"plugins": ["report"], "include_optional": True})
    assert opt["plugins"] == ["prices", "calendar", "adjust", "report"]  # not_installed: skipped
    adjust = await ok(api, "GET", f"{V1}/tasks/{opt['task_ids'][2]}")
    assert sorted(adjust["depends_on"]) == sorted(opt["task_ids"][:2])

    group = await ok(api, "POST", f"{V1}/executions", 202,
                     json={"group": "daily", "start_date": "20240101", "end_date": "20240105"})
    assert group["plugins"] == ["prices", "adjust"]
    got = await ok(api, "GET", f"{V1}/executions/{group['execution_id']}")
    assert got["execution_id"] == group["execution_id"] and got["group_name"] == "daily"
    assert got["task_ids"] == group["task_ids"] and got["total"] == 2
    assert [t["plugin_name"] for t in got["tasks"]] == ["prices", "adjust"]
    assert got["errors"] == [] and got["status"] in ("pending", "running")
    assert got["trigger_type"] == "api"

    both = await ok(api, "POST", f"{V1}/executions", 202,
                    json={"plugins": ["adjust", "prices", "adjust"]})
    assert both["plugins"] == ["prices", "adjust"] and len(both["task_ids"]) == 2

    # an optional dependency asked for anyway orders the batch (and the list) too
    asked = await ok(api, "POST", f"{V1}/executions", 202,
                     json={"plugins": ["report", "calendar"]})
    assert asked["plugins"] == ["prices", "calendar", "adjust", "report"]
    ids = dict(zip(asked["plugins"], asked["task_ids"], strict=True))
    adjust = await ok(api, "GET", f"{V1}/tasks/{ids['adjust']}")
    assert sorted(adjust["depends_on"]) == sorted([ids["prices"], ids["calendar"]])
    alone = await ok(api, "POST", f"{V1}/executions", 202, json={"plugins": ["opt_a"]})
    assert alone["plugins"] == ["opt_a"]  # opt_b is optional: not pulled in


BAD_EXECUTIONS: list[tuple[Any, str, str]] = [
    ({"plugins": ["loop_a"]}, "dependency_cycle",
     "dependency cycle: loop_a -> loop_b -> loop_c -> loop_a"),
    ({"plugins": ["prices", "loop_c"]}, "dependency_cycle",
     "loop_c -> loop_a -> loop_b -> loop_c"),
    ({"plugins": ["opt_b"]}, "dependency_cycle", "opt_a -> opt_b -> opt_a"),
    ({"plugins": ["opt_a"], "include_optional": True}, "dependency_cycle",
     "opt_a -> opt_b -> opt_a"),
    ({"group": "weekly"}, "invalid_input", "known groups: daily, reference, reports"),
    ({"plugins": ["prices"], "group": "daily"}, "invalid_input", "exactly one"),
    ({}, "invalid_input", "exactly one"),
    ({"task_type": "full"}, "invalid_input", "exactly one"),
    ({"plugins": []}, "invalid_input", "must not be empty"),
    ({"plugins": ["prices", "nope"]}, "unknown_plugin", f"known plugins: {KNOWN}"),
    ({"plugins": "prices"}, "invalid_input", "plugins must be array"),
    ({"plugins": [1]}, "invalid_input", "list of strings"),
    ({"group": ["daily"]}, "invalid_input", "group must be string"),
    ({"plugins": ["prices"], "include_optional": "yes"}, "invalid_input", "boolean"),
    ({"plugins": ["prices"], "trade_dates": ["20240231"]}, "invalid_input", "real date"),
    ({"plugins": ["prices"], "trade_dates": []}, "invalid_input", "must not be empty"),
    ({"plugins": ["prices"], "priority": 9}, "invalid_input", "at most 2"),
    ({"plugins": ["prices"], "timeout_seconds": -5}, "invalid_input", "at least 1"),
    ({"plugins": ["prices"], "max_attempts": 100}, "invalid_input", "at most 20"),
    ({"plugins": ["prices"], "plugin_name": "prices"}, "invalid_input", "unknown field"),
    (["prices"], "invalid_input", "JSON object"),
]


@pytest.mark.parametrize(("body", "code", "fragment"), BAD_EXECUTIONS,
                         ids=[f"bad{i}" for i in range(len(BAD_EXECUTIONS))])
async def test_execution_rejects_bad_input(api: TestClient[Any, Any], store: redis.Redis,
                                           body: Any, code: str, fragment: str) -> None:
    message = await fails(api, "POST", f"{V1}/executions", 400, code, json=body)
    assert fragment in message
    assert store.dbsize() == 0


async def test_execution_non_json(api: TestClient[Any, Any]) -> None:
    await fails(api, "POST", f"{V1}/executions", 400, "invalid_input", data=b"{plugins}")
    await fails(api, "POST", f"{V1}/executions", 400, "invalid_input", data=b"")


async def test_execution_failure_summary_retry_cancel(api: TestClient[Any, Any],
                                                      worker: TaskQueue) -> None:
    ex = await ok(api, "POST", f"{V1}/executions", 202,
                  json={"plugins": ["report"], "trade_dates": ["20240102"]})
    eid = ex["execution_id"]
    prices_id, adjust_id, report_id = ex["task_ids"]
    assert "no failed tasks" in await fails(api, "POST", f"{V1}/executions/{eid}/retry", 409,
                                            "illegal_transition")

    claimed = await worker.claim("w1")
    assert claimed is not None and claimed.task_id == prices_id
    await worker.fail(claimed, "DataError", "TuShare returned no rows", retryable=False)

    got = await ok(api, "GET", f"{V1}/executions/{eid}")
    assert got["status"] == "failed" and got["task_ids"] == ex["task_ids"]
    assert {t["task_id"]: t["status"] for t in got["tasks"]} == {
        prices_id: "failed", adjust_id: "cancelled", report_id: "cancelled"}
    errors = {e["task_id"]: e for e in got["errors"]}
    assert set(errors) == {prices_id, adjust_id, report_id}
    assert errors[prices_id] == {
        "task_id": prices_id, "plugin_name": "prices", "status": "failed",
        "last_error_type": "DataError", "error_message": "TuShare returned no rows",
        "retried_by": ""}
    assert errors[adjust_id]["last_error_type"] == "upstream_failed"
    assert errors[report_id]["status"] == "cancelled"

    retried = await ok(api, "POST", f"{V1}/executions/{eid}/retry", 202)
    assert retried["execution_id"] == eid and len(retried["task_ids"]) == 3
    new_prices, new_adjust, new_report = retried["task_ids"]
    assert (await ok(api, "GET", f"{V1}/tasks/{new_prices}"))["retry_of"] == prices_id
    assert (await ok(api, "GET", f"{V1}/tasks/{new_report}"))["depends_on"] == [new_adjust]
    got = await ok(api, "GET", f"{V1}/executions/{eid}")
    assert got["status"] == "running" and got["task_ids"] == ex["task_ids"] + retried["task_ids"]
    assert {e["retried_by"] for e in got["errors"]} == set(retried["task_ids"])
    await fails(api, "POST", f"{V1}/executions/{eid}/retry", 409, "illegal_transition")

    cancelled = await ok(api, "POST", f"{V1}/executions/{eid}/cancel")
    assert cancelled["execution_id"] == eid and cancelled["cancel_requested"] == 0
    assert cancelled["cancelled"] >= 1
    assert cancelled["cancelled"] + cancelled["already_ended"] == 6
    for tid in retried["task_ids"]:
        assert (await ok(api, "GET", f"{V1}/tasks/{tid}"))["status"] == "cancelled"
    assert "no active task" in await fails(api, "POST", f"{V1}/executions/{eid}/cancel",
                                           409, "illegal_transition")
    got = await ok(api, "GET", f"{V1}/executions/{eid}")
    assert got["status"] == "cancelled"


async def test_cancel_execution_with_running_task(api: TestClient[Any, Any],
                                                  worker: TaskQueue) -> None:
    ex = await ok(api, "POST", f"{V1}/executions", 202, json={"group": "daily"})
    claimed = await worker.claim("w1")
    assert claimed is not None and claimed.task_id == ex["task_ids"][0]
    out = await ok(api, "POST", f"{V1}/executions/{ex['execution_id']}/cancel")
    assert out["cancel_requested"] == 1 and out["cancelled"] + out["already_ended"] == 1


async def test_unknown_execution(api: TestClient[Any, Any]) -> None:
    for method, suffix in (("GET", ""), ("POST", "/retry"), ("POST", "/cancel")):
        message = await fails(api, method, f"{V1}/executions/nope{suffix}", 404,
                              "execution_not_found")
        assert "'nope'" in message


async def test_plugins(api: TestClient[Any, Any]) -> None:
    out = await ok(api, "GET", f"{V1}/plugins")
    assert [p["name"] for p in out["plugins"]] == KNOWN.split(", ")
    adjust = next(p for p in out["plugins"] if p["name"] == "adjust")
    assert adjust["dependencies"] == ["prices"]
    assert adjust["optional_dependencies"] == ["calendar", "not_installed"]
    assert adjust["groups"] == ["daily"]
    prices = next(p for p in out["plugins"] if p["name"] == "prices")
    assert prices["default_timeout_seconds"] == 600
    assert out["groups"] == {"daily": ["adjust", "prices"], "reference": ["calendar"],
                             "reports": ["report"]}


# ------------------------------------------------------------------ auth, CORS, log
async def test_auth_required_when_token_set(settings: Settings, store: redis.Redis) -> None:
    token = "s3cret-token"
    good = {"Authorization": f"Bearer {token}"}
    async with serve(Settings(redis_url=settings.redis_url, api_token=token)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"bearer {token}"},
                        {"Authorization": f"Bearer {token}x"},
                        {"Authorization": f"Bearer  {token}"},
                        {"Authorization": f"Basic {token}"}):
            for method, path in (("GET", f"{V1}/plugins"), ("GET", f"{V1}/tasks"),
                                 ("GET", f"{V1}/tasks/x"), ("POST", f"{V1}/tasks/x/cancel"),
                                 ("GET", f"{V1}/nothing-here")):
                async with client.request(method, path, headers=headers) as resp:
                    assert resp.headers["WWW-Authenticate"] == "Bearer"
                    body = await body_of(resp, 401)
                assert_error_shape(body)
                assert body["error"]["code"] == "unauthorized"
                assert token not in json.dumps(body)
            await fails(client, "POST", f"{V1}/tasks", 401, "unauthorized",
                        json={"plugin_name": "prices"}, headers=headers)
            await fails(client, "POST", f"{V1}/executions", 401, "unauthorized",
                        json={"group": "daily"}, headers=headers)
        assert store.dbsize() == 0

        await ok(client, "GET", f"{V1}/plugins", headers=good)
        task = await ok(client, "POST", f"{V1}/tasks", 202, json={"plugin_name": "prices"},
                        headers=good)
        await ok(client, "GET", f"{V1}/tasks/{task['task_id']}", headers=good)
        await fails(client, "GET", f"{V1}/tasks/nope", 404, "task_not_found", headers=good)
        doc = await ok(client, "GET", "/openapi.json")  # stays open
        assert doc["openapi"].startswith("3.")

    async with serve(settings) as client:  # no token configured: no auth
        await ok(client, "GET", f"{V1}/plugins")
        await ok(client, "GET", f"{V1}/plugins", headers={"Authorization": "Bearer anything"})


async def test_cors_only_when_configured(settings: Settings) -> None:
    origin = {"Origin": "https://ui.example"}
    async with serve(settings) as client:
        async with client.get(f"{V1}/plugins", headers=origin) as resp:
            assert resp.status == 200
            assert "Access-Control-Allow-Origin" not in resp.headers
        await fails(client, "OPTIONS", f"{V1}/tasks", 405, "method_not_allowed",
                    headers={**origin, "Access-Control-Request-Method": "POST"})

    configured = Settings(redis_url=settings.redis_url, api_token="tok",
                          api_cors_origins=("https://ui.example",))
    auth = {"Authorization": "Bearer tok"}
    async with serve(configured) as client:
        async with client.options(f"{V1}/tasks", headers={
                **origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type"}) as resp:
            assert resp.status == 204  # a preflight needs no token
            assert resp.headers["Access-Control-Allow-Origin"] == "https://ui.example"
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        async with client.get(f"{V1}/plugins", headers={**origin, **auth}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "https://ui.example"
            assert "Origin" in resp.headers["Vary"]
        # errors reach the browser too (with the header it needs to read them)
        for path, status, headers in ((f"{V1}/tasks/nope", 404, auth),
                                      (f"{V1}/tasks", 401, {})):
            async with client.get(path, headers={**origin, **headers}) as resp:
                assert resp.status == status
                assert resp.headers["Access-Control-Allow-Origin"] == "https://ui.example"
        for other in ({"Origin": "https://evil.example"}, {}):
            async with client.get(f"{V1}/plugins", headers={**other, **auth}) as resp:
                assert resp.status == 200
                assert "Access-Control-Allow-Origin" not in resp.headers
            async with client.options(f"{V1}/tasks", headers=other) as resp:
                assert "Access-Control-Allow-Origin" not in resp.headers

    anyone = Settings(redis_url=settings.redis_url, api_cors_origins=("*",))
    async with serve(anyone) as client:
        async with client.get(f"{V1}/plugins", headers={"Origin": "http://x.test"}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "http://x.test"


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


async def test_access_log_and_request_id(api: TestClient[Any, Any],
                                         json_log: io.StringIO) -> None:
    async with api.get(f"{V1}/plugins", headers={"X-Request-ID": "req-123"}) as resp:
        assert resp.status == 200 and resp.headers["X-Request-ID"] == "req-123"
    async with api.get(f"{V1}/tasks/nope") as resp:
        assert resp.status == 404
        generated = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    async with api.post(f"{V1}/tasks", data=b"nope", headers={"X-Request-ID": "r2"}) as resp:
        assert resp.status == 400 and resp.headers["X-Request-ID"] == "r2"
    async with api.get("/openapi.json", headers={"X-Request-ID": "r" * 100}) as resp:
        assert resp.headers["X-Request-ID"] == "r" * 64  # bounded

    lines = [json.loads(line) for line in json_log.getvalue().splitlines() if line.strip()]
    entries = [e for e in lines if e.get("event") == "api.request"]
    assert [(e["method"], e["path"], e["status"], e["request_id"]) for e in entries] == [
        ("GET", f"{V1}/plugins", 200, "req-123"),
        ("GET", f"{V1}/tasks/nope", 404, generated),
        ("POST", f"{V1}/tasks", 400, "r2"),
        ("GET", "/openapi.json", 200, "r" * 64),
    ]
    for e in entries:
        assert isinstance(e["duration_ms"], int | float) and e["duration_ms"] >= 0
        assert e["component"] == "stockq.api" and e["level"] == "info"


# ------------------------------------------------------------------ Redis away
async def test_redis_disabled(settings: Settings, store: redis.Redis) -> None:
    disabled = Settings(redis_url=settings.redis_url, redis_enabled=False)
    async with serve(disabled) as client:
        for method, path, body in (
            ("POST", f"{V1}/tasks", {"plugin_name": "prices"}),
            ("POST", f"{V1}/executions", {"plugins": ["report"]}),
            ("GET", f"{V1}/tasks", None), ("GET", f"{V1}/tasks/x", None),
            ("POST", f"{V1}/tasks/x/cancel", None), ("POST", f"{V1}/tasks/x/retry", None),
            ("GET", f"{V1}/executions/x", None), ("POST", f"{V1}/executions/x/retry", None),
            ("POST", f"{V1}/executions/x/cancel", None),
        ):
            message = await fails(client, method, path, 503, "redis_unavailable", json=body)
            assert "disabled" in message
        await fails(client, "POST", f"{V1}/tasks", 400, "unknown_plugin",
                    json={"plugin_name": "nope"})  # bad input is still bad input
        await ok(client, "GET", f"{V1}/plugins")
        await ok(client, "GET", "/openapi.json")
    assert store.dbsize() == 0


async def test_redis_stopped_then_back(own_redis: RedisServer) -> None:
    settings = Settings(redis_url=own_redis.url, redis_connect_timeout=1.0)
    async with serve(settings) as client:
        first = await submit(client)
        own_redis.stop()
        started = time.monotonic()
        for method, path, body in (
            ("POST", f"{V1}/tasks", {"plugin_name": "prices", "params": {"n": 1}}),
            ("POST", f"{V1}/executions", {"plugins": ["report"]}),
            ("GET", f"{V1}/tasks/{first['task_id']}", None), ("GET", f"{V1}/tasks", None),
            ("POST", f"{V1}/tasks/{first['task_id']}/cancel", None),
            ("GET", f"{V1}/executions/x", None),
        ):
            message = await fails(client, method, path, 503, "redis_unavailable", json=body)
            assert "unreachable" in message and str(own_redis.port) in message
        assert time.monotonic() - started < 15  # fails fast, no hanging requests

        own_redis.start()  # same port, empty (no persistence)
        with redis.Redis.from_url(own_redis.url) as r:
            assert r.dbsize() == 0  # nothing was written (or replayed) for the 503s
        again = await submit(client, params={"n": 1})
        assert again["created"] is True
        got = await ok(client, "GET", f"{V1}/tasks/{again['task_id']}")
        assert got["status"] == "pending"
        ex = await ok(client, "POST", f"{V1}/executions", 202, json={"plugins": ["report"]})
        assert len(ex["task_ids"]) == 3
        page = await ok(client, "GET", f"{V1}/tasks")
        assert len(page["items"]) == 4


async def test_redis_refusing_writes_is_503(api: TestClient[Any, Any],
                                           store: redis.Redis) -> None:
    store.config_set("maxmemory", "1")  # noeviction: every write is refused (OOM)
    try:
        await fails(api, "POST", f"{V1}/tasks", 503, "redis_unavailable",
                    json={"plugin_name": "prices"})
    finally:
        store.config_set("maxmemory", "0")


# ------------------------------------------------------------------ OpenAPI
async def test_openapi_document(api: TestClient[Any, Any]) -> None:
    doc = await ok(api, "GET", "/openapi.json")
    validate(doc)  # raises on an invalid OpenAPI 3 document
    assert doc["openapi"].startswith("3.")
    for route in ROUTES:
        assert route.path in doc["paths"], route.path
        assert route.method.lower() in doc["paths"][route.path], (route.method, route.path)
    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert listed == {(r.method, r.path) for r in ROUTES}
    expected = {"POST /api/v1/tasks", "GET /api/v1/tasks", "GET /api/v1/tasks/{task_id}",
                "POST /api/v1/tasks/{task_id}/cancel", "POST /api/v1/tasks/{task_id}/retry",
                "POST /api/v1/executions", "GET /api/v1/executions/{execution_id}",
                "POST /api/v1/executions/{execution_id}/retry",
                "POST /api/v1/executions/{execution_id}/cancel", "GET /api/v1/plugins",
                "GET /openapi.json"}
    assert expected <= {f"{m} {p}" for m, p in listed}

    schemas = doc["components"]["schemas"]
    assert schemas["TaskSubmit"]["required"] == ["plugin_name"]
    assert schemas["TaskSubmit"]["additionalProperties"] is False
    assert set(schemas["ExecutionSubmit"]["properties"]) >= {"plugins", "group",
                                                             "include_optional", "trade_dates"}
    submit_op = doc["paths"][f"{V1}/tasks"]["post"]
    assert "202" in submit_op["responses"] and "413" in submit_op["responses"]
    assert submit_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskSubmit"}
    assert submit_op["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/openapi.json"]["get"]
    for path, ops in doc["paths"].items():
        for param in re.findall(r"{(\w+)}", path):
            for op in ops.values():
                assert any(p["name"] == param and p["in"] == "path"
                           for p in op.get("parameters", ())), (path, param)


# ------------------------------------------------------------------ fuzz
_json_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
              | st.floats(allow_nan=False) | st.text(max_size=12)
              | st.sampled_from(["prices", "report", "daily", "20240102", "2024-02-30",
                                 "high", "full", ""]))
_json = st.recursive(_json_leaf, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
_date = st.sampled_from(["20240102", "2024-01-03", "20231229"])
_good = {  # a value each field accepts
    "task_type": st.sampled_from(["incremental", "full", "backfill"]),
    "trade_dates": st.lists(_date, min_size=1, max_size=3),
    "start_date": st.sampled_from(["20240101", "2024-01-02"]),
    "end_date": st.sampled_from(["20240301", "2024-03-31"]),
    "priority": st.sampled_from(["high", "normal", "low", 0, 1, 2]),
    "timeout_seconds": st.integers(1, 7 * 24 * 3600),
    "max_attempts": st.integers(1, 20),
    "params": st.dictionaries(st.text(max_size=8), _json, max_size=3),
    "user_id": st.text(max_size=200),
}
_bad = {  # near misses and arbitrary JSON
    "task_type": st.sampled_from(["weekly", "Full", ""]) | _json,
    "trade_dates": st.lists(st.sampled_from(["20240230", "2024-1-3", "x", ""])
                            | st.text(max_size=10), max_size=3) | _json,
    "start_date": st.sampled_from(["2024-02-30", "20240431", "99999999"]) | _json,
    "end_date": st.sampled_from(["20230101", "0"]) | _json,
    "priority": st.sampled_from(["urgent", "1", 3, -1, 1.0]) | _json,
    "timeout_seconds": st.sampled_from([0, -5, 7 * 24 * 3600 + 1, 10**30]) | _json,
    "max_attempts": st.sampled_from([0, 21, 2**64]) | _json,
    "params": _json,
    "user_id": st.text(min_size=201, max_size=250) | _json,
    "colour": _json,
}
_known = st.sampled_from(["prices", "report", "adjust", "calendar"])
_names = st.sampled_from(["prices", "report", "adjust", "loop_a", "nope", ""]) | _json


def _body(required: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Mostly well-formed bodies (all good, or good with one bad field), some junk."""
    good = st.fixed_dictionaries(required, optional=_good)
    one_bad = st.tuples(good, st.sampled_from(sorted(_bad)).flatmap(
        lambda k: st.tuples(st.just(k), _bad[k]))).map(lambda t: {**t[0], t[1][0]: t[1][1]})
    junk = st.fixed_dictionaries({}, optional={**required, **_good})
    return st.one_of(good, good, one_bad, one_bad, junk, _json)


_task_body = _body({"plugin_name": _known}) | _body({"plugin_name": _names})
_execution_body = (_body({"plugins": st.lists(_known, min_size=1, max_size=3)})
                   | _body({"group": st.sampled_from(["daily", "reports"])})
                   | _body({"include_optional": st.booleans(),
                            "plugins": st.lists(_names, max_size=4) | _json,
                            "group": st.sampled_from(["daily", "weekly"]) | _json}))
_raw = (st.binary(max_size=200)
        | st.sampled_from([b"", b"{", b"NaN", b'{"plugin_name": "\\ud800"}', b"[" * 3000,
                           b'{"plugins": ["prices"], "user_id": "\\udc00"}',
                           b'{"plugin_name": "prices", "params": {"a": Infinity}}']))


def _encoded(bodies: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return bodies.map(lambda body: json.dumps(body).encode())


_posts = st.one_of(  # (path, raw body): mostly JSON of the route's own shape
    st.tuples(st.just(f"{V1}/tasks"), _encoded(_task_body)),
    st.tuples(st.just(f"{V1}/executions"), _encoded(_execution_body)),
    st.tuples(st.sampled_from([f"{V1}/tasks", f"{V1}/executions"]),
              _encoded(_task_body | _execution_body) | _raw),
)
_good_query = st.fixed_dictionaries({}, optional={
    "status": st.sampled_from(["pending", "running", "completed", "failed", "cancelled"]),
    "plugin": _known, "limit": st.integers(1, 500).map(str),
    "cursor": st.floats(0, 2e12).map(lambda f: f"{f!r}:x") | st.just("1:")})
_query_value = (st.text(max_size=30)
                | st.sampled_from(["pending", "bogus", "0", "1", "501", "-1", "\u00b2", "1e3",
                                   "nan:x", "1.5:a", "inf", "9" * 40, "prices", "%", "\x00"]))
_query = _good_query | _good_query | st.dictionaries(
    st.sampled_from(["status", "plugin", "execution_id", "limit", "cursor", "other"]),
    _query_value, max_size=5)
FUZZ = hsettings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


async def _check(resp: ClientResponse, seen: list[int]) -> None:
    seen.append(resp.status)
    text = await resp.text()
    assert resp.status < 500, text
    assert resp.content_type == "application/json", text
    body = json.loads(text)
    if resp.status >= 400:
        assert_error_shape(body)


async def _start(settings: Settings) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(settings, registry=registry())))
    await client.start_server()
    return client


def test_fuzz_submissions(settings: Settings) -> None:
    seen: list[int] = []
    with asyncio.Runner() as runner:
        client = runner.run(_start(settings))

        @FUZZ
        @given(post=_posts)
        @example(post=(f"{V1}/tasks", b'{"plugin_name": "prices", "user_id": "\\ud800"}'))
        @example(post=(f"{V1}/executions", b"[" * 100_000))
        def post(post: tuple[str, bytes]) -> None:
            async def go() -> None:
                async with client.post(post[0], data=post[1],
                                       headers={"Content-Type": "application/json"}) as resp:
                    await _check(resp, seen)
            runner.run(go())

        try:
            post()
            runner.run(_still_works(client))
        finally:
            runner.run(client.close())
    assert 202 in seen and 400 in seen  # the strategies reach both sides


def test_fuzz_list_query(settings: Settings) -> None:
    seen: list[int] = []
    with asyncio.Runner() as runner:
        client = runner.run(_start(settings))

        execution = runner.run(ok(client, "POST", f"{V1}/executions", 202,
                                  json={"plugins": ["report"]}))
        in_execution = st.fixed_dictionaries(
            {"execution_id": st.just(execution["execution_id"])},
            optional={"cursor": st.integers(0, 5).map(str) | _query_value,
                      "status": _query_value, "plugin": _known | _query_value,
                      "limit": st.integers(1, 3).map(str) | _query_value})

        @FUZZ
        @given(query=_query | in_execution)
        @example(query={"limit": "\u00b2"})
        @example(query={"cursor": "1e999:x"})
        def get(query: dict[str, str]) -> None:
            async def go() -> None:
                async with client.get(f"{V1}/tasks", params=query) as resp:
                    await _check(resp, seen)
            runner.run(go())

        try:
            runner.run(submit(client))
            get()
        finally:
            runner.run(client.close())
    assert 200 in seen and 400 in seen


async def _still_works(client: TestClient[Any, Any]) -> None:
    task = await submit(client, params={"after": "the fuzz"})
    assert (await ok(client, "GET", f"{V1}/tasks/{task['task_id']}"))["status"] == "pending"


