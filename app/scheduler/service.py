"""Firing schedule slots exactly once, catching up what was missed.

A *slot* is one fire time of a job's trigger.  Its outcome is written to Redis (the
``record_fire`` script: a marker per slot, the job's last fire, a short history), so
whichever scheduler process reaches a slot first settles it and the others see the
marker.  Exactly once, step by step:

1. a slot with a marker is done (``schedule.skipped``, reason ``already settled``);
2. the firing process takes ``stock:schedule:{job}:lock:{ts}`` with ``SET NX EX``; a
   process that cannot logs ``schedule.skipped`` (reason ``locked by <scheduler>``);
3. the execution gets an id derived from (key prefix, job, slot), so even a fire
   repeated after a crash between creating the execution and writing the marker finds
   the execution already there (``Conflict``) instead of creating a second one;
4. the outcome is recorded: ``fired`` (with the execution id), ``skipped`` (a
   non-trading day, or no plugin to run), or ``failed``.

Catch-up does not rely on APScheduler's in-memory misfire handling: :meth:`sweep` runs
at start-up, after Redis comes back and every minute, and fires each unsettled slot of
the last ``catch_up_window`` (default 24 h) once, with trigger ``catch_up``; older
unsettled slots are recorded as ``missed`` and not fired.  A slot before the job was
first seen (``since``, written on the first start, and again when the job's trigger
changes) is never caught up, so installing stockq in the evening does not fire that
day's 18:00 sync, and moving the daily sync to 09:00 at noon does not fire a 09:00 run.

Schedule edits (:mod:`app.scheduler.overrides`) apply to every slot settled after
:meth:`ScheduleService.refresh` read them: with the schedule disabled a slot is settled
``skipped``; with ``skip_non_trading_days`` off it fires on a closed day too (for the
latest trading day); scheduled executions add optional dependencies on request and run
the plugins marked ``full_scan_enabled`` as ``full`` tasks.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from app.errors import Conflict, NothingToRun, RedisUnavailable, StockqError
from app.executions import BatchTask, create_execution
from app.logs import get_logger
from app.queue import TaskQueue, new_id
from app.redis_client import redis_errors
from app.scheduler import overrides as schedule_edits
from app.scheduler.calendar import TradingCalendar
from app.scheduler.jobs import ScheduleJob, build_jobs, find_job
from app.scheduler.overrides import ScheduleOverrides
from app.scheduler.triggers import next_fire, slots_between
from app.submission import build_spec, plan_execution
from plugins_bridge.registry import PluginRegistry

log = get_logger("stockq.scheduler")

LOCK_SECONDS = 300  # a firing process holds the slot this long at most
HISTORY_KEPT = 50
MARKER_EXTRA_SECONDS = 7 * 86400  # markers outlive the catch-up window by this much
MAX_SLOTS_PER_SWEEP = 1000
_ID_NAMESPACE = uuid.UUID("5d0f5b8e-6a39-4c8e-9b3a-2f4f5e6b7c81")


@dataclass(frozen=True, slots=True)
class Fire:
    """What happened to one slot (or one manual run)."""

    job: str
    slot_at: str  # ISO 8601 in the job's time zone
    trigger: str  # scheduled | catch_up | manual
    outcome: str  # fired | skipped | missed | failed | already
    reason: str = ""
    execution_id: str = ""
    trade_date: str = ""
    tasks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScheduleService:
    def __init__(self, queue: TaskQueue, registry: PluginRegistry,
                 calendar: TradingCalendar, jobs: list[ScheduleJob], *,
                 scheduler_id: str = "", clock: Callable[[], float] = time.time,
                 overrides: ScheduleOverrides | None = None) -> None:
        self.queue = queue
        self.settings = queue.settings
        self.keys = queue.keys
        self.registry = registry
        self.calendar = calendar
        self.jobs = jobs
        self.scheduler_id = scheduler_id or f"api-{new_id()[:8]}"
        self.clock = clock
        self.overrides = overrides or ScheduleOverrides()
        self._read_edits = overrides is not None

    @property
    def _redis(self) -> Any:
        return self.queue.client

    def _local(self, job: ScheduleJob, epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, ZoneInfo(job.timezone))

    # ------------------------------------------------------------ start-up
    async def register(self) -> None:
        """Write each job's ``since`` (first time seen) if it has none, and its trigger;
        a job whose trigger is not the one written starts anew (``since`` now): the
        slots of a trigger it did not have are never caught up."""
        now = f"{self.clock():.3f}"
        with redis_errors(self.settings):
            async with self._redis.pipeline(transaction=False) as pipe:
                for job in self.jobs:
                    pipe.hget(self.keys.schedule(job.name), "expression")
                known = await pipe.execute()
            async with self._redis.pipeline(transaction=False) as pipe:
                for job, expression in zip(self.jobs, known, strict=True):
                    key = self.keys.schedule(job.name)
                    if expression and expression != job.expression:
                        pipe.hset(key, mapping={"since": now, "missed_until": now})
                        log.info("schedule.trigger_changed", job=job.name,
                                 trigger=job.expression, was=expression,
                                 scheduler=self.scheduler_id)
                    pipe.hsetnx(key, "since", now)
                    pipe.hsetnx(key, "missed_until", now)
                    pipe.hset(key, "expression", job.expression)
                await pipe.execute()

    async def refresh(self) -> bool:
        """Read the schedule edits; when they changed since the last read (or were never
        read), rebuild the jobs.  True when the jobs were rebuilt (a scheduler then
        registers them; the sidecar and the CLI only read them)."""
        version = await schedule_edits.version(self.queue)
        if self._read_edits and version == self.overrides.version:
            return False
        edits = await schedule_edits.load(self.queue)
        jobs = build_jobs(self.settings, self.registry, edits)
        for job in jobs:  # an unknown dependency or a cycle raises before any change
            self.registry.resolve(job.plugins)
        first = not self._read_edits
        self.overrides, self.jobs, self._read_edits = edits, jobs, True
        if not first or edits.version:
            log.info("schedule.reloaded", version=edits.version, enabled=edits.enabled,
                     jobs=[{"name": j.name, "trigger": j.expression, "plugins": list(j.plugins)}
                           for j in jobs], scheduler=self.scheduler_id)
        return True

    # ------------------------------------------------------------ firing
    async def fire_due(self, job: ScheduleJob) -> list[Fire]:
        """APScheduler's callback: fire the job's latest slot of the last grace period
        (an earlier one left unsettled is the sweep's, as a catch-up)."""
        now = self.clock()
        grace = self.settings.schedule_grace_seconds
        slots = list(slots_between(job.trigger, self._local(job, now - grace),
                                   self._local(job, now), limit=10_000))
        return [await self.fire(job, slots[-1], "scheduled")] if slots else []

    async def sweep(self) -> list[Fire]:
        """Record old unsettled slots as missed; fire those of the catch-up window."""
        now = self.clock()
        fires: list[Fire] = []
        for job in self.jobs:
            fires += await self._sweep_job(job, now)
        return fires

    async def _sweep_job(self, job: ScheduleJob, now: float) -> list[Fire]:
        with redis_errors(self.settings):
            state = await self._redis.hgetall(self.keys.schedule(job.name))
        since = float(state.get("since") or now)
        missed_until = max(since, float(state.get("missed_until") or since))
        window_start = max(since, now - self.settings.catch_up_window_seconds)
        settle_before = now - self.settings.schedule_grace_seconds
        fires: list[Fire] = []
        if window_start > missed_until:
            for slot in slots_between(job.trigger, self._local(job, missed_until),
                                      self._local(job, min(window_start, settle_before)),
                                      limit=MAX_SLOTS_PER_SWEEP):
                if slot.timestamp() >= window_start or await self._settled(job, slot):
                    continue
                missed = Fire(job.name, slot.isoformat(), "catch_up", "missed",
                              "older than the catch-up window "
                              f"({self.settings.catch_up_window_seconds / 3600:g} h)")
                if await self._record(job, slot, missed, mode="first"):
                    fires.append(missed)
            with redis_errors(self.settings):
                await self._redis.hset(self.keys.schedule(job.name), "missed_until",
                                       f"{window_start:.3f}")
        for slot in slots_between(job.trigger, self._local(job, window_start - 1e-6),
                                  self._local(job, settle_before), limit=MAX_SLOTS_PER_SWEEP):
            if slot.timestamp() >= since and not await self._settled(job, slot):
                fires.append(await self.fire(job, slot, "catch_up"))
        for fire in fires:
            if fire.outcome == "missed":
                log.warning("schedule.missed", job=job.name, slot=fire.slot_at,
                            reason=fire.reason)
        return fires

    async def _settled(self, job: ScheduleJob, slot: datetime) -> bool:
        with redis_errors(self.settings):
            return bool(await self._redis.exists(
                self.keys.schedule_slot(job.name, int(slot.timestamp()))))

    async def _lock(self, job: ScheduleJob, ts: int) -> str:
        """'' when this process may fire the slot, else the id of the one that does."""
        key = self.keys.schedule_lock(job.name, ts)
        with redis_errors(self.settings):
            if await self._redis.set(key, self.scheduler_id, nx=True, ex=LOCK_SECONDS):
                return ""
            holder = await self._redis.get(key) or ""
        return "" if holder == self.scheduler_id else str(holder)

    async def fire(self, job: ScheduleJob, slot: datetime, trigger: str) -> Fire:
        """Settle one slot (see the module docstring)."""
        ts = int(slot.timestamp())
        base = Fire(job.name, slot.isoformat(), trigger, "already", "already settled")
        if await self._settled(job, slot):
            log.info("schedule.skipped", job=job.name, slot=base.slot_at, reason=base.reason,
                     scheduler=self.scheduler_id)
            return base
        holder = await self._lock(job, ts)
        if holder:
            reason = f"locked by scheduler {holder}"
            log.info("schedule.skipped", job=job.name, slot=base.slot_at, reason=reason,
                     scheduler=self.scheduler_id)
            return Fire(job.name, base.slot_at, trigger, "already", reason)
        day = await self.calendar.day(slot.date())
        reason = ""
        if not self.overrides.enabled:
            reason = "the schedule is disabled (schedule settings: enabled false)"
        elif not day.trading and self.overrides.skip_non_trading_days:
            reason = f"not a trading day: {day.reason} ({day.source} calendar)"
        if reason:
            fire = Fire(job.name, base.slot_at, trigger, "skipped", reason,
                        trade_date=day.day.strftime("%Y%m%d"))
            log.info("schedule.skipped", job=job.name, slot=fire.slot_at, reason=fire.reason,
                     trigger=trigger, scheduler=self.scheduler_id)
            await self._record(job, slot, fire)
            return fire
        # the slot's day when its data is out by then (the default 18:00 slot), else the
        # latest trading day before it whose data is (a slot before STOCKQ_DATA_READY_TIME)
        published = self.settings.data_day(slot.timestamp())
        trade_day = day.day if day.trading and day.day <= published else \
            await self.calendar.latest_trading_day(min(slot.date(), published))
        eid = str(uuid.uuid5(_ID_NAMESPACE, f"{self.settings.key_prefix}|{job.name}|{ts}"))
        fire = await self._enqueue(job, slot, trigger, trade_day.strftime("%Y%m%d"), eid)
        await self._record(job, slot, fire)
        return fire

    async def run_now(self, name: str) -> Fire:
        """A manual run: the job's plugins for the latest trading day whose data is
        published (today after STOCKQ_DATA_READY_TIME, 17:00, if it is a trading day;
        otherwise the trading day before), now (also while the schedule is disabled: the
        operator asked for it)."""
        await self.refresh()
        job = find_job(self.jobs, name)
        now = self._local(job, self.clock())
        day = await self.calendar.latest_trading_day(self.settings.data_day(self.clock()))
        fire = await self._enqueue(job, now, "manual", day.strftime("%Y%m%d"), new_id())
        await self._record(job, now, fire, mode="manual")
        if fire.outcome == "failed":
            raise StockqError(fire.reason)
        if fire.outcome != "fired":
            raise NothingToRun(f"schedule {name!r}: {fire.reason}")
        return fire

    async def _enqueue(self, job: ScheduleJob, slot: datetime, trigger: str,
                       trade_date: str, execution_id: str) -> Fire:
        base = Fire(job.name, slot.isoformat(), trigger, "fired", trade_date=trade_date)
        if not job.plugins:
            fire = Fire(**{**base.to_dict(), "outcome": "skipped",
                           "reason": "no plugin is scheduled for this job"})
            log.info("schedule.skipped", job=job.name, slot=fire.slot_at, reason=fire.reason,
                     trigger=trigger, scheduler=self.scheduler_id)
            return fire
        try:
            ordered, tasks = plan_execution(
                self.registry, self.settings, job.plugins, trigger=trigger,
                include_optional=self.overrides.include_optional,
                task_type="incremental", trade_dates=[trade_date])
            tasks = [self._edited(name, task, trigger, trade_date)
                     for name, task in zip(ordered, tasks, strict=True)]
            eid, ids = await create_execution(
                self.queue, tasks, trigger_type=trigger, group_name=job.name,
                date_range=f"{trade_date}-{trade_date}", execution_id=execution_id)
        except Conflict:
            log.info("schedule.skipped", job=job.name, slot=base.slot_at,
                     reason="execution already created", execution_id=execution_id,
                     scheduler=self.scheduler_id)
            return Fire(**{**base.to_dict(), "execution_id": execution_id})
        except RedisUnavailable:
            raise
        except StockqError as exc:
            log.error("schedule.failed", job=job.name, slot=base.slot_at, trigger=trigger,
                      error=str(exc), scheduler=self.scheduler_id)
            return Fire(**{**base.to_dict(), "outcome": "failed", "reason": str(exc)})
        log.info("schedule.fired", job=job.name, slot=base.slot_at, trigger=trigger,
                 execution_id=eid, trade_date=trade_date, plugins=ordered, tasks=len(ids),
                 scheduler=self.scheduler_id)
        return Fire(**{**base.to_dict(), "execution_id": eid, "tasks": len(ids)})

    def _edited(self, name: str, task: BatchTask, trigger: str, trade_date: str) -> BatchTask:
        """A scheduled task as the plugin's edits want it: a full scan (no trade date)
        instead of an incremental run, its default data source."""
        edit = self.overrides.plugin(name)
        if not edit.full_scan_enabled and not edit.data_source:
            return task
        fields: dict[str, Any] = {"task_type": "full"} if edit.full_scan_enabled else {
            "task_type": "incremental", "trade_dates": [trade_date]}
        if edit.data_source:
            fields["data_source"] = edit.data_source
        return BatchTask(build_spec(self.registry, self.settings, name, trigger=trigger,
                                    **fields), task.depends_on)

    async def _record(self, job: ScheduleJob, slot: datetime, fire: Fire, *,
                      mode: str = "final") -> bool:
        """Write the outcome (see record_fire.lua for ``mode``); False when a ``first``
        record found the slot settled already."""
        record = {**fire.to_dict(), "fired_at": self._local(job, self.clock()).isoformat(),
                  "scheduler": self.scheduler_id}
        ttl = int(self.settings.catch_up_window_seconds + MARKER_EXTRA_SECONDS)
        done = await self.queue.run("record_fire", [
            self.keys.schedule(job.name), self.keys.schedule_history(job.name),
            self.keys.schedule_slot(job.name, int(slot.timestamp())),
        ], [int(slot.timestamp()), self.queue.redact(json.dumps(record, ensure_ascii=False)),
            ttl, HISTORY_KEPT, mode])
        return int(done) >= 0

    # ------------------------------------------------------------ visibility
    async def describe(self) -> list[dict[str, Any]]:
        await self.refresh()
        now = self.clock()
        with redis_errors(self.settings):
            async with self._redis.pipeline(transaction=False) as pipe:
                for job in self.jobs:
                    pipe.hgetall(self.keys.schedule(job.name))
                states = await pipe.execute()
        out = []
        for job, state in zip(self.jobs, states, strict=True):
            nxt = next_fire(job.trigger, self._local(job, now))
            last = None
            if state.get("last_fired_at"):
                last = {"slot_at": state.get("last_slot_at") or None,
                        "fired_at": state.get("last_fired_at"),
                        "trigger": state.get("last_trigger") or None,
                        "outcome": state.get("last_outcome") or None,
                        "reason": state.get("last_reason") or None,
                        "execution_id": state.get("last_execution_id") or None}
            out.append({
                "name": job.name, "trigger": job.expression, "timezone": job.timezone,
                "description": job.description, "plugins": list(job.plugins),
                "enabled": self.overrides.enabled,
                "next_run_at": nxt.isoformat() if nxt else None, "last_fire": last,
            })
        return out

    async def history(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        job = find_job(self.jobs, name)
        with redis_errors(self.settings):
            raw = await self._redis.lrange(self.keys.schedule_history(job.name), 0, limit - 1)
        return [json.loads(item) for item in raw]


def schedule_service(queue: TaskQueue, registry: PluginRegistry) -> ScheduleService:
    """The service as the sidecar and the CLI use it: describe jobs, run one now (the
    calendar is read from the Redis cache the scheduler keeps, else offline)."""
    calendar = TradingCalendar(queue.client, queue.settings, clock=queue.clock)
    return ScheduleService(queue, registry, calendar, build_jobs(queue.settings, registry),
                           clock=queue.clock)
