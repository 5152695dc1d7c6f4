"""Schedule settings edited at run time, kept in Redis (``stock:schedule_settings``).

The environment gives the schedule its start (``STOCKQ_DAILY_SYNC_CRON``, the plugins'
``schedule``); an operator may change it while it runs (the HTTP sidecar's
``/api/datamanage/schedule/...`` routes): these edits live in one Redis hash, so every
process (scheduler, sidecar, CLI) sees the same schedule, and they outlive restarts.

| field | meaning | default |
|---|---|---|
| ``version`` | raised by every edit; a scheduler rebuilds its jobs when it changes | 0 |
| ``enabled`` | ``0``: every job's slots are settled ``skipped`` (not caught up later) | on |
| ``daily_sync_cron`` | replaces ``STOCKQ_DAILY_SYNC_CRON`` for ``daily_sync`` | unset |
| ``include_optional`` | scheduled executions add optional dependencies | off |
| ``skip_non_trading_days`` | ``0``: jobs fire on days the calendar says are closed | on |
| ``plugin:{name}:schedule_enabled`` | ``0``: the plugin leaves its job | on |
| ``plugin:{name}:full_scan_enabled`` | ``1``: scheduled runs are ``full`` | off |
| ``plugin:{name}:enabled`` | ``0``: the plugin is disabled (not scheduled either) | on |
| ``plugin:{name}:data_source`` | the data source its tasks get when they name none | |
| ``updated_at`` | when the last edit was made (ISO 8601, UTC) | |

A plugin with ``schedule_enabled`` or ``enabled`` false leaves its job (it still runs
when another scheduled plugin needs it); one with ``full_scan_enabled`` runs as a
``full`` task in scheduled executions; its ``data_source`` goes with its scheduled
tasks (and, in the sidecar, with submissions that name none).  A running scheduler
reads ``version`` every few seconds (:data:`app.scheduler.daemon.SETTINGS_CHECK_SECONDS`)
and rebuilds its jobs when it
changed; an edit that changes a job's trigger does not fire the slots the new trigger
would have had before the edit (see :meth:`ScheduleService.register`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.errors import ConfigError, InvalidInput
from app.queue import TaskQueue
from app.redis_client import redis_errors
from app.scheduler.triggers import cron_trigger, normalise

_ON = "1"
_OFF = "0"
_PLUGIN = "plugin:"


@dataclass(frozen=True, slots=True)
class PluginOverride:
    """A plugin's edits: in the schedule or not, a full scan instead of an incremental
    run, enabled (a disabled plugin is not scheduled either), its default data source."""

    schedule_enabled: bool = True
    full_scan_enabled: bool = False
    enabled: bool = True
    data_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"schedule_enabled": self.schedule_enabled,
                "full_scan_enabled": self.full_scan_enabled, "enabled": self.enabled,
                "data_source": self.data_source or None}


PLUGIN_FLAGS = ("schedule_enabled", "full_scan_enabled", "enabled")


@dataclass(frozen=True, slots=True)
class ScheduleOverrides:
    """The schedule edits in effect (all defaults: none were made)."""

    version: int = 0
    enabled: bool = True
    daily_sync_cron: str = ""  # '' = STOCKQ_DAILY_SYNC_CRON
    include_optional: bool = False
    skip_non_trading_days: bool = True
    plugins: Mapping[str, PluginOverride] = field(default_factory=dict)
    updated_at: str = ""

    def plugin(self, name: str) -> PluginOverride:
        return self.plugins.get(name) or PluginOverride()

    def scheduled(self, name: str) -> bool:
        edit = self.plugin(name)
        return edit.schedule_enabled and edit.enabled

    def full_scan(self, name: str) -> bool:
        return self.plugin(name).full_scan_enabled

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "enabled": self.enabled,
            "daily_sync_cron": self.daily_sync_cron or None,
            "include_optional": self.include_optional,
            "skip_non_trading_days": self.skip_non_trading_days,
            "plugins": {n: p.to_dict() for n, p in sorted(self.plugins.items())},
            "updated_at": self.updated_at or None,
        }

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> ScheduleOverrides:
        edits: dict[str, dict[str, Any]] = {}
        for key, value in raw.items():
            if key.startswith(_PLUGIN):
                plugin, _, flag = key[len(_PLUGIN):].rpartition(":")
                if plugin and flag in PLUGIN_FLAGS:
                    edits.setdefault(plugin, {})[flag] = value != _OFF
                elif plugin and flag == "data_source":
                    edits.setdefault(plugin, {})[flag] = value
        plugins = {name: PluginOverride(**values) for name, values in edits.items()}
        try:
            version = int(raw.get("version") or 0)
        except ValueError:
            version = 0
        return cls(version=version, enabled=raw.get("enabled", _ON) != _OFF,
                   daily_sync_cron=raw.get("daily_sync_cron", ""),
                   include_optional=raw.get("include_optional", _OFF) == _ON,
                   skip_non_trading_days=raw.get("skip_non_trading_days", _ON) != _OFF,
                   plugins=plugins, updated_at=raw.get("updated_at", ""))


async def load(queue: TaskQueue) -> ScheduleOverrides:
    with redis_errors(queue.settings):
        raw = await queue.client.hgetall(queue.keys.schedule_settings)  # type: ignore[misc]
    return ScheduleOverrides.from_hash(raw)


async def version(queue: TaskQueue) -> int:
    with redis_errors(queue.settings):
        raw = await queue.client.hget(queue.keys.schedule_settings, "version")  # type: ignore[misc]
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def _flag(value: bool) -> str:
    return _ON if value else _OFF


async def update(queue: TaskQueue, *, enabled: bool | None = None,
                 daily_sync_cron: str | None = None, include_optional: bool | None = None,
                 skip_non_trading_days: bool | None = None,
                 plugins: Mapping[str, Mapping[str, Any]] | None = None) -> ScheduleOverrides:
    """Apply edits (None: unchanged) in one transaction and raise the version; returns
    the settings now in effect.  ``plugins``: name -> the flags to change
    (``schedule_enabled``, ``full_scan_enabled``, ``enabled``: bool; ``data_source``:
    str, '' for none).  A crontab is checked before anything is written."""
    fields: dict[str, str] = {}
    if daily_sync_cron is not None:
        if daily_sync_cron.strip():
            try:
                expression = normalise(daily_sync_cron)
                cron_trigger(expression, queue.settings.timezone)
            except ConfigError as exc:
                raise InvalidInput(exc.message) from None
            fields["daily_sync_cron"] = expression
        else:
            fields["daily_sync_cron"] = ""
    for name, value in (("enabled", enabled), ("include_optional", include_optional),
                        ("skip_non_trading_days", skip_non_trading_days)):
        if value is not None:
            fields[name] = _flag(value)
    for plugin, changes in (plugins or {}).items():
        if not plugin:
            raise InvalidInput("a plugin name must not be empty")
        for flag, value in changes.items():
            if flag in PLUGIN_FLAGS and isinstance(value, bool):
                fields[f"{_PLUGIN}{plugin}:{flag}"] = _flag(value)
            elif flag == "data_source" and isinstance(value, str):
                fields[f"{_PLUGIN}{plugin}:{flag}"] = value
            else:
                raise InvalidInput(f"plugin edit {flag}={value!r} is not one of "
                                   f"{', '.join(PLUGIN_FLAGS)} (true/false) or data_source")
    key = queue.keys.schedule_settings
    with redis_errors(queue.settings):
        if fields:
            fields["updated_at"] = datetime.fromtimestamp(queue.clock(), UTC).isoformat(
                timespec="milliseconds")
            async with queue.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.hincrby(key, "version", 1)
                await pipe.execute()
        raw = await queue.client.hgetall(key)  # type: ignore[misc]
    return ScheduleOverrides.from_hash(raw)
