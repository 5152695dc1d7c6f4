"""Mode A (DESIGN §3): Redis is required.  Disabled or unreachable => a clear
RedisUnavailable (CLI exit 3), nothing created, no other path; a client recovers when
Redis comes back."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis

from app import queries
from app.errors import RedisUnavailable
from app.executions import BatchTask, create_execution
from app.models import Task, TaskSpec, TaskStatus
from app.queue import TaskQueue
from app.redis_client import create_client, ping
from app.settings import Settings, load_settings
from tests.redis_server import RedisServer, free_port

Op = Callable[[], Awaitable[Any]]


def spec(n: int = 0) -> TaskSpec:
    return TaskSpec.build("noop", params={"n": n})


# ------------------------------------------------------------------ disabled
@pytest.mark.parametrize(
    "settings_of",
    [
        lambda url: Settings(redis_url=url, redis_enabled=False),
        lambda url: load_settings({"STOCKQ_REDIS_URL": url, "STOCKQ_REDIS_ENABLED": "false"}),
        lambda url: load_settings({"STOCKQ_REDIS_URL": url, "REDIS_ENABLED": "false"}),
        lambda url: load_settings({"STOCKQ_REDIS_URL": url, "REDIS_ENABLED": "0"}),
    ],
    ids=["settings", "STOCKQ_REDIS_ENABLED", "legacy-REDIS_ENABLED", "legacy-0"],
)
def test_disabled_redis_refuses_to_create_a_client(
    settings_of: Callable[[str], Settings], redis_url: str
) -> None:
    settings = settings_of(redis_url)  # a live Redis: disabled must win anyway
    assert settings.redis_enabled is False
    with pytest.raises(RedisUnavailable) as info:
        create_client(settings)
    err = info.value
    assert "Redis" in err.message and "disabled" in err.message
    assert err.code == "redis_unavailable" and err.http_status == 503
    assert err.to_dict() == {"error": {"code": "redis_unavailable", "message": err.message}}


# ------------------------------------------------------------------ stopped server
@pytest.fixture
async def own_queue(own_redis: RedisServer) -> AsyncIterator[TaskQueue]:
    """A TaskQueue on the test's own server, with the production client settings."""
    settings = Settings(redis_url=own_redis.url, plugins=("plugins_bridge.examples:EXAMPLES",))
    client = create_client(settings)
    q = TaskQueue(client, settings)
    yield q
    await q.aclose()
    await client.aclose()


def dump_keyspace(url: str) -> dict[bytes, bytes]:
    """Every key with its serialized value (DUMP), to compare a keyspace byte for byte."""
    with redis.Redis.from_url(url) as r:
        return {k: r.dump(k) for k in r.keys("*")}


def operations(queue: TaskQueue, pending_id: str, cancelled_id: str) -> dict[str, Op]:
    """Every producer, supervisor and read entry point, bound to the given task ids."""
    held = Task.from_hash({"task_id": pending_id, "status": "running", "lease_token": "tok",
                           "attempt": "1", "plugin_name": "noop", "schema": "1"})
    return {
        "enqueue": lambda: queue.enqueue(spec(99)),
        "cancel": lambda: queue.cancel(pending_id),
        "retry": lambda: queue.retry(cancelled_id),
        "claim": lambda: queue.claim("w-1"),
        "get": lambda: queue.get(pending_id),
        # what a supervisor holding a task would call
        "progress": lambda: queue.progress(held, 50),
        "complete": lambda: queue.complete(held),
        "fail": lambda: queue.fail(held, "network", "down"),
        "requeue": lambda: queue.requeue(held),
        "renew": lambda: queue.renew({pending_id: "tok"}),
        "reap": lambda: queue.reap(),
        "cleanup": lambda: queue.cleanup(),
        "delete": lambda: queue.delete(cancelled_id),
        "ping": lambda: ping(queue.client, queue.settings),
        "stats": lambda: queries.queue_stats(queue),
        "list": lambda: queries.list_tasks(queue),
        "execution": lambda: create_execution(queue, [BatchTask(spec(7))]),
    }


async def assert_all_unavailable(ops: dict[str, Op], url: str) -> None:
    for name, op in ops.items():
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as info:
            await op()
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"{name} took {elapsed:.1f}s to fail"
        assert "Redis" in info.value.message, name
        assert url in info.value.message, name  # says which Redis (no password here)
        assert "unreachable" in info.value.message, name


async def test_stopped_redis_fails_fast_writes_nothing_and_the_client_recovers(
    own_redis: RedisServer, own_queue: TaskQueue
) -> None:
    queue = own_queue
    await ping(queue.client, queue.settings)  # the pool now holds a live connection
    assert await queue.client.dbsize() == 0

    own_redis.stop()
    ops = operations(queue, "00000000-0000-0000-0000-000000000001",
                     "00000000-0000-0000-0000-000000000002")
    await assert_all_unavailable(ops, own_redis.url)

    own_redis.start()  # same port, same (empty, unpersisted) data directory
    with redis.Redis.from_url(own_redis.url) as r:
        assert r.dbsize() == 0  # nothing was written anywhere

    # the very same client (and its registered scripts) works again
    tid, created = await queue.enqueue(spec(1))
    assert created
    task = await queue.claim("w-1")
    assert task is not None and task.task_id == tid and task.attempt == 1
    await queue.complete(task)
    assert (await queue.get(tid)).status == TaskStatus.COMPLETED


