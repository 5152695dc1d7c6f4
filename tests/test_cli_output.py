"""Output people can read: one-shot commands print only their answer (no log line
without -v) and the library prints nothing; one time convention (tables in the
configured zone with its offset, JSON ISO 8601 with the offset, no epoch in /health);
``stockq workers`` and ``stockq executions``; ``--version``; every option has help and
every command's help ends with an example."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from app.cli import build_parser
from app.executions import BatchTask, create_execution
from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from tests.conftest import EXAMPLES, ROOT
from tests.test_api_health import get_health, sidecar
from tests.workers import WorkerProcess, wait_until, worker_env

pytestmark = pytest.mark.timeout(120)
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def stockq(env: dict[str, str], *args: str, code: int = 0
           ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    return proc


def test_one_shot_commands_print_only_their_answer(cli_env: dict[str, str]) -> None:
    submitted = stockq(cli_env, "submit", "noop", "--json")
    task_id = json.loads(submitted.stdout)["task_id"]
    outputs = [submitted,
               stockq(cli_env, "submit", "noop", "--param", "n=1"),
               stockq(cli_env, "status", task_id),
               stockq(cli_env, "tasks"),
               stockq(cli_env, "stats"),
               stockq(cli_env, "cancel", task_id),
               stockq(cli_env, "retry", task_id),
               stockq(cli_env, "executions", "list"),
               stockq(cli_env, "workers")]
    for proc in outputs:
        assert proc.stderr == "", (proc.args, proc.stderr)
        assert proc.stdout.strip()
    verbose = stockq(cli_env, "-v", "submit", "noop", "--param", "n=2")
    assert [json.loads(ln)["event"] for ln in verbose.stderr.splitlines()] == ["task.enqueued"]
    assert verbose.stdout.startswith("submitted ")


def test_the_producer_as_a_library_prints_nothing_unless_logging_is_configured(
    redis_url: str
) -> None:
    code = ("from app.producer import Producer\n"
            "from app.models import TaskSpec\n"
            "from app.settings import Settings\n"
            "import sys, logging\n"
            "if sys.argv[2] == 'logging': logging.basicConfig(level=logging.INFO)\n"
            "with Producer(Settings(redis_url=sys.argv[1])) as p:\n"
            "    p.enqueue(TaskSpec.build('noop', params={'n': sys.argv[2]}))\n"
            "    p.cancel(p.enqueue(TaskSpec.build('noop'))[0])\n")
    quiet = subprocess.run([sys.executable, "-c", code, redis_url, "plain"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == quiet.stderr == ""
    told = subprocess.run([sys.executable, "-c", code, redis_url, "logging"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert told.stdout == ""
    assert "INFO:stockq.queue:task.enqueued task_id=" in told.stderr  # the application's
    assert "task.cancelled" in told.stderr


async def test_one_time_convention(queue: TaskQueue, cli_env: dict[str, str],
                                   settings: Settings) -> None:
    """The fake clock is 2026-01-01T00:00Z: 08:00 in Asia/Shanghai."""
    tid, _ = await queue.enqueue(TaskSpec.build("noop"))
    status = stockq(cli_env, "status", tid).stdout
    assert re.search(r"^created_at\s+2026-01-01 08:00:00\+08:00$", status, re.M)
    as_json = json.loads(stockq(cli_env, "status", tid, "--json").stdout)
    assert as_json["created_at"] == "2026-01-01T00:00:00+00:00"
    other_zone = {**cli_env, "STOCKQ_TIMEZONE": "Europe/Paris"}
    assert "2026-01-01 01:00:00+01:00" in stockq(other_zone, "tasks").stdout


async def test_health_has_no_epoch_strings(redis_url: str, tmp_path: Path,
                                          settings: Settings) -> None:
    env = worker_env(redis_url, STOCKQ_PLUGINS=EXAMPLES)
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "1")
    try:
        worker.wait_started()
        async with sidecar(settings) as http:
            status, body = await get_health(http)
        assert status == 200 and body["workers"]["live"] == 1

        def strings(value: Any) -> list[str]:
            if isinstance(value, dict):
                return [s for v in value.values() for s in strings(v)]
            if isinstance(value, list):
                return [s for v in value for s in strings(v)]
            return [value] if isinstance(value, str) else []

        assert not [s for s in strings(body) if re.fullmatch(r"\d{9,}(\.\d+)?", s)]
        [item] = body["workers"]["items"]
        assert ISO_WITH_OFFSET.match(item["started_at"]), item
        assert item["plugins"] == ["fail", "noop", "sleep"] and item["queues"] == ["default"]
    finally:
        assert worker.stop() == 0


def test_workers_shows_each_pool_and_what_it_runs(redis_url: str, tmp_path: Path) -> None:
    env = worker_env(redis_url, STOCKQ_PLUGINS=EXAMPLES)
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "2")
    try:
        worker.wait_started()
        task_id = json.loads(stockq(env, "submit", "sleep", "--param-json", "seconds=30",
                                    "--json").stdout)["task_id"]
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        wait_until(lambda: r.hget(f"stock:task:{task_id}", "status") == "running", 30,
                   "the sleep task running")
        header, _, row, *rest = stockq(env, "workers").stdout.splitlines()
        assert re.split(r"\s{2,}", header) == ["HOST", "PID", "SLOTS", "PLUGINS", "QUEUES",
                                               "RUNNING", "LAST HEARTBEAT"]
        cells = re.split(r"\s{2,}", row)
        assert cells[1:6] == [str(worker.pid), "2", "fail, noop, sleep", "default",
                              f"{task_id[:8]} sleep"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+08:00 \(\d+ s ago\)", cells[6])
        assert rest == ["schedulers: 0 live", "sidecars: 0 live"]
        data = json.loads(stockq(env, "workers", "--json").stdout)
        [w] = data["workers"]
        assert w["pid"] == worker.pid and w["running_tasks"] == [
            {"task_id": task_id, "plugin": "sleep"}]
        assert ISO_WITH_OFFSET.match(w["last_heartbeat"])
        stockq(env, "cancel", task_id)
    finally:
        assert worker.stop() == 0


async def test_executions_list_show_retry_cancel(queue: TaskQueue, client: aioredis.Redis,
                                                 cli_env: dict[str, str]) -> None:
    eid, (a, b) = await create_execution(
        queue, [BatchTask(TaskSpec.build("fail")), BatchTask(TaskSpec.build("noop"), (0,))],
        trigger_type="cli", group_name="pair")
    t = await queue.claim("w")
    assert t is not None and t.task_id == a
    await queue.fail(t, "plugin_error", "failed on purpose")  # b: upstream_failed
    header, _, row = stockq(cli_env, "executions", "list").stdout.splitlines()
    assert re.split(r"\s{2,}", header) == ["EXECUTION ID", "STATUS", "TRIGGER", "GROUP",
                                           "DONE", "FAILED", "CANCELLED", "TOTAL", "CREATED",
                                           "ENDED"]
    assert re.split(r"\s{2,}", row)[:8] == [eid, "failed", "cli", "pair", "0", "1", "1", "2"]
    assert "+08:00" in row
    assert stockq(cli_env, "executions", "list", "--status", "running").stdout.strip() == \
        "no executions"
    shown = stockq(cli_env, "executions", "show", eid).stdout
    assert f"execution  {eid}" in shown and "1 failed, 1 cancelled" in shown
    assert f"{a} fail: [plugin_error] failed on purpose" in shown
    assert json.loads(stockq(cli_env, "executions", "show", eid, "--json").stdout)[
        "task_ids"] == [a, b]
    retried = stockq(cli_env, "executions", "retry", eid).stdout
    assert retried.startswith(f"retrying 2 task(s) of execution {eid}: ")
    cancelled = stockq(cli_env, "executions", "cancel", eid).stdout.strip()
    # the retried fail task is cancelled, and its dependent with it (upstream_failed)
    assert cancelled == f"execution {eid}: 1 cancelled, 0 running told to stop, 3 already ended"
    again = stockq(cli_env, "executions", "cancel", eid, code=1)
    assert "has no active task to cancel" in again.stderr
    missing = stockq(cli_env, "executions", "show", "no-such-execution", code=4)
    assert missing.stderr.startswith("stockq: ")
    bad = stockq(cli_env, "executions", "list", "--status", "bogus", code=2)
    assert "invalid choice: 'bogus'" in bad.stderr


def test_version_help_and_examples(cli_env: dict[str, str]) -> None:
    version = stockq(cli_env, "--version").stdout.strip()
    assert re.fullmatch(r"stockq \d+\.\d+\.\d+.*", version)
    top = stockq(cli_env, "--help").stdout
    assert "``" not in top and ":class:" not in top  # no reStructuredText markup
    assert top.splitlines()[2].startswith("stockq keeps a ClickHouse warehouse")
    parser = build_parser()

    def commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()
                 ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
        out = [(path, p)]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    out += commands(child, (*path, name))
        return out

    every = commands(parser)
    assert len(every) >= 25
    for path, p in every:
        missing = [a.option_strings or a.dest for a in p._actions
                   if not isinstance(a, argparse._HelpAction) and not a.help]
        assert not missing, (path, missing)
        lines = p.format_help().rstrip().splitlines()
        assert lines[-2] == "example:" or lines[-3] == "example:", (path, lines[-3:])
        assert lines[-1].strip().startswith("stockq"), (path, lines[-1])
    # what the help shows is what runs: `stockq tasks --help` through the real entry
    assert stockq(cli_env, "tasks", "--help").stdout.rstrip().endswith(
        "stockq tasks --status failed --limit 20")
