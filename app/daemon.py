"""Long-running entry points: the sidecar alone, and ``stockq run`` (all in one)."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from app.api.app import create_app
from app.errors import ConfigError
from app.logs import get_logger
from app.settings import Settings, scrub_proxy_environment
from app.worker.main import run_worker, wait_for_redis
from app.worker.supervisor import PoolOptions

log = get_logger("stockq.daemon")


async def start_api(settings: Settings, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"the sidecar cannot listen on {host}:{port}: {exc.strerror or exc}"
                          " (set --port or STOCKQ_API_PORT)") from None
    log.info("api.started", host=host, port=port, auth=bool(settings.api_token))
    return runner


async def serve_api(settings: Settings, host: str, port: int) -> int:
    """``stockq api``: serve until SIGTERM/SIGINT, then stop cleanly (exit 0)."""
    scrub_proxy_environment()
    runner = await start_api(settings, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("api.stopped")
    return 0


async def run_all(settings: Settings, options: PoolOptions, *, api: bool, host: str,
                  port: int) -> int:
    """``stockq run``: the sidecar and one worker pool in this process; the pool's
    signal handling stops both (SIGTERM drains the pool, then the sidecar closes)."""
    await wait_for_redis(settings, wait=False)  # fail fast, before binding anything
    runner = await start_api(settings, host, port) if api else None
    try:
        return await run_worker(settings, options, wait=False)
    finally:
        if runner is not None:
            await runner.cleanup()
            log.info("api.stopped")
