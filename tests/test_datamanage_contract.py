"""stock_datasource's data-management routes served by stockq, against the contract read
from the real snapshot at test time (tests/datamanage_contract.py): every route its
frontend client calls is served (or, outside stockq's part, refused with a 501 naming
stockq), the request bodies are its pydantic models (fields, defaults, limits), the
query limits are its router's, and errors come in FastAPI's ``{"detail": ...}``."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.api import compat
from app.api.app import create_app
from app.api.compat.requests import BODIES
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.warehouse import Warehouse
from tests.datamanage_contract import (
    PREFIX,
    enum_values,
    frontend,
    route_of,
    router,
    schemas,
)
from tests.datamanage_plugins import PLUGINS
from tests.sidecar_support import GOOD_TOKEN

SCOPE = ("sync", "plugins", "schedule", "scheduler", "groups")


def in_scope(path: str) -> bool:
    return path[len(PREFIX):].split("/")[1] in SCOPE


@pytest.fixture(scope="module")
def warehouse() -> Any:
    wh = Warehouse("chdb://" + tempfile.mkdtemp(prefix="stockq-dm-"))
    yield wh
    wh.close()


@pytest.fixture
async def client(settings: Settings, warehouse: Warehouse) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings, registry=PluginRegistry(PLUGINS), warehouse=warehouse)
    async with TestClient(TestServer(app)) as c:
        yield c


async def answer(client: TestClient[Any, Any], verb: str, path: str, **kw: Any
                 ) -> tuple[int, Any]:
    async with client.request(verb, path, **kw) as resp:
        text = await resp.text()
        assert resp.content_type == "application/json", (verb, path, resp.status, text[:300])
        return resp.status, json.loads(text)


def test_the_snapshot_is_read() -> None:
    """The parsers find the client's calls and types and the router's routes, and every
    call of the client is a route of the router (else the contract below is hollow)."""
    fe = frontend()
    assert len(fe.calls) > 60 and len(fe.interfaces) > 60 and len(router()) > 60
    assert fe.interfaces["SyncTask"]["status"].type.startswith("'pending'")
    assert {c.method for c in fe.calls} >= {"triggerSync", "getSyncTasks", "batchTriggerSync"}
    assert [c for c in fe.calls if route_of(c.verb, c.path) is None] == []
    assert schemas()["TriggerSyncRequest"]["plugin_name"].required


def test_the_routes_served_are_those_the_frontend_calls() -> None:
    """stockq serves exactly the router's routes that the client calls for sync tasks,
    schedules, executions, plugins and groups: none missing, none invented."""
    wanted = set()
    for call in frontend().calls:
        if in_scope(call.path):
            route = route_of(call.verb, call.path)
            assert route is not None
            wanted.add((call.verb, PREFIX + route.path))
    served = {(r.method, r.path) for r in compat.ROUTES}
    assert served == wanted


async def test_every_call_is_served_or_refused_with_501(client: TestClient[Any, Any]) -> None:
    for call in frontend().calls:
        path = call.path.replace("{param}", "nope")
        kw: dict[str, Any] = {"json": {}} if call.verb in ("POST", "PUT") else {}
        status, body = await answer(client, call.verb, path, **kw)
        if in_scope(call.path):
            assert status not in (404, 405, 501) or "not found" in str(body).lower(), \
                (call.method, status, body)
            assert status < 500, (call.method, status, body)
        else:
            assert status == 501, (call.method, status, body)
            assert set(body) == {"detail"} and "stockq" in body["detail"], body
            assert call.path[len(PREFIX):] in body["detail"] or "/api/datamanage" in \
                body["detail"]
    status, body = await answer(client, "GET", f"{PREFIX}/no/such/thing")
    assert status == 501 and "not served by stockq" in body["detail"]
    status, body = await answer(client, "GET", f"{PREFIX}/sync/trigger")
    assert (status, body) == (405, {"detail": "Method Not Allowed"})


def _limits(field: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if field.minimum is not None:
        out["ge"] = field.minimum
    if field.maximum is not None:
        out["le"] = field.maximum
    if field.min_length is not None or field.min_items is not None:
        out["min_length"] = field.min_length if field.min_length is not None \
            else field.min_items
    if field.max_length is not None:
        out["max_length"] = field.max_length
    if field.pattern is not None:
        out["pattern"] = field.pattern
    return out


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.name)
def test_request_bodies_are_the_original_models(body: Any) -> None:
    original = schemas()[body.name]
    ours = {f.name: f for f in body.model.fields}
    assert set(ours) == set(original), body.name
    for name, spec in original.items():
        field = ours[name]
        assert field.required == spec.required, name
        if not spec.required:
            assert body.defaults.get(name, "") == spec.default, name
        assert _limits(field) == spec.limits, name
        assert field.nullable == spec.annotation.endswith("| None"), name
        assert list(field.enum or ()) == list(enum_values(spec.annotation) or ()), name
        kind = spec.annotation.replace(" | None", "")
        expected = {"str": "string", "bool": "boolean", "int": "integer"}.get(
            kind, "array" if kind.startswith("list[") else "string")
        assert field.types == (expected,), name


def test_each_route_takes_the_original_body() -> None:
    for route in compat.ROUTES:
        theirs = route_of(route.method, route.path)
        assert theirs is not None
        assert (route.request.name if route.request else None) == theirs.body, route.path


async def test_query_limits_are_the_routers(client: TestClient[Any, Any]) -> None:
    checked = 0
    for route in compat.ROUTES:
        theirs = route_of(route.method, route.path)
        assert theirs is not None
        documented = {p.name for p in route.params if p.where == "query"}
        assert set(theirs.query) <= documented, route.path
        if route.method != "GET" or "{" in route.path:
            continue
        for name, limits in theirs.query.items():
            for bound, past in (("ge", -1), ("le", 1)):
                if bound not in limits:
                    continue
                status, body = await answer(client, "GET",
                                            f"{route.path}?{name}={limits[bound] + past}")
                assert status == 422, (route.path, name, body)
                assert body["detail"][0]["loc"] == ["query", name], body
                status, body = await answer(client, "GET",
                                            f"{route.path}?{name}={limits[bound]}")
                assert status == 200, (route.path, name, body)
                checked += 1
    assert checked >= 8


async def test_errors_are_fastapi_detail(settings: Settings, warehouse: Warehouse) -> None:
    token = replace(settings, api_token=GOOD_TOKEN)
    app = create_app(token, registry=PluginRegistry(PLUGINS), warehouse=warehouse)
    auth = {"Authorization": f"Bearer {GOOD_TOKEN}"}
    async with TestClient(TestServer(app)) as c:
        status, body = await answer(c, "GET", f"{PREFIX}/sync/tasks")
        assert (status, body) == (401, {"detail": "missing or wrong bearer token"})
        status, body = await answer(c, "GET", f"{PREFIX}/quality/metrics")
        assert status == 401  # the token guards the whole prefix
        status, body = await answer(c, "GET", f"{PREFIX}/sync/status/nope", headers=auth)
        assert (status, body) == (404, {"detail": "Task nope not found"})
        status, body = await answer(c, "POST", f"{PREFIX}/sync/cancel/nope", headers=auth)
        assert (status, body) == (400, {"detail": "Cannot cancel task (not pending or not "
                                                  "found)"})
        status, body = await answer(c, "POST", f"{PREFIX}/sync/trigger", headers=auth,
                                    json={"task_type": "weekly"})
        assert status == 422
        assert [(e["type"], e["loc"]) for e in body["detail"]] == [
            ("missing", ["body", "plugin_name"]), ("value_error", ["body", "task_type"])]
        status, body = await answer(c, "POST", f"{PREFIX}/sync/trigger", headers=auth,
                                    data="plugin_name=x")
        assert status == 415 and set(body) == {"detail"}
        status, body = await answer(c, "POST", f"{PREFIX}/sync/trigger", headers={
            **auth, "Origin": "http://evil.example"}, json={"plugin_name": "dm_calendar"})
        assert status == 403 and "cross-origin" in body["detail"]
        status, body = await answer(c, "POST", f"{PREFIX}/sync/trigger", headers={
            **auth, "Content-Type": "application/json"}, data="{not json")
        assert status == 422 and body["detail"][0]["type"] == "json_invalid"
        status, body = await answer(c, "GET", "/api/v1/tasks/nope", headers=auth)
        assert status == 404 and set(body) == {"error"}  # /api/v1 keeps its own shape
    no_redis = create_app(replace(settings, redis_enabled=False),
                          registry=PluginRegistry(PLUGINS))
    async with TestClient(TestServer(no_redis)) as c:
        status, body = await answer(c, "POST", f"{PREFIX}/sync/trigger",
                                    json={"plugin_name": "dm_calendar"})
        assert status == 503 and "Redis is disabled" in body["detail"]
        status, body = await answer(c, "GET", f"{PREFIX}/sync/tasks")
        assert status == 503 and set(body) == {"detail"}


async def test_cors_preflight_allows_put_and_delete(settings: Settings,
                                                    warehouse: Warehouse) -> None:
    origin = "http://localhost:5173"
    dev = replace(settings, api_cors_origins=(origin,))
    app = create_app(dev, registry=PluginRegistry(PLUGINS), warehouse=warehouse)
    async with TestClient(TestServer(app)) as c:
        async with c.options(f"{PREFIX}/sync/config", headers={
                "Origin": origin, "Access-Control-Request-Method": "PUT"}) as resp:
            assert resp.status == 204
            methods = re.split(r",\s*", resp.headers["Access-Control-Allow-Methods"])
            assert {"PUT", "DELETE", "GET", "POST"} <= set(methods)
        status, body = await answer(c, "PUT", f"{PREFIX}/schedule/config",
                                    headers={"Origin": origin}, json={"enabled": True})
        assert status == 200 and body["enabled"] is True
