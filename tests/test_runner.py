"""How a plugin run ends, as the worker child sees it (in-process: no Redis here)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from plugins_bridge import progress
from plugins_bridge.contract import Plugin, RunCall, RunPlan, failure, success
from plugins_bridge.errors import ConfigurationError, RateLimited
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.runner import (
    classify,
    classify_message,
    failure_text,
    records_of,
    run_task,
)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionError("refused"), "network"),
        (TimeoutError("slow"), "network"),
        (TimeoutError("slow"), "network"),
        (requests.exceptions.ConnectionError("dns"), "network"),
        (requests.exceptions.ReadTimeout("read"), "network"),
        (ValueError("bad ts_code"), "bad_params"),
        (TypeError("run() got an unexpected keyword argument 'x'"), "bad_params"),
        (KeyError("close"), "schema_error"),
        (ConfigurationError("TUSHARE_TOKEN is not set"), "config_error"),
        (RuntimeError("something odd"), "error"),
        (Exception("抱歉，您每分钟最多访问该接口200次"), "rate_limit"),
    ],
)
def test_classify_exceptions(exc: BaseException, kind: str) -> None:
    assert classify(exc)[0] == kind


def test_rate_limit_carries_its_wait() -> None:
    assert classify(RateLimited("quota", retry_after=30))[2] == 30
    assert classify_message("抱歉，您每分钟最多访问该接口500次") == ("rate_limit", 60.0)
    assert classify_message("HTTPConnectionPool: Max retries exceeded")[0] == "network"
    assert classify_message("no data for that code")[0] == "plugin_error"


class Recorder(Plugin):
    name = "recorder"

    def __init__(self, fail_on: str = "", result: Any = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_on = fail_on
        self.result = result

    def run(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        if self.result is not None:
            return self.result  # type: ignore[no-any-return]
        if params.get("trade_date") == self.fail_on:
            return failure("connection reset by peer")
        return success(7)


def task(**kw: Any) -> dict[str, Any]:
    return {"task_id": "t1", "plugin_name": "recorder", "task_type": "backfill",
            "attempt": 1, **kw}


def test_one_run_per_date_with_progress_and_resume() -> None:
    plugin = Recorder(fail_on="20240104")
    reg = PluginRegistry([plugin])
    sent: list[dict[str, Any]] = []
    dates = ["20240105", "20240102", "20240104", "20240103"]
    out = run_task(reg, task(trade_dates=dates, params={"x": "1"}), sent.append)
    assert not out.ok and out.error_type == "network" and out.checkpoint == "20240103"
    assert out.records == 14 and out.error.startswith("20240104:")
    assert [c["trade_date"] for c in plugin.calls] == ["20240102", "20240103", "20240104"]
    assert all(c["x"] == "1" for c in plugin.calls)
    assert [m["checkpoint"] for m in sent] == ["20240102", "20240103"]
    assert [m["percent"] for m in sent] == [25.0, 50.0]
    # the retry resumes after the checkpoint, counting the records already loaded
    plugin.fail_on = ""
    plugin.calls.clear()
    out = run_task(reg, task(trade_dates=dates, checkpoint="20240103",
                             records_processed=14), None)
    assert out.ok and out.records == 28 and out.checkpoint == "20240105"
    assert [c["trade_date"] for c in plugin.calls] == ["20240104", "20240105"]
    assert progress.current_task() is None


def test_single_run_gets_params_and_range() -> None:
    plugin = Recorder()
    out = run_task(PluginRegistry([plugin]),
                   task(task_type="full", start_date="20240101", end_date="20240131",
                        params={"ts_code": "000001.SZ"}), None)
    assert out.ok and out.records == 7
    assert plugin.calls == [{"ts_code": "000001.SZ", "start_date": "20240101",
                             "end_date": "20240131"}]


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        ("not a dict", "invalid_result"),
        ({"status": "failed", "error": "upstream said no"}, "plugin_error"),
        ({"status": "failed", "error": "x", "error_type": "schema_error"}, "schema_error"),
        ({"status": "partial"}, "plugin_error"),
    ],
)
def test_results_that_are_not_success_fail(result: Any, kind: str) -> None:
    out = run_task(PluginRegistry([Recorder(result=result)]), task(), None)
    assert not out.ok and out.error_type == kind


def test_unknown_plugin_is_not_a_crash() -> None:
    out = run_task(PluginRegistry([]), task(plugin_name="ghost"), None)
    assert not out.ok and out.error_type == "plugin_not_found" and "ghost" in out.error


@pytest.mark.parametrize(
    ("load", "records"),
    [
        ({"status": "success", "total_records": 40}, 40),
        ({"status": "success", "loaded_records": 365}, 365),  # most stock_datasource plugins
        ({"status": "success", "tables_loaded": [{"table": "a", "records": 3},
                                                 {"table": "b", "records": 4}]}, 7),
        ({"status": "no_data", "loaded_records": 0}, 0),
        ({"status": "success"}, 0),
        ("not a dict", 0),
    ],
)
def test_records_of_every_result_shape(load: Any, records: int) -> None:
    assert records_of({"status": "success", "steps": {"load": load}}) == records


def test_a_failures_cause_in_its_steps_is_kept() -> None:
    nested = {"status": "failed", "steps": {"extract": {"status": "success"},
                                            "load": {"status": "failed",
                                                     "error": "table missing"}}}
    assert failure_text(nested) == "load: table missing"
    invalid = {"status": "failed", "steps": {"validate": {"status": "failed"}}}
    assert failure_text(invalid) == "validate: failed"
    both = {"status": "failed", "error": "boom", "error_detail": "cause: x",
            "steps": {"load": {"status": "failed", "error": "boom"}}}
    assert failure_text(both) == "boom; cause: x"
    assert failure_text({"status": "partial"}) == "status 'partial'"


class Planned(Plugin):
    """Plans one call per key; the key named in ``fail_on`` fails once."""

    name = "planned"

    def __init__(self) -> None:
        self.fail_on = "b"
        self.calls: list[str] = []

    def plan_runs(self, task: progress.TaskContext) -> RunPlan:
        if task.params.get("nothing"):
            return RunPlan((), "nothing for this task")
        return RunPlan(tuple(RunCall(k, {"key": k}) for k in ("a", "b", "c")))

    def run(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params["key"])
        if params["key"] == self.fail_on:
            self.fail_on = ""
            return {"status": "failed", "steps": {"load": {"status": "failed",
                                                           "loaded_records": 5,
                                                           "error": "timed out"}}}
        return {"status": "success", "steps": {"load": {"loaded_records": 10}}}


def test_a_planned_task_resumes_after_its_checkpoint_keeping_its_count() -> None:
    plugin = Planned()
    reg = PluginRegistry([plugin])
    first = run_task(reg, task(plugin_name="planned"), None)
    # the failed call's partial load is not counted: the retry runs it again
    assert not first.ok and first.error_type == "network" and first.checkpoint == "a"
    assert first.records == 10 and first.error == "b: load: timed out"
    retry = run_task(reg, task(plugin_name="planned", checkpoint=first.checkpoint,
                               records_processed=first.records), None)
    assert retry.ok and retry.records == 30 and retry.checkpoint == "c"
    assert plugin.calls == ["a", "b", "b", "c"]
    empty = run_task(reg, task(plugin_name="planned", params={"nothing": True}), None)
    assert empty.ok and empty.records == 0
    assert empty.result["message"] == "nothing for this task"
