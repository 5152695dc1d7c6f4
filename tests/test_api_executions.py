"""The HTTP sidecar on a real Redis: the execution routes (dependency order, groups,
optional dependencies, cycles, failure summary, retry, cancel) and /plugins."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from app.executions import BatchTask, create_execution
from app.models import TaskSpec
from app.queue import TaskQueue
from tests.api_support import KNOWN, V1, fails, ok
from tests.api_support import api as api  # fixtures: pytest finds them by name here
from tests.api_support import store as store
from tests.api_support import worker as worker
from tests.conftest import FakeClock


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


async def test_list_executions_filters_and_pages(api: TestClient[Any, Any], queue: TaskQueue,
                                                  clock: FakeClock) -> None:
    """GET /executions: newest first by creation, filtered by status, trigger types,
    group and creation time, paged with a cursor that visits each one once."""
    made: list[tuple[str, str, str]] = []  # (id, trigger, group), oldest first
    for i, (trigger, group) in enumerate([("scheduled", "daily_sync"), ("api", ""),
                                          ("group", "mine"), ("catch_up", "daily_sync"),
                                          ("api", "")]):
        clock.now = 1_767_225_600.0 + 3600 * i  # 2026-01-01T00:00Z + i hours
        eid, _ = await create_execution(queue, [BatchTask(TaskSpec.build("prices",
                                                                         params={"i": i}))],
                                        trigger_type=trigger, group_name=group)
        made.append((eid, trigger, group))
    newest_first = [m[0] for m in reversed(made)]
    out = await ok(api, "GET", f"{V1}/executions")
    assert [e["execution_id"] for e in out["items"]] == newest_first
    assert out["next_cursor"] is None
    first = out["items"][0]
    assert first["status"] == "pending" and first["total"] == 1 and first["pending"] == 1
    assert first["trigger_type"] == "api" and first["plugins"] == ["prices"]
    assert first["created_at"] == "2026-01-01T04:00:00+00:00"
    assert "tasks" not in first and "task_ids" not in first

    seen: list[str] = []
    cursor = ""
    while True:
        page = await ok(api, "GET", f"{V1}/executions?limit=2" + (f"&cursor={cursor}"
                                                                   if cursor else ""))
        assert len(page["items"]) <= 2
        seen += [e["execution_id"] for e in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == newest_first

    scheduled = await ok(api, "GET", f"{V1}/executions?trigger_type=scheduled,catch_up")
    assert [e["execution_id"] for e in scheduled["items"]] == [made[3][0], made[0][0]]
    mine = await ok(api, "GET", f"{V1}/executions?group=mine")
    assert [e["execution_id"] for e in mine["items"]] == [made[2][0]]
    window = await ok(api, "GET", f"{V1}/executions?since=2026-01-01T01:00:00Z"
                                  "&until=2026-01-01T03:00:00%2B00:00")
    assert [e["execution_id"] for e in window["items"]] == [made[2][0], made[1][0]]
    assert (await ok(api, "GET", f"{V1}/executions?until=2026-01-01"))["items"] == []

    claimed = await queue.claim("w1")
    assert claimed is not None
    await queue.complete(claimed)
    done = await ok(api, "GET", f"{V1}/executions?status=completed")
    assert [e["execution_id"] for e in done["items"]] == [made[0][0]]
    assert done["items"][0]["completed"] == 1 and done["items"][0]["completed_at"]
    running = await ok(api, "GET", f"{V1}/executions?status=pending&trigger_type=api")
    assert [e["execution_id"] for e in running["items"]] == [made[4][0], made[1][0]]

    for query, fragment in (("status=done", "status 'done' must be one of"),
                            ("since=yesterday", "since 'yesterday' must be a date"),
                            ("until=2026-02-30", "until '2026-02-30'"),
                            ("limit=0", "limit must be between 1 and 500"),
                            ("cursor=nan:x", "cursor 'nan:x' is malformed")):
        assert fragment in await fails(api, "GET", f"{V1}/executions?{query}", 400,
                                       "invalid_input")
