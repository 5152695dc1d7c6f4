"""The HTTP sidecar on a real Redis: auth, CORS, the access log and request ids, Redis
disabled / stopped / back / refusing writes, and /openapi.json.

/health and /metrics are not tested here (they have their own tests)."""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import redis
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from app.api.compat import ROUTES as DATAMANAGE
from app.api.routes import ROUTES
from app.settings import Settings
from tests.api_support import V1, assert_error_shape, body_of, fails, ok, serve, submit
from tests.api_support import api as api  # fixtures: pytest finds them by name here
from tests.api_support import store as store
from tests.redis_server import RedisServer


# ------------------------------------------------------------------ auth, CORS, log
async def test_auth_required_when_token_set(settings: Settings, store: redis.Redis) -> None:
    token = "s3cret-token-0123456789abcdef"
    good = {"Authorization": f"Bearer {token}"}
    async with serve(Settings(redis_url=settings.redis_url, api_token=token)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"Bearer {token}x"},
                        {"Authorization": f"Bearer {token[:-1]}"},
                        {"Authorization": f"Bearer\t{token}"},
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
        for scheme in ("bearer", "BEARER", "Bearer "):  # RFC 7235: any case, 1*SP
            await ok(client, "GET", f"{V1}/plugins",
                     headers={"Authorization": f"{scheme} {token}"})
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

    configured = Settings(redis_url=settings.redis_url, api_token="tok-0123456789abcdef",
                          api_cors_origins=("https://ui.example",))
    auth = {"Authorization": "Bearer tok-0123456789abcdef"}
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


async def test_access_log_and_request_id(api: TestClient[Any, Any],
                                         json_log: io.StringIO) -> None:
    async with api.get(f"{V1}/plugins", headers={"X-Request-ID": "req-123"}) as resp:
        assert resp.status == 200 and resp.headers["X-Request-ID"] == "req-123"
    async with api.get(f"{V1}/tasks/nope") as resp:
        assert resp.status == 404
        generated = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    async with api.post(f"{V1}/tasks", data=b"nope", headers={
            "X-Request-ID": "r2", "Content-Type": "application/json"}) as resp:
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
    assert listed == {(r.method, r.path) for r in (*ROUTES, *DATAMANAGE)}
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
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
