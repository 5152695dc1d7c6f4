"""The HTTP sidecar on a real Redis: the task routes (submit, get, cancel, retry),
every error they promise for bad input, and listing (paging, filters, bad queries)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from app.models import TaskStatus
from app.queue import TaskQueue
from tests.api_support import KNOWN, V1, fails, ok, submit
from tests.api_support import api as api  # fixtures: pytest finds them by name here
from tests.api_support import store as store
from tests.api_support import worker as worker


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
    assert explicit["memory_limit_mb"] == 0 and explicit["output"] == ""  # none set, none yet
    limited = await submit(api, "adjust", memory_limit_mb=512)
    assert limited["memory_limit_mb"] == 512


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
    ({"plugin_name": "prices", "memory_limit_mb": 0}, "invalid_input", "at least 1"),
    ({"plugin_name": "prices", "memory_limit_mb": "1G"}, "invalid_input", "integer"),
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

    for action in ("cancel", "retry"):
        message = await fails(api, "POST", f"{V1}/tasks/nope/{action}", 404,
                              "task_not_found")
        assert "'nope'" in message


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
