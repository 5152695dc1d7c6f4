"""Long-running entry points: the sidecar alone, and ``stockq run`` (all in one)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid

from aiohttp import web

from app.api.app import QUEUE, SETTINGS, create_app
from app.api.protocol import SidecarRunner
from app.api.security import BIND_HOST, check_exposure, exposed
from app.audit import FlusherHandle
from app.errors import ConfigError, StockqError
from app.logs import get_logger
from app.queue import TaskQueue, iso_time
from app.redis_client import create_client
from app.scheduler.daemon import SchedulerDaemon
from app.settings import Settings, scrub_proxy_environment
from app.worker.main import wait_for_redis
from app.worker.procs import become_subreaper
from app.worker.supervisor import PoolOptions, Supervisor
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.warehouse import Warehouse, open_warehouse

log = get_logger("stockq.daemon")


async def start_api(settings: Settings, host: str, port: int, *,
                    registry: PluginRegistry | None = None,
                    warehouse: Warehouse | None = None,
                    insecure_no_auth: bool = False) -> web.AppRunner:
    """Serve the sidecar on ``host:port``.  Beyond loopback without a token only with
    ``insecure_no_auth`` (ConfigError otherwise, before anything is bound)."""
    check_exposure(host, settings.api_token, insecure_no_auth=insecure_no_auth)
    app = create_app(settings, registry=registry, warehouse=warehouse)
    app[BIND_HOST] = host
    app[API_URL] = f"http://{host}:{port}"
    app.on_startup.append(_start_heartbeat)
    app.on_cleanup.insert(0, _stop_heartbeat)  # before the queue closes
    runner = SidecarRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"the sidecar cannot listen on {host}:{port}: {exc.strerror or exc}"
                          " (set --port or STOCKQ_API_PORT)") from None
    log.info("api.started", host=host, port=port, auth=bool(settings.api_token))
    if exposed(host, settings.api_token):
        log.warning("api.insecure_no_auth", host=host, port=port,
                    hint="anyone who reaches this port can submit, cancel and retry tasks; "
                         "set STOCKQ_API_TOKEN or bind 127.0.0.1")
    return runner


API_URL = web.AppKey("api_url", str)
HEARTBEAT = web.AppKey("api_heartbeat", asyncio.Task)
HEARTBEAT_SECONDS = 5.0


async def _beat(app: web.Application, api_id: str, started: str) -> None:
    """The sidecar's heartbeat (app/liveness.py: role api), every 5 s."""
    queue = app.get(QUEUE)
    if queue is None:
        return
    info = {"host": socket.gethostname(), "pid": os.getpid(), "url": app[API_URL],
            "started_at": started, "demo": "1" if app[SETTINGS].demo else ""}
    while True:
        try:
            await queue.heartbeat(api_id, info, ttl=HEARTBEAT_SECONDS * 3, role="api")
        except StockqError as exc:
            log.warning("api.heartbeat_failed", error=exc.message)
        await asyncio.sleep(HEARTBEAT_SECONDS)


async def _start_heartbeat(app: web.Application) -> None:
    api_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    app[HEARTBEAT] = asyncio.create_task(_beat(app, api_id, iso_time(time.time())),
                                         name=api_id)


async def _stop_heartbeat(app: web.Application) -> None:
    task = app.get(HEARTBEAT)
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    queue = app.get(QUEUE)
    if queue is not None:
        try:
            await queue.remove_worker(task.get_name(), role="api")
        except StockqError:
            pass


async def serve_api(settings: Settings, host: str, port: int, *,
                    insecure_no_auth: bool = False) -> int:
    """``stockq api``: serve until SIGTERM/SIGINT, then stop cleanly (exit 0).  It opens
    a ClickHouse server for ``/api/v1/query`` when one is configured (never the
    embedded engine, which belongs to ``stockq run``)."""
    scrub_proxy_environment()
    warehouse = open_warehouse(settings, embedded_allowed=False)
    try:
        runner = await start_api(settings, host, port, warehouse=warehouse,
                                 insecure_no_auth=insecure_no_auth)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            log.info("api.stopped")
    finally:
        if warehouse is not None:
            warehouse.close()
    return 0


async def run_all(settings: Settings, options: PoolOptions, *, api: bool, scheduler: bool,
                  host: str, port: int, insecure_no_auth: bool = False) -> int:
    """``stockq run``: the sidecar, the scheduler and one worker pool in this process.

    One signal path: the first SIGTERM/SIGINT stops the scheduler from firing and drains
    the pool (running tasks get the shutdown grace); then the sidecar closes and the
    process exits 0.  A second signal stops the pool at once."""
    removed = scrub_proxy_environment()
    if removed:
        log.warning("daemon.proxy_environment_removed", names=removed,
                    hint="the proxy applies only inside tasks: set STOCKQ_HTTP_PROXY")
    await wait_for_redis(settings, wait=False)  # fail fast, before binding anything
    registry = PluginRegistry.from_settings(settings)  # a broken plugin stops us here
    become_subreaper()  # orphans of killed tasks' trees come to the pool (app/worker/tree.py)
    parts = ["worker pool", *(["scheduler"] if scheduler else []), *(["sidecar"] if api else [])]
    sched = SchedulerDaemon(settings, registry) if scheduler else None
    warehouse = await asyncio.to_thread(open_warehouse, settings, embedded_allowed=True)
    runner: web.AppRunner | None = None
    flusher: FlusherHandle | None = None
    client = create_client(settings)
    loop = asyncio.get_running_loop()
    try:
        async with TaskQueue(client, settings) as queue:
            supervisor = Supervisor(queue, settings, options, warehouse=warehouse)

            def stop() -> None:
                if sched is not None and sched.running:
                    sched.pause()
                supervisor.request_stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop)
            runner = await start_api(settings, host, port, registry=registry,
                                     warehouse=warehouse,
                                     insecure_no_auth=insecure_no_auth) if api else None
            if sched is not None:
                await sched.start()
            if warehouse is not None:
                flusher = FlusherHandle(queue, warehouse)
            log.info("daemon.started", parts=parts, workers=options.concurrency,
                     api=f"http://{host}:{port}" if api else None)
            try:
                return await supervisor.run(install_signals=False)
            finally:
                if flusher is not None:
                    await flusher.stop()  # the pool's last rows go too
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if sched is not None:
            await sched.stop()
        if runner is not None:
            await runner.cleanup()
            log.info("api.stopped")
        await client.aclose()
        if warehouse is not None:
            await asyncio.to_thread(warehouse.close)
        log.info("daemon.stopped", parts=parts)
