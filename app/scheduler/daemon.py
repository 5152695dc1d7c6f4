"""``stockq scheduler``: APScheduler fires the jobs; a maintenance loop keeps the rest.

The process holds one Redis client.  APScheduler 3's ``AsyncIOScheduler`` (time zone
``STOCKQ_TIMEZONE``, default Asia/Shanghai) calls :meth:`ScheduleService.fire_due` at
each job's fire time; everything else runs in one loop driven by ``clock``:

* heartbeat in ``stock:scheduler:{id}`` (shown by ``/health``), every 5 s;
* maintenance shared with the worker pools, all idempotent: promotion of due retries,
  lease reaping, retention cleanup;
* the catch-up sweep every minute, and at once when Redis comes back after an outage;
* the schedule edits (:mod:`app.scheduler.overrides`), every few seconds: when their
  version changed, the jobs are rebuilt and rescheduled, no restart needed;
* the TuShare trading calendar refresh (daily; the offline calendar otherwise).

The scheduler only enqueues; it never runs a plugin.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from app.audit import FlusherHandle
from app.errors import RedisUnavailable
from app.logs import get_logger
from app.queue import TaskQueue, new_id
from app.redis_client import create_client, ping
from app.scheduler.calendar import TradingCalendar, tushare_fetch
from app.scheduler.jobs import ScheduleJob, build_jobs
from app.scheduler.service import ScheduleService
from app.settings import Settings, scrub_proxy_environment
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.warehouse import Warehouse, open_warehouse

log = get_logger("stockq.scheduler")

TICK_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
MAINTENANCE_SECONDS = 5.0
CLEANUP_SECONDS = 60.0
SWEEP_SECONDS = 60.0
CALENDAR_CHECK_SECONDS = 3600.0
SETTINGS_CHECK_SECONDS = 5.0


def scheduler_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{new_id()[:4]}"


class SchedulerDaemon:
    def __init__(self, settings: Settings, registry: PluginRegistry, *,
                 clock: Callable[[], float] = time.time,
                 client: aioredis.Redis | None = None,
                 warehouse: Warehouse | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.id = scheduler_id()
        for job in build_jobs(settings, registry):  # an unknown dependency or a cycle
            registry.resolve(job.plugins)            # stops us at start-up
        self._own_client = client is None
        self.client = client or create_client(settings)
        self.queue = TaskQueue(self.client, settings, clock=clock)
        fetch = tushare_fetch(settings) if settings.tushare_token else None
        self.calendar = TradingCalendar(self.client, settings, fetch=fetch, clock=clock)
        self.service = ScheduleService(self.queue, registry, self.calendar,
                                       build_jobs(settings, registry),
                                       scheduler_id=self.id, clock=clock)
        self.warehouse = warehouse
        self._flusher: FlusherHandle | None = None
        self._aps: AsyncIOScheduler | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._redis_ok = True
        self._due: dict[str, float] = {}
        self.started_at = ""

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Register the jobs, catch up, then start firing.  Raises RedisUnavailable
        when Redis does not answer (fail fast at start-up)."""
        await ping(self.client, self.settings)
        self.started_at = datetime.now(UTC).isoformat()
        await self.service.refresh()
        await self.service.register()
        await self._beat()
        await self._refresh_calendar()
        await self._sweep()
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._aps = AsyncIOScheduler(
            timezone=ZoneInfo(self.settings.timezone), event_loop=asyncio.get_running_loop(),
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(self.settings.schedule_grace_seconds)})
        self._add_jobs()
        self._aps.start()
        now = self.clock()
        self._due = {"beat": now + HEARTBEAT_SECONDS, "maintain": now,
                     "cleanup": now + CLEANUP_SECONDS, "sweep": now + SWEEP_SECONDS,
                     "calendar": now + CALENDAR_CHECK_SECONDS,
                     "settings": now + SETTINGS_CHECK_SECONDS}
        self._loop_task = asyncio.create_task(self._loop())
        if self.warehouse is not None:
            self._flusher = FlusherHandle(self.queue, self.warehouse)
        log.info("scheduler.started", scheduler=self.id, timezone=self.settings.timezone,
                 jobs=[{"name": j.name, "trigger": j.expression, "plugins": list(j.plugins)}
                       for j in self.jobs])

    @property
    def jobs(self) -> list[ScheduleJob]:
        return self.service.jobs

    def _add_jobs(self) -> None:
        assert self._aps is not None
        for job in self.jobs:
            self._aps.add_job(self._on_time, job.trigger, args=[job], id=job.name,
                              name=job.name, replace_existing=True)

    async def _reload(self) -> None:
        """Rebuild and reschedule the jobs when the schedule edits changed."""
        if not await self.service.refresh():
            return
        await self.service.register()
        if self._aps is not None:
            self._aps.remove_all_jobs()
            self._add_jobs()

    @property
    def running(self) -> bool:
        return self._aps is not None and self._aps.running

    def pause(self) -> None:
        """Stop firing jobs (the first step of a shutdown); maintenance goes on."""
        if self._aps is not None and self._aps.running:
            self._aps.pause()
            log.info("scheduler.paused", scheduler=self.id)

    async def stop(self) -> None:
        if self._aps is not None and self._aps.running:
            self._aps.shutdown(wait=False)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._flusher is not None:
            await self._flusher.stop()
        try:
            await self.queue.remove_worker(self.id, scheduler=True)
        except RedisUnavailable:
            pass
        await self.queue.aclose()
        if self._own_client:
            await self.client.aclose()
        log.info("scheduler.stopped", scheduler=self.id)

    async def run(self) -> int:
        """Standalone: until SIGTERM/SIGINT, then stop (exit 0)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()
        return 0

    # ------------------------------------------------------------ work
    async def _on_time(self, job: ScheduleJob) -> None:
        try:
            await self.service.fire_due(job)
        except RedisUnavailable as exc:
            self._lost(exc)
        except Exception:  # a bug must not kill APScheduler's job
            log.exception("schedule.failed", job=job.name, scheduler=self.id)

    def _lost(self, exc: Exception) -> None:
        if self._redis_ok:
            log.warning("scheduler.redis_lost", scheduler=self.id, error=str(exc),
                        hint="slots that pass meanwhile are caught up when Redis is back")
        self._redis_ok = False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self._tick()
            except RedisUnavailable as exc:
                self._lost(exc)
            except Exception:  # keep the loop alive; the next tick tries again
                log.exception("scheduler.maintenance_failed", scheduler=self.id)

    async def _tick(self) -> None:
        if not self._redis_ok:
            await ping(self.client, self.settings)
            self._redis_ok = True
            log.info("scheduler.redis_back", scheduler=self.id)
            await self._beat()
            await self._sweep()
        now = self.clock()
        for name, interval, action in (
            ("beat", HEARTBEAT_SECONDS, self._beat),
            ("maintain", MAINTENANCE_SECONDS, self._maintain),
            ("cleanup", CLEANUP_SECONDS, self.queue.cleanup),
            ("sweep", SWEEP_SECONDS, self._sweep),
            ("calendar", CALENDAR_CHECK_SECONDS, self._refresh_calendar),
            ("settings", SETTINGS_CHECK_SECONDS, self._reload),
        ):
            if now >= self._due[name]:
                self._due[name] = now + interval
                await action()

    async def _beat(self) -> None:
        await self.queue.heartbeat(self.id, {
            "host": socket.gethostname(), "pid": os.getpid(), "started_at": self.started_at,
            "jobs": len(self.jobs), "timezone": self.settings.timezone,
        }, ttl=HEARTBEAT_SECONDS * 3, scheduler=True)

    async def _maintain(self) -> None:
        await self.queue.promote()
        await self.queue.reap()

    async def _sweep(self) -> None:
        await self.service.sweep()

    async def _refresh_calendar(self) -> None:
        await self.calendar.refresh()


async def run_scheduler(settings: Settings, registry: PluginRegistry) -> int:
    """``stockq scheduler``."""
    removed = scrub_proxy_environment()
    if removed:
        log.warning("scheduler.proxy_environment_removed", names=removed,
                    hint="the proxy applies only to TuShare: set STOCKQ_HTTP_PROXY")
    warehouse = open_warehouse(settings, embedded_allowed=False)  # refuses chdb://
    if warehouse is None:
        log.warning("audit.no_clickhouse", hint="no STOCKQ_CLICKHOUSE_URL: this scheduler "
                    "does not flush the audit outbox (stockq run or stockq audit-flush can)")
    try:
        return await SchedulerDaemon(settings, registry, warehouse=warehouse).run()
    finally:
        if warehouse is not None:
            warehouse.close()