async def test_stopped_redis_leaves_existing_state_untouched(
    own_redis: RedisServer, own_queue: TaskQueue
) -> None:
    """With data in Redis (saved to disk so it survives the restart), failed calls
    against the stopped server change nothing: the keyspace is identical afterwards."""
    queue = own_queue
    pending, _ = await queue.enqueue(spec(1))
    cancelled, _ = await queue.enqueue(spec(2))
    assert await queue.cancel(cancelled) == "cancelled"
    with redis.Redis.from_url(own_redis.url) as r:
        r.save()
    before = dump_keyspace(own_redis.url)
    assert len(before) > 5

    own_redis.stop()
    await assert_all_unavailable(operations(queue, pending, cancelled), own_redis.url)
    own_redis.start()

    assert dump_keyspace(own_redis.url) == before
    # and the same client carries on from the persisted state
    new_id = await queue.retry(cancelled)
    assert (await queue.get(new_id)).retry_of == cancelled
    claimed = await queue.claim("w")
    assert claimed is not None and claimed.task_id == pending


async def test_unreachable_url_names_redis_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    settings = Settings(redis_url=url)
    client = create_client(settings)
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as info:
            async with TaskQueue(client, settings) as q:
                await q.enqueue(spec())
        assert time.monotonic() - started < 5
    finally:
        await client.aclose()
    assert "Redis" in info.value.message
    assert "hunter2" not in info.value.message and ":***@127.0.0.1" in info.value.message


# ------------------------------------------------------------------ CLI
def run_cli(cmd: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=60)


def assert_redis_error(proc: subprocess.CompletedProcess[str], *must: str) -> None:
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Redis" in lines[0]
    for text in must:
        assert text in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""


def db_size(url: str) -> int:
    with redis.Redis.from_url(url) as r:
        return int(r.dbsize())


def test_cli_submit_with_unreachable_redis(stockq_cmd: list[str], cli_env: dict[str, str]
                                           ) -> None:
    port = free_port()
    env = {**cli_env, "STOCKQ_REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"}
    started = time.monotonic()
    proc = run_cli(stockq_cmd, env, "submit", "noop")
    assert time.monotonic() - started < 5
    assert_redis_error(proc, "unreachable", f"127.0.0.1:{port}")
    assert "hunter2" not in proc.stdout + proc.stderr


def test_cli_with_wrong_or_missing_password(stockq_cmd: list[str], cli_env: dict[str, str],
                                            own_redis: RedisServer) -> None:
    with redis.Redis.from_url(own_redis.url) as r:
        r.config_set("requirepass", "right-one")
    base = f"127.0.0.1:{own_redis.port}/0"
    for url in (f"redis://{base}", f"redis://:wrong-one@{base}"):
        proc = run_cli(stockq_cmd, {**cli_env, "STOCKQ_REDIS_URL": url}, "submit", "noop")
        assert_redis_error(proc, base)
        assert "wrong-one" not in proc.stderr
    good = {**cli_env, "STOCKQ_REDIS_URL": f"redis://:right-one@{base}"}
    proc = run_cli(stockq_cmd, good, "submit", "noop")
    assert proc.returncode == 0, proc.stderr
    assert "right-one" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "extra",
    [{"STOCKQ_REDIS_ENABLED": "false"}, {"REDIS_ENABLED": "false"}],
    ids=["STOCKQ_REDIS_ENABLED", "legacy-REDIS_ENABLED"],
)
def test_cli_submit_with_redis_disabled(stockq_cmd: list[str], cli_env: dict[str, str],
                                        redis_url: str, extra: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "REDIS_ENABLED"} | extra
    proc = run_cli(stockq_cmd, env, "submit", "noop", "--json")
    assert_redis_error(proc, "disabled")
    assert db_size(redis_url) == 0  # the test Redis is up, yet nothing was created


@pytest.mark.parametrize(
    "args",
    [["status", "x"], ["cancel", "x"], ["retry", "x"], ["tasks"], ["stats", "--json"]],
    ids=lambda a: a[0],
)
def test_cli_every_command_needs_redis(stockq_cmd: list[str], cli_env: dict[str, str],
                                       redis_url: str, args: list[str]) -> None:
    proc = run_cli(stockq_cmd, {**cli_env, "STOCKQ_REDIS_ENABLED": "off"}, *args)
    assert_redis_error(proc, "disabled")
    assert db_size(redis_url) == 0


def test_cli_enabled_flag_overrides_legacy(stockq_cmd: list[str], cli_env: dict[str, str],
                                           redis_url: str) -> None:
    env = {**cli_env, "STOCKQ_REDIS_ENABLED": "true", "REDIS_ENABLED": "false"}
    proc = run_cli(stockq_cmd, env, "submit", "noop")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("submitted ")
    assert db_size(redis_url) > 0

