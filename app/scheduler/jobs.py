"""The schedule's jobs, built from settings and the plugin registry.

* ``daily_sync`` — the global daily sync (``STOCKQ_DAILY_SYNC_CRON``, default
  ``0 18 * * 1-5``): one execution of every plugin whose ``schedule`` is ``daily``, with
  the plugins they need, in dependency order.
* ``weekly_sync`` / ``monthly_sync`` — the same for plugins whose ``schedule`` is
  ``weekly`` / ``monthly`` (``STOCKQ_WEEKLY_SYNC_CRON``, default ``0 10 * * 6``;
  ``STOCKQ_MONTHLY_SYNC_CRON``, default ``0 10 1 * *``: stock_datasource's weekly and
  monthly jobs); each exists only when some plugin is scheduled so;
* ``plugin:{name}`` — a plugin whose ``schedule`` is its own trigger (``daily 19:30``,
  ``weekly fri 18:30``, ``monthly 1 06:00`` or a crontab expression) gets its own job,
  one execution of that plugin and what it needs.

Every process (scheduler, sidecar, CLI) builds the same list from the same settings,
plugins and schedule edits (:mod:`app.scheduler.overrides`: a plugin taken out of the
schedule, the daily sync's own crontab), so the sidecar can describe and run jobs
without a scheduler in-process.
"""

from __future__ import annotations

from dataclasses import dataclass

from apscheduler.triggers.cron import CronTrigger

from app.errors import ConfigError, ScheduleNotFound
from app.scheduler.overrides import ScheduleOverrides
from app.scheduler.triggers import cron_trigger, normalise
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry

DAILY_SYNC = "daily_sync"
DAILY_WORD = "daily"
WEEKLY_SYNC = "weekly_sync"
MONTHLY_SYNC = "monthly_sync"
#: schedule word -> (job, the Settings field of its trigger, the variable that sets it)
GROUP_JOBS = {
    "weekly": (WEEKLY_SYNC, "weekly_sync_cron", "STOCKQ_WEEKLY_SYNC_CRON"),
    "monthly": (MONTHLY_SYNC, "monthly_sync_cron", "STOCKQ_MONTHLY_SYNC_CRON"),
}


@dataclass(frozen=True, slots=True)
class ScheduleJob:
    name: str
    expression: str  # normalised crontab (5 fields, or 6 with seconds first)
    timezone: str
    plugins: tuple[str, ...]  # the plugins asked for; dependencies are added at fire time
    description: str
    trigger: CronTrigger


def _group_job(word: str, plugins: list[str], settings: Settings) -> ScheduleJob:
    name, field, variable = GROUP_JOBS[word]
    try:
        expression = normalise(getattr(settings, field))
        trigger = cron_trigger(expression, settings.timezone)
    except ConfigError as exc:
        raise ConfigError(f"{variable}: {exc}") from None
    return ScheduleJob(name, expression, settings.timezone, tuple(plugins),
                       f"{word} sync of every plugin scheduled '{word}'", trigger)


def build_jobs(settings: Settings, registry: PluginRegistry,
               overrides: ScheduleOverrides | None = None) -> list[ScheduleJob]:
    edits = overrides or ScheduleOverrides()
    daily: list[str] = []
    grouped: dict[str, list[str]] = {word: [] for word in GROUP_JOBS}
    own: list[ScheduleJob] = []
    for name in registry.names():
        schedule = getattr(registry.get(name), "schedule", None)
        if not schedule or not edits.scheduled(name):
            continue
        if not isinstance(schedule, str):
            raise ConfigError(f"plugin {name!r}: schedule must be a string, got {schedule!r}")
        word = schedule.strip().lower()
        if word == DAILY_WORD:
            daily.append(name)
            continue
        if word in grouped:
            grouped[word].append(name)
            continue
        try:
            expression = normalise(schedule)
            trigger = cron_trigger(expression, settings.timezone)
        except ConfigError as exc:
            raise ConfigError(f"plugin {name!r}: {exc}") from None
        own.append(ScheduleJob(f"plugin:{name}", expression, settings.timezone, (name,),
                               f"sync of {name} ({schedule})", trigger))
    source = "the daily_sync_cron schedule edit" if edits.daily_sync_cron \
        else "STOCKQ_DAILY_SYNC_CRON"
    try:
        expression = normalise(edits.daily_sync_cron or settings.daily_sync_cron)
        trigger = cron_trigger(expression, settings.timezone)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    sync = ScheduleJob(DAILY_SYNC, expression, settings.timezone, tuple(daily),
                       "daily sync of every plugin scheduled 'daily'", trigger)
    groups = [_group_job(word, names, settings) for word, names in grouped.items() if names]
    return [sync, *groups, *own]


def find_job(jobs: list[ScheduleJob], name: str) -> ScheduleJob:
    for job in jobs:
        if job.name == name:
            return job
    raise ScheduleNotFound(name, [j.name for j in jobs])
