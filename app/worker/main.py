"""``stockq worker``: start a pool supervisor in this process."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.errors import RedisUnavailable
from app.logs import get_logger
from app.queue import TaskQueue
from app.redis_client import create_client, ping
from app.settings import Settings, scrub_proxy_environment
from app.worker.forks import ForkServer
from app.worker.forkserver_launch import Launched
from app.worker.procs import become_subreaper
from app.worker.supervisor import PoolOptions, Supervisor
from plugins_bridge.warehouse import open_warehouse

log = get_logger("stockq.worker")


async def wait_for_redis(settings: Settings, *, wait: bool,
                         client: aioredis.Redis | None = None) -> None:
    """Fail fast (RedisUnavailable) unless ``wait``: then retry with backoff.
    ``client``: ping with this one (left open), else with one of its own."""
    own = client is None
    pinging = create_client(settings) if client is None else client
    delay = 0.5
    try:
        while True:
            try:
                await ping(pinging, settings)
                return
            except RedisUnavailable as exc:
                if not wait:
                    raise
                log.warning("worker.waiting_for_redis", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
    finally:
        if own:
            await pinging.aclose()


async def run_worker(settings: Settings, options: PoolOptions, *, wait: bool = False,
                     worker_id: str | None = None,
                     forks: Launched | None = None
                     ) -> int:
    """Run a pool; ``forks`` is its fork server if ``stockq worker`` launched it
    already (app/worker/forkserver_launch.py), with ``worker_id`` the pool's id."""
    removed = scrub_proxy_environment()
    if removed:
        log.warning("worker.proxy_environment_removed", names=removed,
                    hint="the proxy applies only inside tasks: set STOCKQ_HTTP_PROXY")
    warehouse = open_warehouse(settings, embedded_allowed=False)  # refuses chdb:// first
    become_subreaper()  # orphans of killed tasks' trees come to the pool (app/worker/tree.py)
    client = create_client(settings)  # the pool's connections: the ping's is the first
    try:
        await wait_for_redis(settings, wait=wait, client=client)
        async with TaskQueue(client, settings) as queue:
            return await Supervisor(queue, settings, options, warehouse=warehouse,
                                    worker_id=worker_id,
                                    forks=ForkServer(*forks) if forks else None).run()
    finally:
        await client.aclose()
        if warehouse is not None:
            warehouse.close()
