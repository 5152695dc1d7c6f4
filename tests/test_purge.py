"""``stockq purge`` as an operator runs it: a queue's waiting tasks, the ended tasks, a
whole namespace; each asks first, and a namespace in use is refused."""

from __future__ import annotations

import subprocess
import sys

import redis.asyncio as aioredis

from app.executions import BatchTask, create_execution
from app.models import TaskSpec, TaskStatus
from app.queue import TaskQueue
from tests.conftest import ROOT


def stockq(env: dict[str, str], *args: str, code: int = 0, stdin: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, input=stdin)
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


async def test_purge_queue_cancels_waiting_tasks_of_that_queue_only(
    queue: TaskQueue, client: aioredis.Redis, cli_env: dict[str, str]
) -> None:
    pending, _ = await queue.enqueue(TaskSpec.build("noop", params={"n": 1}))
    heavy, _ = await queue.enqueue(TaskSpec.build("noop", params={"n": 2}, queue="heavy"))
    running, _ = await queue.enqueue(TaskSpec.build("sleep"))
    retrying, _ = await queue.enqueue(TaskSpec.build("noop", params={"n": 3}))
    claimed = [await queue.claim("w") for _ in range(4)]
    by_id = {t.task_id: t for t in claimed if t is not None}
    await queue.fail(by_id[retrying], "network", "reset")  # now retrying
    for tid in (pending, heavy):  # back to pending through a parking worker
        await queue.requeue(by_id[tid])
    eid, (first, second) = await create_execution(queue, [
        BatchTask(TaskSpec.build("noop", params={"n": 4})),
        BatchTask(TaskSpec.build("noop", params={"n": 5}, queue="heavy"), (0,))])
    # a task the original producer pushed (in no index)
    await client.hset("stock:task:legacy-1", mapping={  # type: ignore[misc]
        "task_id": "legacy-1", "plugin_name": "noop", "status": "pending", "priority": "1"})
    await client.lpush("stock:task_queue:1", "legacy-1")  # type: ignore[misc]

    refused = stockq(cli_env, "purge", "queue", "default", code=2)  # no terminal, no --yes
    assert "confirm with --yes" in refused.stderr
    assert (await queue.get(pending)).status == TaskStatus.PENDING

    out = stockq(cli_env, "purge", "queue", "default", "--yes").stdout
    assert out.startswith("cancelled 4 waiting tasks of queue 'default'")
    for tid in (pending, retrying, first, "legacy-1"):
        t = await queue.get(tid)
        assert t.status == TaskStatus.CANCELLED and t.last_error_type == "purged", tid
    assert (await queue.get(second)).last_error_type == "upstream_failed"  # waited on first
    assert (await queue.get(heavy)).status == TaskStatus.PENDING  # another queue
    assert (await queue.get(running)).status == TaskStatus.RUNNING  # not waiting
    assert await client.lrange("stock:task_queue:1", 0, -1) == [heavy]  # type: ignore[misc]
    assert await client.zcard("stock:delayed") == 0

    stockq(cli_env, "purge", "queue", "--yes")  # every queue
    assert (await queue.get(heavy)).status == TaskStatus.CANCELLED
    assert await client.exists("stock:task_queue:1") == 0


async def test_purge_finished_deletes_ended_tasks_and_executions(
    queue: TaskQueue, client: aioredis.Redis, cli_env: dict[str, str]
) -> None:
    done, _ = await queue.enqueue(TaskSpec.build("noop"))
    t = await queue.claim("w")
    assert t is not None
    await queue.complete(t)
    eid, (a,) = await create_execution(queue, [BatchTask(TaskSpec.build("sleep"))])
    await queue.cancel(a)
    waiting, _ = await queue.enqueue(TaskSpec.build("noop", params={"n": 1}))
    out = stockq(cli_env, "purge", "finished", "--yes").stdout
    assert out.startswith("deleted 2 ended tasks and 1 executions")
    assert await client.exists(f"stock:task:{done}", f"stock:task:{a}",
                               f"stock:execution:{eid}", f"stock:execution:{eid}:tasks") == 0
    assert (await queue.get(waiting)).status == TaskStatus.PENDING


async def test_purge_namespace_deletes_its_keys_only_and_refuses_one_in_use(
    queue: TaskQueue, client: aioredis.Redis, cli_env: dict[str, str]
) -> None:
    await queue.enqueue(TaskSpec.build("noop"))
    await client.set("demo:task:x", "1")
    await client.set("demo2:task:y", "1")
    await client.set("unrelated", "1")
    async with TaskQueue(client, queue.settings) as now:  # the real clock: alive now
        await now.heartbeat("host:1:abc", {"host": "host", "pid": 1}, ttl=15)
    refused = stockq(cli_env, "purge", "namespace", "--yes", code=1)
    assert "namespace 'stock' is in use by 1 live process(es) (worker host:1:abc)" in \
        refused.stderr
    declined = stockq(cli_env, "purge", "namespace", "demo", stdin="n\n", code=2)
    assert "confirm with --yes" in declined.stderr  # stdin is no terminal
    out = stockq(cli_env, "purge", "namespace", "demo", "--yes").stdout
    assert out.strip() == "deleted 1 keys of namespace 'demo'"
    assert sorted(k for k in await client.keys("*") if not k.startswith("stock:")) == [
        "demo2:task:y", "unrelated"]
    stockq(cli_env, "purge", "namespace", "stock", "--yes", "--force")
    assert not [k for k in await client.keys("*") if k.startswith("stock:")]
    bad = stockq(cli_env, "purge", "namespace", "a*b", "--yes", code=2)
    assert "must be 1-64 letters" in bad.stderr
