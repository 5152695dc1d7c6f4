"""The ``stockq`` command line, run as a subprocess against the test Redis."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis

from app.models import TaskSpec
from app.queue import TaskQueue
from tests.conftest import FakeClock


class Cli(Protocol):
    def __call__(self, *args: str, code: int = 0,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def cli(stockq_cmd: list[str], cli_env: dict[str, str]) -> Cli:
    def run(*args: str, code: int = 0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*stockq_cmd, *args], env={**cli_env, **(env or {})},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr
        return proc

    return run


def message(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed command (stderr also carries JSON log lines)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("stockq: ")
    return lines[0]


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


def db_keys(url: str) -> list[str]:
    with redis.Redis.from_url(url, decode_responses=True) as r:
        return sorted(r.keys("*"))


def task_hash(url: str, task_id: str) -> dict[str, str]:
    with redis.Redis.from_url(url, decode_responses=True) as r:
        return dict(r.hgetall(f"stock:task:{task_id}"))


# ------------------------------------------------------------------ submit
def test_submit_json_and_duplicate(cli: Cli, redis_url: str) -> None:
    first = as_json(cli("submit", "noop", "--json"))
    tid = first["task_id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", tid)
    assert first["status"] == "pending" and first["created"] is True
    assert first["plugin_name"] == "noop" and first["attempt"] == 0
    assert first["trigger"] == "cli" and first["priority_name"] == "normal"
    assert "lease_token" not in first

    again = as_json(cli("submit", "noop", "--json"))
    assert again["task_id"] == tid and again["created"] is False
    assert again["status"] == "pending"
    text = cli("submit", "noop").stdout
    assert text.strip() == f"already queued: {tid} is pending with the same work"

    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        assert r.lrange("stock:task_queue:1", 0, -1) == [tid]  # queued once
        assert r.zcard("stock:index:all") == 1
        assert r.hget("stock:stats", "enqueued") == "1"


def test_submit_text_output_names_the_new_task(cli: Cli, redis_url: str) -> None:
    out = cli("submit", "sleep", "--type", "full").stdout.strip()
    m = re.fullmatch(r"submitted ([0-9a-f-]{36}) \(sleep, full\)", out)
    assert m is not None, out
    assert task_hash(redis_url, m.group(1))["task_type"] == "full"


def test_submit_options_end_up_in_the_task(cli: Cli, redis_url: str) -> None:
    tid = as_json(cli(
        "submit", "noop", "--type", "backfill",
        "--date", "20240103", "--date", "2024-01-02", "--date", "20240103",
        "--start", "2024-01-01", "--end", "20240131",
        "--priority", "high", "--timeout", "60", "--max-attempts", "5",
        "--param", "k=v", "--param", "expr=a=b", "--param", "empty=",
        "--param-json", "n=3", "--param-json", 'flags={"a": [1, true, null]}',
        "--json",
    ))["task_id"]

    status = as_json(cli("status", tid, "--json"))
    assert status["task_id"] == tid
    assert status["task_type"] == "backfill"
    assert status["trade_dates"] == ["20240102", "20240103"]  # normalised, sorted, unique
    assert (status["start_date"], status["end_date"]) == ("20240101", "20240131")
    assert status["priority"] == 0 and status["priority_name"] == "high"
    assert status["timeout_seconds"] == 60 and status["max_attempts"] == 5
    assert status["params"] == {"k": "v", "expr": "a=b", "empty": "", "n": 3,
                                "flags": {"a": [1, True, None]}}

    raw = task_hash(redis_url, tid)  # what other readers of the hash see
    assert json.loads(raw["trade_dates"]) == ["20240102", "20240103"]
    assert raw["priority"] == "0" and raw["timeout_seconds"] == "60"
    assert raw["max_attempts"] == "5" and raw["trigger"] == "cli"
    assert json.loads(raw["params"])["n"] == 3
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        assert r.lrange("stock:task_queue:0", 0, -1) == [tid]


def test_submit_uses_plugin_then_settings_defaults(cli: Cli) -> None:
    failing = as_json(cli("submit", "fail", "--json"))
    assert failing["max_attempts"] == 1  # FailPlugin.default_max_attempts
    assert failing["timeout_seconds"] == 3600
    noop = as_json(cli("submit", "noop", "--json",
                       env={"STOCKQ_DEFAULT_MAX_ATTEMPTS": "4", "STOCKQ_DEFAULT_TIMEOUT": "90"}))
    assert noop["max_attempts"] == 4 and noop["timeout_seconds"] == 90
    explicit = as_json(cli("submit", "fail", "--max-attempts", "2", "--param", "x=1", "--json"))
    assert explicit["max_attempts"] == 2


def test_unknown_plugin_lists_the_known_ones(cli: Cli, redis_url: str) -> None:
    proc = cli("submit", "nope", code=2)
    line = message(proc)
    assert "unknown plugin 'nope'" in line
    assert "fail, noop, sleep" in line
    assert proc.stdout == ""
    assert db_keys(redis_url) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--date", "20240231"], "20240231"),
        (["--date", "2024-13-01"], "2024-13-01"),
        (["--start", "20240201", "--end", "20240101"], "after"),
        (["--priority", "urgent"], "priority"),
        (["--max-attempts", "99"], "max_attempts"),
        (["--timeout", "0"], "timeout_seconds"),
    ],
    ids=["feb-31", "month-13", "start-after-end", "priority", "attempts", "timeout"],
)
def test_invalid_submissions_exit_2_and_create_nothing(
    cli: Cli, redis_url: str, args: list[str], needle: str
) -> None:
    proc = cli("submit", "noop", *args, code=2)
    assert needle in message(proc)
    assert db_keys(redis_url) == []


@pytest.mark.parametrize(
    "args",
    [["--param", "novalue"], ["--param-json", "k={bad"], ["--type", "weird"],
     ["--timeout", "soon"]],
    ids=["param", "param-json", "type", "timeout"],
)
def test_malformed_arguments_are_usage_errors(cli: Cli, redis_url: str, args: list[str]) -> None:
    proc = cli("submit", "noop", *args, code=2)
    assert "usage: stockq submit" in proc.stderr
    assert db_keys(redis_url) == []


# ------------------------------------------------------------------ status
def test_status_text_and_unknown_id(cli: Cli) -> None:
    tid = as_json(cli("submit", "noop", "--date", "20240102", "--json"))["task_id"]
    text = cli("status", tid).stdout
    fields, _, waiting = text.partition("\n\n")
    rows = dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in fields.splitlines())
    assert waiting.strip() == "waiting: no live worker: start `stockq worker` (or `stockq run`)"
    assert rows["task_id"] == tid
    assert rows["status"] == "pending"
    assert rows["plugin_name"] == "noop"
    assert rows["trade_dates"] == '["20240102"]'
    assert "lease_token" not in rows

    missing = "00000000-0000-0000-0000-00000000dead"
    proc = cli("status", missing, code=4)
    assert missing in message(proc) and "does not exist" in message(proc)
    cli("status", missing, "--json", code=4)


# ------------------------------------------------------------------ cancel / retry
def test_cancel_pending_then_again(cli: Cli, redis_url: str) -> None:
    tid = as_json(cli("submit", "noop", "--json"))["task_id"]
    assert cli("cancel", tid).stdout.strip() == f"cancelled {tid}"
    status = as_json(cli("status", tid, "--json"))
    assert status["status"] == "cancelled" and status["completed_at"]
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        assert r.llen("stock:task_queue:1") == 0

    again = cli("cancel", tid, code=1)
    assert "already cancelled" in message(again)
    cli("cancel", "00000000-0000-0000-0000-000000000000", code=4)


async def test_cancel_running_and_completed(cli: Cli, queue: TaskQueue) -> None:
    running, _ = await queue.enqueue(TaskSpec.build("noop", params={"n": 1}))
    done, _ = await queue.enqueue(TaskSpec.build("noop", params={"n": 2}))
    held = await queue.claim("w-1")
    assert held is not None and held.task_id == running
    finished = await queue.claim("w-1")
    assert finished is not None and finished.task_id == done
    await queue.complete(finished)

    out = cli("cancel", running).stdout
    assert "cancel requested" in out and running in out
    assert (await queue.get(running)).cancel_requested
    assert as_json(cli("status", running, "--json"))["status"] == "running"

    proc = cli("cancel", done, code=1)
    assert "already completed" in message(proc)


async def test_retry_cancelled_task(cli: Cli, queue: TaskQueue) -> None:
    old = as_json(cli("submit", "noop", "--priority", "low", "--param", "a=1", "--json"))
    cli("cancel", old["task_id"])
    out = cli("retry", old["task_id"]).stdout.strip()
    m = re.fullmatch(rf"retrying {old['task_id']} as new task ([0-9a-f-]{{36}})", out)
    assert m is not None, out
    new_id = m.group(1)
    assert new_id != old["task_id"]

    new = as_json(cli("status", new_id, "--json"))
    assert new["status"] == "pending" and new["retry_of"] == old["task_id"]
    assert new["trigger"] == "retry" and new["params"] == {"a": "1"}
    assert new["priority_name"] == "low" and new["attempt"] == 0
    assert as_json(cli("status", old["task_id"], "--json"))["retried_by"] == new_id

    again = cli("retry", old["task_id"], code=1)
    assert f"already retried as {new_id}" in message(again)
    pending = cli("retry", new_id, code=1)
    assert "only failed or cancelled" in message(pending)
    cli("retry", "00000000-0000-0000-0000-000000000000", code=4)

    # a failed task, retried with --json
    failed, _ = await queue.enqueue(TaskSpec.build("fail", max_attempts=1))
    t = await queue.claim("w")
    assert t is not None and t.task_id == failed
    await queue.fail(t, "plugin_error", "boom")
    data = as_json(cli("retry", failed, "--json"))
    assert data["retry_of"] == failed and data["status"] == "pending"
    assert data["plugin_name"] == "fail"


# ------------------------------------------------------------------ tasks / stats
async def seed(queue: TaskQueue, clock: FakeClock) -> dict[str, str]:
    """Five tasks, one second apart: two high, one normal, one low (cancelled), one
    running."""
    ids: dict[str, str] = {}
    for name, plugin, prio in (("high1", "noop", "high"), ("high2", "sleep", "high"),
                               ("normal", "noop", "normal"), ("low", "noop", "low"),
                               ("run", "sleep", "normal")):
        ids[name], _ = await queue.enqueue(TaskSpec.build(plugin, params={"id": name},
                                                          priority=prio))
        clock.advance(1)
    await queue.cancel(ids["low"])
    # claim until the "run" task is running, putting the others back in line
    held = []
    while (t := await queue.claim("w")) is not None and t.task_id != ids["run"]:
        held.append(t)
    for t in held:
        await queue.requeue(t)
    return ids


async def test_tasks_lists_newest_first_with_filters_and_pages(
    cli: Cli, queue: TaskQueue, clock: FakeClock
) -> None:
    assert cli("tasks").stdout.strip() == "no tasks"
    ids = await seed(queue, clock)
    header, rule, *lines = cli("tasks").stdout.rstrip().splitlines()
    assert re.split(r"\s{2,}", header) == ["TASK ID", "STATUS", "PLUGIN", "TYPE", "PROGRESS",
                                           "ATTEMPT", "CREATED", "ERROR"]
    assert set(rule.replace(" ", "")) == {"-"}
    starts = [header.index(c) for c in ("STATUS", "PLUGIN", "CREATED")]
    for line in lines:  # aligned columns: every value starts under its heading
        assert all(line[i - 2:i] == "  " and line[i] != " " for i in starts), line
    order = ["run", "low", "normal", "high2", "high1"]
    assert [ln.split()[0] for ln in lines] == [ids[n] for n in order]
    by_id = {ln.split()[0]: re.split(r"\s{2,}", ln) for ln in lines}
    assert by_id[ids["run"]][1:3] == ["running", "sleep"]
    assert by_id[ids["low"]][1] == "cancelled" and by_id[ids["low"]][7] == "cancelled"
    assert by_id[ids["high1"]][1:4] == ["pending", "noop", "incremental"]
    assert by_id[ids["run"]][5] == "1/3"  # the running one; requeued ones gave theirs back
    # times in the configured zone with its offset (the clock is 2026-01-01T00:00Z)
    assert by_id[ids["high1"]][6] == "2026-01-01 08:00:00+08:00"

    cancelled = cli("tasks", "--status", "cancelled").stdout.strip().splitlines()[2:]
    assert [ln.split()[0] for ln in cancelled] == [ids["low"]]
    sleepers = cli("tasks", "--plugin", "sleep", "--json")
    assert [t["task_id"] for t in as_json(sleepers)["items"]] == [ids["run"], ids["high2"]]

    page1 = cli("tasks", "--limit", "2").stdout.strip().splitlines()[2:]
    assert [ln.split()[0] for ln in page1[:2]] == [ids["run"], ids["low"]]
    assert page1[2].startswith("more: --cursor ")
    cursor = page1[2].split()[-1]
    page2 = as_json(cli("tasks", "--limit", "3", "--cursor", cursor, "--json"))
    assert [t["task_id"] for t in page2["items"]] == [ids[n] for n in order[2:]]
    # a full page carries a cursor; following it past the end gives an empty page
    assert page2["next_cursor"] is not None
    last = cli("tasks", "--limit", "3", "--cursor", page2["next_cursor"]).stdout.strip()
    assert last == "no tasks"

    assert "status 'bogus'" in message(cli("tasks", "--status", "bogus", code=2))
    assert "limit" in message(cli("tasks", "--limit", "0", code=2))


async def test_stats_text_and_json(cli: Cli, queue: TaskQueue, clock: FakeClock) -> None:
    await seed(queue, clock)
    text = cli("stats").stdout.splitlines()
    assert text[0].split() == ["ready", "high", "2", "normal", "1", "low", "0"]
    assert text[1].split() == ["delayed", "0"]
    assert text[2].split() == ["running", "1"]
    assert text[3].split() == ["by", "status", "pending", "3", "running", "1", "retrying", "0",
                               "completed", "0", "failed", "0", "cancelled", "1"]
    assert text[4].split() == ["executions", "0"]

    data = as_json(cli("stats", "--json"))
    assert data["ready"] == {"0": 2, "1": 1, "2": 0} and data["ready_total"] == 3
    assert data["running"] == data["leased"] == 1
    assert data["by_status"]["cancelled"] == 1
    assert data["counters"]["enqueued"] == 5
    assert data["counters"]["cancelled"] == data["counters"]["cancelled:noop"] == 1


# ------------------------------------------------------------------ run, config, entry
def test_run_says_what_is_missing_and_needs_redis(cli: Cli) -> None:
    proc = cli("run", code=3, env={"STOCKQ_REDIS_ENABLED": "false"})
    assert proc.stdout == ""
    assert "starting the sidecar, the scheduler, a worker pool" in proc.stderr
    assert "Redis is disabled" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"STOCKQ_REDIS_ENABLED": "maybe"}, "STOCKQ_REDIS_ENABLED"),
        ({"STOCKQ_PLUGINS": "not-a-spec"}, "module:attr"),
        ({"STOCKQ_PLUGINS": "no_such_module_xyz:P"}, "no_such_module_xyz"),
        ({"STOCKQ_REDIS_URL": "http://127.0.0.1:1/0"}, "redis://"),
        ({"STOCKQ_REDIS_URL": "redis://:pw@127.0.0.1:notaport/0"}, "malformed"),
        ({"STOCKQ_LEASE_SECONDS": "soon"}, "STOCKQ_LEASE_SECONDS"),
    ],
    ids=["bool", "plugin-spec", "plugin-module", "scheme", "port", "number"],
)
def test_configuration_errors_exit_5(cli: Cli, redis_url: str, env: dict[str, str],
                                     needle: str) -> None:
    proc = cli("submit", "noop", code=5, env=env)
    line = message(proc)
    assert needle in line
    assert "pw@" not in line
    assert db_keys(redis_url) == []


def test_console_script_and_help(cli: Cli, cli_env: dict[str, str]) -> None:
    help_text = cli("--help").stdout
    for command in ("submit", "status", "cancel", "retry", "tasks", "stats", "run"):
        assert command in help_text
    cli(code=2)  # a command is required

    exe = shutil.which("stockq", path=str(Path(sys.executable).parent))
    assert exe is not None, "the stockq console script is not installed"
    proc = subprocess.run([exe, "stats", "--json"], env=cli_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ready_total"] == 0


