"""The HTTP sidecar on a real Redis: bodies that are not JSON, the nesting and size
limits, and a bounded fuzz of the request bodies and query strings (never a 5xx for bad
input)."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
import redis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.api.app import create_app
from app.settings import Settings
from tests.api_support import V1, assert_error_shape, fails, ok, registry, serve, submit
from tests.api_support import api as api  # fixtures: pytest finds them by name here
from tests.api_support import store as store


# ------------------------------------------------------------------ non-JSON, nesting, size
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

    typed = {"Content-Type": "application/json"}
    async with serve(settings) as client:  # the default: 1 MiB
        await fails(client, "POST", f"{V1}/tasks", 413, "body_too_large", data=stream(
            {"plugin_name": "prices", "params": {"pad": "x" * (1024 * 1024)}}), headers=typed)
        big = await ok(client, "POST", f"{V1}/tasks", 202, data=stream(
            {"plugin_name": "prices", "params": {"pad": "y" * (1024 * 1024 - 1000)}}),
            headers=typed)
        assert big["created"] is True


async def test_execution_non_json(api: TestClient[Any, Any]) -> None:
    typed = {"Content-Type": "application/json"}
    await fails(api, "POST", f"{V1}/executions", 400, "invalid_input", data=b"{plugins}",
                headers=typed)
    await fails(api, "POST", f"{V1}/executions", 400, "invalid_input", data=b"",
                headers=typed)
    # the same bodies sent untyped are refused before they are read
    await fails(api, "POST", f"{V1}/executions", 415, "unsupported_media_type",
                data=b"{plugins}")


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
